"""JWT mode (envoy/envoy-jwt.yaml): identity comes from the verified token, never from headers.

The real sidecar (policy_extproc.server.Sidecar, a RecordingSink beside it) runs in a background
loop behind a real Envoy rendered from envoy-jwt.yaml.tmpl. Tokens are RS256, signed here with
the test key of tests/data/jwt/ (RFC 7515/7518 by hand: no JWT library is a dependency), whose
public half is the inline JWKS of the template. Org "acme" may use gpt-4o-mini; org "globex"
is blocked from every model, so a spoofed org header would show as a changed decision.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.audit.record import AuditRecord
from policy_extproc.audit.sink import RecordingSink
from policy_extproc.mockprovider import MockProvider
from policy_extproc.server import ServerConfig, Sidecar
from tests.e2e.conftest import EnvoyFactory
from tests.envoy_harness import (
    DEFAULT_PORTS,
    JWT_CONFIG,
    JWT_TEMPLATE,
    TEMPLATE,
    BackgroundLoop,
    EnvoyProcess,
    Response,
    http_request,
    render_config,
)

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
KEY = json.loads(
    (Path(__file__).parents[1] / "data" / "jwt" / "test-signing-key.jwk.json").read_text()
)
ISSUER = "https://idp.policy-extproc.test"
AUDIENCE = "llm-gateway"
# What a client might send to pass for someone else; JWT mode removes all of it before ext_proc.
SPOOFED = {
    "x-org-id": "acme",
    "x-team-id": "ml",
    "x-user-id": "ceo@acme.example",
    "x-environment": "production",
    "x-user-roles": "admin",
    "x-policy-provider": "anthropic",
    "x-policy-anything": "1",
}
POLICIES = """\
- policy_name: acme_models
  org: acme
  rules:
    - type: model_access
      models: [gpt-4o-mini]
- policy_name: globex_suspended
  org: globex
  rules:
    - type: model_access
      id: suspended
      deny_models: ["*"]
"""
_JWT_BLOCK = re.compile(r"^[ \t]*# BEGIN jwt\n.*?^[ \t]*# END jwt\n", re.M | re.S)


# -- tokens ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


# RFC 8017 s9.2 (EMSA-PKCS1-v1_5), note 1: the DER DigestInfo prefix for SHA-256.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _rs256(signing_input: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 s3.3) with the test key."""
    n, d = _int(KEY["n"]), _int(KEY["d"])
    size = (n.bit_length() + 7) // 8
    digest = _SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
    return pow(int.from_bytes(encoded, "big"), d, n).to_bytes(size, "big")


def mint(alg: str = "RS256", **claims: Any) -> str:
    """A compact JWS; standard claims default to valid ones, a claim given as None is left out."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"alg": alg, "typ": "JWT", "kid": KEY["kid"]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = _rs256(signing_input.encode()) if alg == "RS256" else b""
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def chat(text: str = "hello", model: str = "gpt-4o-mini") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


# -- the sidecar and Envoy ------------------------------------------------------------------------


@dataclass
class RunningSidecar:
    sidecar: Sidecar
    sink: RecordingSink

    @property
    def port(self) -> int:
        return self.sidecar.port

    def record(self, resp: Response) -> AuditRecord:
        """The request-phase audit record of resp, found by Envoy's x-request-id."""
        request_id = resp.headers["x-request-id"]
        found = [
            r for r in self.sink.records if r.request_id == request_id and r.phase == "request"
        ]
        assert len(found) == 1, f"no single audit record for {request_id}: {found}"
        return found[0]

    def decisions(self, resp: Response) -> list[str]:
        """The decisions of every audit record of resp (none: the sidecar never decided it)."""
        request_id = resp.headers.get("x-request-id")
        return [r.decision for r in self.sink.records if r.request_id == request_id]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    """The real sidecar on 127.0.0.1:0 with the two tenants' policies and a RecordingSink."""
    policy_dir = tmp_path_factory.mktemp("policies")
    (policy_dir / "tenants.yaml").write_text(POLICIES)
    sink = RecordingSink()
    config = ServerConfig(
        policies=(str(policy_dir),), listen="127.0.0.1:0", audit_log=None, grace_s=1.0
    )
    loop = BackgroundLoop()
    running: Sidecar | None = None

    async def start() -> Sidecar:
        nonlocal running
        running = Sidecar(config, sinks=[sink])
        await running.start()
        return running

    try:
        yield RunningSidecar(loop.run(start()), sink)
    finally:
        if running is not None:
            loop.run(running.stop())
        loop.close()


@pytest.fixture(scope="module")
def jwt_envoy(envoy_factory: EnvoyFactory, sidecar: RunningSidecar) -> EnvoyProcess:
    """Envoy in JWT mode in front of the sidecar and the mock providers."""
    return envoy_factory(sidecar.port, template=JWT_TEMPLATE)


# -- the configuration ----------------------------------------------------------------------------


def test_envoy_jwt_yaml_is_the_rendered_template() -> None:
    assert JWT_CONFIG.read_text() == render_config(DEFAULT_PORTS, template=JWT_TEMPLATE), (
        "envoy/envoy-jwt.yaml is out of date: run .venv/bin/python -m tests.envoy_harness render"
    )


def test_jwt_template_is_the_local_template_plus_jwt_blocks() -> None:
    def body(path: Path) -> str:  # from the first line that is not the header comment
        text = path.read_text()
        return text[text.index("\nadmin:\n") :]

    assert _JWT_BLOCK.sub("", body(JWT_TEMPLATE)) == body(TEMPLATE), (
        "envoy-jwt.yaml.tmpl must be envoy.yaml.tmpl plus '# BEGIN jwt' blocks: port the change"
    )


def test_identity_headers_go_before_routing_and_jwt_authn_before_ext_proc() -> None:
    text = JWT_CONFIG.read_text()
    hcm = text.index("envoy.filters.network.http_connection_manager")
    early = text.index("early_header_mutation_extensions:")
    assert hcm < early < text.index("http_filters:")
    assert "request_mutations" not in text  # not the header_mutation HTTP filter: see the header
    filters = re.findall(r"^ {10}- name: (envoy\.filters\.http\.\w+)$", text, re.M)
    assert filters == [
        "envoy.filters.http.health_check",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]


# -- who decides: the token ----------------------------------------------------------------------


def test_token_identity_wins_over_spoofed_headers(
    jwt_envoy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    token = mint(sub="alice@acme.example", org="acme")
    resp = http_request(
        jwt_envoy.url, CHAT, chat(), headers={**bearer(token), **SPOOFED, "x-org-id": "globex"}
    )

    assert resp.status == 200, resp.body
    assert resp.headers["x-policy-decision"] == "allow"
    record = sidecar.record(resp)
    assert (record.org, record.user) == ("acme", "alice@acme.example")
    # The token has no team and no environment: the headers that claimed them never arrived.
    assert record.team is None
    assert record.environment is None


def test_other_tenant_cannot_claim_an_allowed_org(
    jwt_envoy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    token = mint(sub="eve@globex.example", org="globex")
    resp = http_request(jwt_envoy.url, CHAT, chat(), headers={**bearer(token), **SPOOFED})

    assert resp.status == 403, resp.body
    assert resp.json()["decision"] == "block"
    assert resp.json()["policy"] == "globex_suspended"
    record = sidecar.record(resp)
    assert (record.decision, record.org, record.user) == ("block", "globex", "eve@globex.example")
    assert mock_provider.stats()["total"] == 0


def test_provider_never_sees_identity_headers_or_the_token(
    jwt_envoy: EnvoyProcess, mock_providers: dict[str, MockProvider], mock_provider: MockProvider
) -> None:
    resp = http_request(
        jwt_envoy.url, CHAT, chat(), headers={**bearer(mint(org="acme")), **SPOOFED}
    )

    assert resp.status == 200, resp.body
    # x-policy-provider: anthropic was the client's; removed, so the API picks the provider.
    assert resp.headers["x-mock-provider"] == "openai"
    assert mock_providers["anthropic"].stats()["total"] == 0
    received = mock_provider.stats()["last_headers"]
    assert not set(received) & {*SPOOFED, "authorization"}, received


def test_headers_do_decide_in_header_mode(
    envoy_factory: EnvoyFactory, sidecar: RunningSidecar, mock_provider: MockProvider
) -> None:
    # The control: the same sidecar behind envoy.yaml (no jwt_authn) believes the header, so
    # the tests above would fail if JWT mode let it through.
    header_mode = envoy_factory(sidecar.port)
    resp = http_request(header_mode.url, CHAT, chat(), headers={"x-org-id": "globex"})
    assert resp.status == 403
    assert sidecar.record(resp).org == "globex"


# -- no valid token, no request -------------------------------------------------------------------


def _tampered() -> str:
    # acme's claims with a signature made over globex's: the signature no longer matches.
    header, _, signature = mint(org="globex").split(".")
    payload = mint(org="acme").split(".")[1]
    return f"{header}.{payload}.{signature}"


# Built when the test runs, not at collection: a token minted then could expire before use.
# Envoy's statuses: 401 for a missing or unverifiable token, 403 for a wrong audience.
NOT_VALID: dict[str, tuple[int, Callable[[], dict[str, str]]]] = {
    "no token": (401, dict),
    "headers alone": (401, lambda: {"x-org-id": "acme"}),
    "malformed": (401, lambda: bearer("not-a-jwt")),
    "payload changed after signing": (401, lambda: bearer(_tampered())),
    "alg none": (401, lambda: bearer(mint("none", org="acme"))),
    "expired": (401, lambda: bearer(mint(org="acme", exp=int(time.time()) - 3600))),
    "other issuer": (401, lambda: bearer(mint(org="acme", iss="https://evil.example"))),
    "other audience": (403, lambda: bearer(mint(org="acme", aud="another-service"))),
}


@pytest.mark.parametrize("why", NOT_VALID)
def test_without_a_valid_token_envoy_refuses(
    jwt_envoy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider, why: str
) -> None:
    status, headers = NOT_VALID[why]
    resp = http_request(jwt_envoy.url, CHAT, chat(), headers=headers())

    assert resp.status == status, f"{why}: {resp.status} {resp.body!r}"
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_token")
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert "www-authenticate" in resp.headers
    assert sidecar.decisions(resp) == [], "the sidecar decided a request without a valid token"
    assert mock_provider.stats()["total"] == 0


@pytest.mark.parametrize("why", NOT_VALID)
def test_without_a_valid_token_nothing_reaches_the_provider(
    jwt_envoy: EnvoyProcess, sidecar: RunningSidecar, mock_provider: MockProvider, why: str
) -> None:
    # What holds even with the local-reply bug above: no decision, no provider call.
    resp = http_request(jwt_envoy.url, CHAT, chat(), headers=NOT_VALID[why][1]())
    assert resp.status >= 400
    assert "allow" not in sidecar.decisions(resp)
    assert mock_provider.stats()["total"] == 0


def test_health_path_needs_no_token(jwt_envoy: EnvoyProcess, mock_provider: MockProvider) -> None:
    resp = http_request(jwt_envoy.url, "/healthz", method="GET")
    assert resp.status == 200
    assert mock_provider.stats()["total"] == 0

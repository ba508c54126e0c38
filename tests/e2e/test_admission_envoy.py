"""Admission control through a real Envoy: a shed request reaches the client as 503 with
``retry-after`` and the OpenAI-shaped JSON error; a fail-open route goes through to the
provider; Envoy's ``request.time`` attribute (request_attributes in envoy.yaml.tmpl) arrives
and ages the request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policy_extproc.enforce.admission import AdmissionSettings
from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, http_request

POLICY = """
policy_name: acme_base
org: acme
rules:
  - {type: content_filter, id: secrets, keywords: [confidential], action: block}
"""
HEADERS = {"x-org-id": "acme", "x-user-id": "u1"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    settings = AdmissionSettings(max_inflight=1, fail_open_routes=("/v1/embeddings",))
    with running_sidecar(POLICY, tmp_path_factory.mktemp("bounded"), admission=settings) as r:
        yield r


@pytest.fixture(scope="module")
def proxy(envoy_factory, bounded: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(bounded.port)


def hold_the_slot(sidecar: RunningSidecar) -> None:
    """Take the one slot on the sidecar's loop, as a request being decided would."""

    async def take() -> None:
        assert sidecar.sidecar.admission.admit("/held") is None

    sidecar.loop.run(take())


def free_the_slot(sidecar: RunningSidecar) -> None:
    async def give() -> None:
        sidecar.sidecar.admission.release()

    sidecar.loop.run(give())


def test_a_shed_request_reaches_the_client_as_503_with_retry_after(
    proxy: EnvoyProcess, bounded: RunningSidecar, mock_provider: MockProvider
) -> None:
    hold_the_slot(bounded)
    try:
        rid = "shed-e2e-1"
        resp = http_request(
            proxy.url, "/v1/chat/completions", CHAT, headers={**HEADERS, "x-request-id": rid}
        )
        assert resp.status == 503
        assert resp.headers["retry-after"] == "1"
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert body["error"]["code"] == "overloaded"
        assert body["error"]["type"] == "server_error"
        assert body["retry_after"] == 1
        assert mock_provider.stats()["total"] == 0  # nothing reached the provider
        [record] = bounded.records(rid)
        assert (record.decision, record.error_code, record.outcome) == (
            "block",
            "overloaded",
            "shed",
        )
        # A fail-open route goes through unchecked ("confidential" would be blocked).
        emb = {"model": "text-embedding-3-small", "input": "confidential"}
        rid = "shed-e2e-open"
        resp = http_request(
            proxy.url, "/v1/embeddings", emb, headers={**HEADERS, "x-request-id": rid}
        )
        assert resp.status == 200, resp.body
        assert resp.json()["data"]
        assert resp.headers["x-policy-decision"] == "allow"
        [record] = bounded.records(rid)
        assert (record.decision, record.outcome) == ("allow", "shed_fail_open")
    finally:
        free_the_slot(bounded)
    # With the slot free, the same request is decided and answered.
    resp = http_request(proxy.url, "/v1/chat/completions", CHAT, headers=HEADERS)
    assert resp.status == 200
    assert bounded.sidecar.admission.inflight == 0


def test_envoys_request_time_ages_the_request(
    envoy_factory,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Any wait at all is too long: only a request that carries Envoy's request.time is aged
    # on its headers (the fallback, arrival at the sidecar, is 0 then).
    settings = AdmissionSettings(max_inflight=0, max_queue_age_s=1e-9)
    with running_sidecar(POLICY, tmp_path_factory.mktemp("aged"), admission=settings) as aged:
        proxy = envoy_factory(aged.port)
        rid = "aged-e2e-1"
        resp = http_request(
            proxy.url, "/v1/chat/completions", CHAT, headers={**HEADERS, "x-request-id": rid}
        )
        assert resp.status == 503
        assert resp.json()["error"]["code"] == "overloaded"
        assert aged.sidecar.admission.shed == {"inflight": 0, "queue_age": 1}
        [record] = aged.records(rid)
        assert record.outcome == "shed"

"""The guardrails hold against a determined client: the official SDKs through a real Envoy.

Each case is one way around the guardrails that an outsider found in the first version (Unicode
tricks, fields never scanned, text split where the provider joins it, identity and model
spelling, token prompts, duplicate keys). The clients are the official ``openai`` and
``anthropic`` Python SDKs, as a user would run them; the provider is the mock, which echoes the
last user message, so an allowed request shows what the provider received.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from policy_extproc.mockprovider import MockProvider
from tests.e2e.sidecars import RunningSidecar, running_sidecar
from tests.envoy_harness import EnvoyProcess, http_request

POLICY = """
- policy_name: acme_guard
  org: acme
  rules:
    - {type: content_filter, id: secrets, keywords: [confidential], action: block}
    - {type: content_filter, id: codenames, patterns: ["project[ -]aurora"], action: block}
    - {type: model_access, id: models, deny_models: ["o1*"]}
    - {type: pii, id: contacts, entities: [EMAIL], action: mask}
- policy_name: acme_development
  org: acme
  environment: development
  rules:
    - {type: content_filter, id: launch, keywords: [launchcode], action: block}
"""
IDENTITY = {"x-org-id": "acme", "x-user-id": "mallory"}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    with running_sidecar(POLICY, tmp_path_factory.mktemp("bypass")) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(envoy_factory, sidecar: RunningSidecar) -> EnvoyProcess:  # type: ignore[no-untyped-def]
    return envoy_factory(sidecar.port)


def _openai(proxy: EnvoyProcess, headers: dict[str, str] | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers=IDENTITY if headers is None else headers,
    )


def _anthropic(proxy: EnvoyProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url, api_key="test", max_retries=0, default_headers=IDENTITY
    )


def _chat(client: openai.OpenAI, content: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=kwargs.pop("model", "gpt-4o-mini"),
        messages=[{"role": "user", "content": content}],
        **kwargs,
    )


def _error(exc: openai.APIStatusError | anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert exc.response.headers["x-policy-decision"] in ("block", "allow")
    return body  # type: ignore[no-any-return]


# -- Unicode: the text as the model reads it ----------------------------------------------------

UNICODE_TRICKS = {
    "zero-width space": "the conf\u200bidential plan",
    "word joiner": "the confi\u2060dential plan",
    "soft hyphen": "the confiden\u00adtial plan",
    "fullwidth": "the " + "".join(chr(0xFEE0 + ord(c)) for c in "confidential") + " plan",
    "cyrillic look-alike": "the \u0441onfidential plan",
    "combining mark": "the conf\u0301idential plan",
    "non-breaking hyphen in a pattern": "status of project\u2011aurora",
    "ideographic space in a pattern": "status of project\u3000aurora",
}


@pytest.mark.parametrize("text", UNICODE_TRICKS.values(), ids=UNICODE_TRICKS.keys())
def test_unicode_tricks_are_blocked(proxy: EnvoyProcess, mock_provider: MockProvider,
                                    text: str) -> None:  # fmt: skip
    before = mock_provider.stats()["total"]
    with pytest.raises(openai.PermissionDeniedError) as err:
        _chat(_openai(proxy), text)
    body = _error(err.value)
    assert body["decision"] == "block"
    assert body["rule"] in ("secrets", "codenames")
    assert mock_provider.stats()["total"] == before  # the provider never saw it


def test_non_ascii_email_is_masked_exactly(proxy: EnvoyProcess) -> None:
    reply = _chat(_openai(proxy), "write to j\u00f6rg@b\u00fccher.example today")
    echoed = reply.choices[0].message.content
    assert "j\u00f6rg" not in echoed and "b\u00fccher" not in echoed
    assert echoed.endswith("write to [EMAIL] today")


def test_benign_text_in_any_script_reaches_the_provider_unchanged(proxy: EnvoyProcess) -> None:
    text = "Привет, мир! こんにちは 👩‍👩‍👧 café naïve ﬁle ١٢٣"
    reply = _chat(_openai(proxy), text)
    assert reply.choices[0].message.content.endswith(text)


# -- every string the model reads ----------------------------------------------------------------


def test_chat_tool_description_is_scanned(proxy: EnvoyProcess) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "returns the confidential roadmap",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    with pytest.raises(openai.PermissionDeniedError):
        _chat(_openai(proxy), "hello", tools=tools)


def test_chat_text_split_over_parts_is_joined(proxy: EnvoyProcess) -> None:
    parts = [{"type": "text", "text": "the confi"}, {"type": "text", "text": "dential plan"}]
    with pytest.raises(openai.PermissionDeniedError):
        _chat(_openai(proxy), parts)


def test_anthropic_tool_use_input_in_history_is_scanned(proxy: EnvoyProcess) -> None:
    messages = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "lookup",
                    "input": {"query": "the confidential roadmap"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}],
        },
    ]
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(proxy).messages.create(
            model="claude-3-haiku-20240307", max_tokens=64, messages=messages
        )


def test_anthropic_text_blocks_are_joined(proxy: EnvoyProcess) -> None:
    blocks = [{"type": "text", "text": "the confi"}, {"type": "text", "text": "dential plan"}]
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(proxy).messages.create(
            model="claude-3-haiku-20240307",
            max_tokens=64,
            messages=[{"role": "user", "content": blocks}],
        )


def test_anthropic_base64_text_document_is_scanned(proxy: EnvoyProcess) -> None:
    data = base64.b64encode(b"Appendix: the confidential roadmap.").decode()
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "text/plain", "data": data},
    }
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(proxy).messages.create(
            model="claude-3-haiku-20240307",
            max_tokens=64,
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "sum"}]}],
        )


def test_anthropic_search_result_in_tool_result_is_scanned(proxy: EnvoyProcess) -> None:
    result = {
        "type": "search_result",
        "source": "https://intranet.example/doc",
        "title": "Roadmap",
        "content": [{"type": "text", "text": "the confidential roadmap"}],
    }
    messages = [
        {"role": "user", "content": "search"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_2", "name": "search", "input": {"q": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [result]}]},
    ]  # fmt: skip
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(proxy).messages.create(
            model="claude-3-haiku-20240307", max_tokens=64, messages=messages
        )


def test_token_array_prompts_are_refused(proxy: EnvoyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _openai(proxy).completions.create(model="gpt-3.5-turbo-instruct", prompt=[1, 2, 3])
    assert err.value.response.json()["error"]["code"] == "token_prompt_unsupported"
    with pytest.raises(openai.BadRequestError):
        _openai(proxy).embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]])


def test_duplicate_keys_are_refused(proxy: EnvoyProcess, mock_provider: MockProvider) -> None:
    before = mock_provider.stats()["total"]
    body = (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"the confidential plan"}],'
        b'"messages":[{"role":"user","content":"hello"}]}'
    )
    resp = http_request(proxy.url, "/v1/chat/completions", body, headers=IDENTITY)
    assert resp.status == 400
    assert resp.json()["error"]["code"] == "malformed_body"
    assert mock_provider.stats()["total"] == before


# -- identity and model spelling ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["O1-PREVIEW", "openai/o1-preview", " o1-preview"])
def test_model_spelling_does_not_pass_a_deny_list(proxy: EnvoyProcess, model: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        _chat(_openai(proxy), "hello", model=model)
    assert _error(err.value)["rule"] == "models"


def test_identity_is_case_insensitive(proxy: EnvoyProcess) -> None:
    headers = {"x-org-id": "ACME", "x-environment": "Development", "x-user-id": "mallory"}
    with pytest.raises(openai.PermissionDeniedError) as err:
        _chat(_openai(proxy, headers), "the launchcode is 0000")
    assert _error(err.value)["rule"] == "launch"


def test_a_request_without_an_organisation_is_refused(proxy: EnvoyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _chat(_openai(proxy, {"x-user-id": "mallory"}), "hello")
    assert err.value.response.json()["error"]["code"] == "missing_identity"


def test_two_organisations_in_one_header_are_refused(proxy: EnvoyProcess) -> None:
    headers = {"x-org-id": "acme, other", "x-user-id": "mallory"}
    with pytest.raises(openai.BadRequestError) as err:
        _chat(_openai(proxy, headers), "hello")
    assert err.value.response.json()["error"]["code"] == "ambiguous_identity"


def test_every_refusal_is_audited(proxy: EnvoyProcess, sidecar: RunningSidecar) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        _chat(_openai(proxy), "the conf\u200bidential plan")
    request_id = err.value.response.json()["request_id"]
    (record,) = sidecar.records(request_id)
    assert record.decision == "block"
    assert "confidential" not in json.dumps(record.to_dict())

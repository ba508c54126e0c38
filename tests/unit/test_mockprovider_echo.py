"""The mock provider echoes what the model would read of the last user message, documents and
files included, so an end-to-end test can prove what reached the provider."""

from __future__ import annotations

from typing import Any

import pytest

from policy_extproc.mockprovider import apis
from tests.llm_fields import DATA_URL, b64

TEXT = "the provider saw this"


@pytest.mark.parametrize(
    ("handler", "payload"),
    [
        (
            apis.chat_completions,
            {"messages": [{"role": "user", "content": [
                {"type": "file", "file": {"filename": "a.txt", "file_data": DATA_URL + b64(TEXT)}}
            ]}]},
        ),
        (
            apis.responses,
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "filename": "a.txt", "file_data": b64(TEXT)}
            ]}]},
        ),
        (
            apis.messages,
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "text/plain",
                                                "data": b64(TEXT)}}
            ]}]},
        ),
        (
            apis.messages,
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "content", "content": [
                    {"type": "text", "text": TEXT}]}}
            ]}]},
        ),
        (
            apis.messages,
            {"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "search_result", "source": "https://x", "title": "t",
                     "content": [{"type": "text", "text": TEXT}]}]}
            ]}]},
        ),
    ],
)  # fmt: skip
def test_echo_reads_documents_files_and_results(handler: Any, payload: dict[str, Any]) -> None:
    reply = handler(payload)
    assert isinstance(reply, dict)
    text = (
        reply["choices"][0]["message"]["content"]
        if "choices" in reply
        else reply["output"][0]["content"][0]["text"]
        if "output" in reply
        else reply["content"][0]["text"]
    )
    assert text == f"echo: {TEXT}"


def test_binary_files_echo_nothing() -> None:
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}
    reply = apis.chat_completions({"messages": [{"role": "user", "content": [part]}]})
    assert isinstance(reply, dict)
    assert reply["choices"][0]["message"]["content"] == "echo: "


def test_responses_without_input_is_answered() -> None:
    reply = apis.responses({"prompt": {"id": "pmpt_1", "variables": {"x": "y"}}})
    assert isinstance(reply, dict) and reply["status"] == "completed"

"""enforce/exchange.py: the request id is Envoy's x-request-id, or one made once per exchange."""

from __future__ import annotations

from policy_extproc.enforce.exchange import Exchange


def test_envoys_request_id_is_the_exchanges() -> None:
    ex = Exchange(headers={"x-request-id": "envoy-1"}, started_ns=0)
    assert ex.request_id == "envoy-1"
    assert ex.request_id_fallback == ""  # none made


def test_without_one_an_id_is_made_once_and_kept() -> None:
    a = Exchange(headers={}, started_ns=0)
    b = Exchange(headers={"x-request-id": ""}, started_ns=0)
    first = a.request_id
    assert len(first) == 32 and a.request_id == first  # every record of it names the same id
    assert b.request_id not in ("", first)

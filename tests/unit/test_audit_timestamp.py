"""audit/record.py ``utc_timestamp``: the once-a-second cache gives strftime's text exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_extproc.audit.record import timestamp_ns, utc_timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _strftime(epoch_ns: int) -> str:
    return (_EPOCH + timedelta(microseconds=epoch_ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-(10**18), max_value=4 * 10**18), st.integers(0, 3 * 10**9))
def test_a_timestamp_is_strftimes_text(epoch_ns: int, later_ns: int) -> None:
    # Twice in the same second (the cache hit), then across seconds (the cache replaced).
    assert utc_timestamp(epoch_ns) == _strftime(epoch_ns)
    assert utc_timestamp(epoch_ns + later_ns) == _strftime(epoch_ns + later_ns)
    assert utc_timestamp(epoch_ns) == _strftime(epoch_ns)


def test_now_round_trips() -> None:
    before = datetime.now(UTC)
    text = utc_timestamp()
    after = datetime.now(UTC)
    moment = _EPOCH + timedelta(microseconds=timestamp_ns(text) // 1000)
    assert before - timedelta(microseconds=1) <= moment <= after

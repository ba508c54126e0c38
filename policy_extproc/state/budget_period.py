"""Calendar budget periods (day, month) in a configurable time zone.

A budget's counter is named after its period (``2026-11-24``, ``2026-11``), so a new period
starts a new counter and no reset job is needed; the old counter expires on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["day", "month"]

# A counter outlives its period by this much, so a late reconcile (a long stream that ends
# after midnight) still lands on the period that reserved it, and reports can read it.
COUNTER_SLACK_S = 2 * 86400.0


@dataclass(frozen=True, slots=True)
class BudgetPeriod:
    """One calendar period: its label and its bounds in epoch seconds."""

    label: str  # "2026-11-24" for a day, "2026-11" for a month
    start: float
    end: float  # exclusive: the start of the next period

    @property
    def expires_at(self) -> float:
        """When the period's counter may expire (BudgetSpec.expires_at)."""
        return self.end + COUNTER_SLACK_S


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The ZoneInfo for an IANA name (raises ValueError if unknown); cached."""
    if name == "UTC":
        return UTC  # needs no time zone database (slim container images have none)
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        # ZoneInfoNotFoundError is a KeyError; a malformed name is a ValueError.
        raise ValueError(f"unknown time zone {name!r}") from exc


def _midnight(day: date, tz: tzinfo) -> float:
    # On a day whose midnight falls in a DST gap, fold=0 maps it to the offset before the
    # gap, which lands at the first instant of the day: the period still starts at midnight.
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def budget_period(period: Period, now: float, tz: str | tzinfo = "UTC") -> BudgetPeriod:
    """The day or month that contains ``now`` in time zone ``tz``."""
    zone_info = zone(tz) if isinstance(tz, str) else tz
    today = datetime.fromtimestamp(now, zone_info).date()
    if period == "day":
        first, following = today, today + timedelta(days=1)
        label = today.isoformat()
    elif period == "month":
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        label = f"{first.year:04d}-{first.month:02d}"
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return BudgetPeriod(label, _midnight(first, zone_info), _midnight(following, zone_info))

"""The one clock the services read, so that tests can move time (reminders, TTLs)."""

import time
from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

_offset = 0.0


def now() -> float:
    """Seconds since the epoch, as the service sees them."""
    return time.time() + _offset


def advance(seconds: float) -> None:
    """Move the service's clock forward (tests only)."""
    global _offset
    _offset += seconds


def reset() -> None:
    global _offset
    _offset = 0.0


def iso(ts: float | str) -> str:
    """ISO 8601 in UTC with a ``Z``: how the API renders every time."""
    return datetime.fromtimestamp(float(ts), UTC).isoformat().replace("+00:00", "Z")


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_valid(name: object) -> bool:
    """Whether ``name`` is an IANA time zone name (``Europe/Berlin``, ``UTC``)."""
    return isinstance(name, str) and name in _zones()


def iso_in(ts: float | str, zone: str) -> str:
    """ISO 8601 in the named zone, with its UTC offset: ``2026-11-27T15:00:00-05:00``."""
    return datetime.fromtimestamp(float(ts), ZoneInfo(zone)).isoformat()

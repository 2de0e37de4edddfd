"""The one clock the services read, so that tests can move time (reminders, TTLs)."""

import time
from datetime import UTC, datetime

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


def spoken(ts: float) -> str:
    """A due time as a reply reads it out, e.g. ``08:30 UTC on Nov 27``."""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%H:%M UTC on %b %d")

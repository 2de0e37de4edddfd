"""What both stores share: their errors and the value rules of the interface."""

from typing import Any


class KVUnavailable(Exception):
    """The state back end did not answer (Redis down or timing out)."""


class StoreFull(Exception):
    """The embedded store holds ``LOCAL_STORE_MAX_ENTRIES`` entries: no new record fits."""


def _check_tally(max_bytes: int, field: str | None) -> None:
    if max_bytes and not field:
        raise ValueError("a byte budget needs a tally field to keep its running total in")


def _positive(limit: int) -> int:
    if limit < 1:
        raise ValueError("a page holds at least one member")
    return limit


def _size(*parts) -> int:
    """Bytes of a stored item as Redis counts them: ``"<seq> <payload>"`` or the item."""
    if len(parts) == 2:
        return len(str(parts[0])) + 1 + len(parts[1].encode())
    return len(parts[0].encode())


def _enc(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)

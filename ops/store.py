"""The ops app's keys: ``workers``, a sorted set of worker processes by last heartbeat."""

from core.kv import get_kv

_WORKERS_KEY = "workers"
HEARTBEAT_TTL = 60.0


def worker_seen(*, worker_id: str, now: float) -> None:
    get_kv().index_add(_WORKERS_KEY, worker_id, now, HEARTBEAT_TTL, drop_below=now - HEARTBEAT_TTL)


def workers_since(*, since: float) -> list[tuple[str, float]]:
    return [
        (w, t) for w, t in get_kv().index_page(_WORKERS_KEY, offset=0, limit=1000) if t >= since
    ]

"""Every cache key and TTL of tasks.

* ``t:<id>``          hash: the task (its text and result sealed), TTL ``TASK_TTL_HOURS``
* ``ts:<session id>`` sorted set: the session's task ids by creation time, gone with the session
* ``tasks``           sorted set: every task id by creation time (operators' listing), entries
  older than ``TASK_TTL_HOURS`` dropped as new ones come
* ``due``             sorted set: task ids waiting for their due time (reminders), by due time;
  the scheduler takes them out atomically, so each runs once across workers
"""

from django.conf import settings

from voiceproject.kv import aget_kv, get_kv


def _task_key(task_id: str) -> str:
    return "t:" + task_id


def _index_key(session_id: str) -> str:
    return "ts:" + session_id


def task_ttl() -> float:
    return settings.TASK_TTL_HOURS * 3600


def task_put(*, task_id: str, record: dict, ttl: float | None = None) -> None:
    """Write a new task; it lives ``TASK_TTL_HOURS`` (a reminder: that long past its due time)."""
    kv = get_kv()
    kv.hash_create(_task_key(task_id), record, max(task_ttl(), ttl or 0))
    created = float(record["created_at"])
    kv.index_add("tasks", task_id, created, task_ttl(), drop_below=created - task_ttl())


def task_page(*, offset: int, limit: int) -> list[str]:
    """Task ids, newest first."""
    return [task_id for task_id, _ in get_kv().index_page("tasks", offset=offset, limit=limit)]


def task_get(*, task_id: str) -> dict | None:
    return get_kv().hash_get(_task_key(task_id))


async def atask_get(*, task_id: str) -> dict | None:
    return await aget_kv().hash_get(_task_key(task_id))


def task_cas(
    *, task_id: str, allowed_from: tuple[str, ...], fields: dict
) -> tuple[bool, str | None]:
    """Apply ``fields`` only if the task's state is one of ``allowed_from`` (atomic)."""
    return get_kv().hash_cas(_task_key(task_id), "state", allowed_from, fields)


def task_update(*, task_id: str, fields: dict) -> bool:
    return get_kv().hash_update(_task_key(task_id), fields)


def task_claim_announcement(*, task_id: str) -> bool:
    """True for exactly one caller: the one that announces a due reminder."""
    ok, _ = get_kv().hash_cas(_task_key(task_id), "announced", ("0",), {"announced": "1"})
    return ok


def session_index_add(*, session_id: str, task_id: str, created_at: float) -> None:
    ttl = settings.SESSION_TTL_HOURS * 3600
    get_kv().index_add(_index_key(session_id), task_id, created_at, ttl)


def session_index(*, session_id: str) -> list[str]:
    """Task ids of a session, oldest first."""
    return get_kv().index_members(_index_key(session_id))


async def asession_index(*, session_id: str) -> list[str]:
    return await aget_kv().index_members(_index_key(session_id))


def session_index_forget(*, session_id: str) -> None:
    get_kv().delete(_index_key(session_id))


# due times: tasks that run at a time (reminders) ----------------------------------------------
_DUE_KEY = "due"


def due_add(*, task_id: str, due: float) -> None:
    """Run this task at ``due``: whichever worker's scheduler finds it first (see scheduler)."""
    ttl = settings.REMINDER_HORIZON_DAYS * 86400 + task_ttl()
    get_kv().index_add(_DUE_KEY, task_id, due, ttl)


def due_take(*, now: float, limit: int = 100) -> list[str]:
    """Take the tasks due by ``now``: each is handed to exactly one caller, on any worker."""
    return get_kv().index_pop_upto(_DUE_KEY, upto=now, limit=limit)

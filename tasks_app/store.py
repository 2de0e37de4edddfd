"""Every cache key and TTL of tasks.

* ``t:<id>``            hash: the task (its text and result sealed), TTL ``TASK_TTL_HOURS``
* ``ts:<session id>``   sorted set: the session's task ids by creation time, at most
  ``MAX_TASKS_PER_SESSION`` of them, gone with the session
* ``ts:<session id>:n`` hash: counts kept with that index, in the same atomic steps:
  ``pending`` (tasks in draft, queued or running); gone with the session
* ``tasks``             sorted set: every task id by creation time (operators' listing),
  entries older than ``TASK_TTL_HOURS`` dropped as new ones come
* ``due``               sorted set: task ids waiting for their due time (reminders), by due
  time; the scheduler takes them out atomically, so each runs once across workers
"""

from django.conf import settings

from core.kv import aget_kv
from core.sync import blocking


def _task_key(task_id: str) -> str:
    return "t:" + task_id


def _index_key(session_id: str) -> str:
    return "ts:" + session_id


def _counts_key(session_id: str) -> str:
    return "ts:" + session_id + ":n"


def task_ttl() -> float:
    return settings.TASK_TTL_HOURS * 3600


async def atask_put(*, task_id: str, record: dict, ttl: float | None = None) -> None:
    """Write a task's record, to live ``TASK_TTL_HOURS`` (a reminder: that long past its due
    time). On the embedded store this may raise ``StoreFull``."""
    await aget_kv().hash_create(_task_key(task_id), record, max(task_ttl(), ttl or 0))


async def atask_discard(*, task_id: str) -> None:
    """Remove a record that never made it into its session's index."""
    await aget_kv().delete(_task_key(task_id))


async def atask_list_add(*, task_id: str, created_at: float) -> None:
    """List a task for the operators, newest first."""
    await aget_kv().index_add(
        "tasks", task_id, created_at, task_ttl(), drop_below=created_at - task_ttl()
    )


async def atask_page(*, offset: int, limit: int) -> list[str]:
    """Task ids, newest first."""
    page = await aget_kv().index_page("tasks", offset=offset, limit=limit)
    return [task_id for task_id, _ in page]


async def atask_get(*, task_id: str) -> dict | None:
    return await aget_kv().hash_get(_task_key(task_id))


async def atasks_get(*, task_ids: list[str]) -> list[dict | None]:
    """Many tasks in one round trip, in the order asked."""
    return await aget_kv().hash_get_many([_task_key(t) for t in task_ids]) if task_ids else []


async def atask_states(*, task_ids: list[str]) -> list[str | None]:
    if not task_ids:
        return []
    return await aget_kv().hash_fields([_task_key(t) for t in task_ids], "state")


async def atask_session_id(*, task_id: str) -> str | None:
    return (await aget_kv().hash_fields([_task_key(task_id)], "session_id"))[0]


async def atask_cas(
    *, task_id: str, session_id: str, allowed_from: dict[str, int], fields: dict
) -> tuple[bool, str | None]:
    """Apply ``fields`` only if the task's state is one of ``allowed_from`` (atomic); the
    session's pending count moves by ``allowed_from[old state]`` in the same step."""
    return await aget_kv().hash_cas_counted(
        _task_key(task_id),
        "state",
        allowed_from,
        fields,
        counter=(_counts_key(session_id), "pending"),
    )


async def atask_update(*, task_id: str, fields: dict) -> bool:
    return await aget_kv().hash_update(_task_key(task_id), fields)


async def atask_claim_announcement(*, task_id: str) -> bool:
    """True for exactly one caller: the one that announces a due reminder."""
    ok, _ = await aget_kv().hash_cas(_task_key(task_id), "announced", ("0",), {"announced": "1"})
    return ok


async def asession_index_add(
    *, session_id: str, task_id: str, created_at: float, pending: bool
) -> bool:
    """Put a task in its session's index, unless that holds ``MAX_TASKS_PER_SESSION`` already
    (then False); the pending count moves in the same atomic step."""
    return await aget_kv().index_add_counted(
        _index_key(session_id),
        task_id,
        created_at,
        settings.SESSION_TTL_HOURS * 3600,
        limit=settings.MAX_TASKS_PER_SESSION,
        counter_key=_counts_key(session_id),
        deltas={"pending": 1 if pending else 0},
    )


async def asession_index(
    *, session_id: str, offset: int = 0, limit: int | None = None
) -> list[str]:
    """Task ids of a session, oldest first (one page of them with ``limit``)."""
    return await aget_kv().index_range(_index_key(session_id), offset=offset, limit=limit)


def _pending(values: list[str | None]) -> int:
    return max(0, int(values[0] or 0))


def pending_count_field(*, session_id: str) -> tuple[str, str]:
    """Where a session's pending count lives (key, field), for a read that takes it along
    with other keys in one round trip; :func:`pending_count_of` reads the value."""
    return _counts_key(session_id), "pending"


def pending_count_of(value: str | None) -> int:
    return _pending([value])


async def asession_pending_count(*, session_id: str) -> int:
    """Pending tasks of a session: one read, however many tasks it has."""
    return _pending(await aget_kv().hash_fields([_counts_key(session_id)], "pending"))


async def asession_index_forget(*, session_id: str) -> None:
    await aget_kv().delete(_index_key(session_id), _counts_key(session_id))


# due times: tasks that run at a time (reminders) ----------------------------------------------
_DUE_KEY = "due"


async def adue_add(*, task_id: str, due: float) -> None:
    """Run this task at ``due``: whichever worker's scheduler finds it first (see scheduler)."""
    ttl = settings.REMINDER_HORIZON_DAYS * 86400 + task_ttl()
    await aget_kv().index_add(_DUE_KEY, task_id, due, ttl)


async def adue_take(*, now: float, limit: int = 100) -> list[str]:
    """Take the tasks due by ``now``: each is handed to exactly one caller, on any worker."""
    return await aget_kv().index_pop_upto(_DUE_KEY, upto=now, limit=limit)


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, tests ------
task_put = blocking(atask_put)
task_discard = blocking(atask_discard)
task_list_add = blocking(atask_list_add)
task_page = blocking(atask_page)
task_get = blocking(atask_get)
tasks_get = blocking(atasks_get)
task_states = blocking(atask_states)
task_session_id = blocking(atask_session_id)
task_cas = blocking(atask_cas)
task_update = blocking(atask_update)
task_claim_announcement = blocking(atask_claim_announcement)
session_index_add = blocking(asession_index_add)
session_index = blocking(asession_index)
session_pending_count = blocking(asession_pending_count)
session_index_forget = blocking(asession_index_forget)
due_add = blocking(adue_add)
due_take = blocking(adue_take)

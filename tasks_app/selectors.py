"""Reads of tasks."""

import json

from core.crypto import unseal
from core.sync import blocking
from tasks_app import store


def _typed(record: dict | None) -> dict | None:
    if record is None:
        return None
    record["created_at"] = float(record["created_at"])
    record["updated_at"] = float(record["updated_at"])
    record["result_available"] = bool(record.get("result"))
    return record


async def atask_get(*, task_id: str) -> dict | None:
    return _typed(await store.atask_get(task_id=task_id))


def _in_state(records: list[dict | None], state: str | None) -> list[dict]:
    return [r for r in records if r is not None and (state is None or r["state"] == state)]


def _page(ids: list[str], states: list[str | None], state: str, offset: int, limit: int | None):
    ids = [t for t, s in zip(ids, states, strict=True) if s == state]
    return ids[offset : None if limit is None else offset + limit]


async def atask_list(
    *, session_id: str, state: str | None = None, offset: int = 0, limit: int | None = None
) -> list[dict]:
    """The session's tasks, oldest first, optionally in one state; one page of them with
    ``offset`` and ``limit`` (counted among the tasks in that state).

    A page costs a fixed number of round trips: its ids, then its records in one. With a
    state, every task's state is read first, in one round trip too (a session holds at most
    ``MAX_TASKS_PER_SESSION``).
    """
    if state is None:
        ids = await store.asession_index(session_id=session_id, offset=offset, limit=limit)
    else:
        ids = await store.asession_index(session_id=session_id)
        ids = _page(ids, await store.atask_states(task_ids=ids), state, offset, limit)
    return _in_state([_typed(r) for r in await store.atasks_get(task_ids=ids)], state)


async def atask_pending_count(*, session_id: str) -> int:
    """Tasks in draft, queued or running: a count kept with the session's index (O(1))."""
    return await store.asession_pending_count(session_id=session_id)


def task_payload(*, record: dict) -> dict:
    """What the user asked for (decrypted): the task's text and slots."""
    return json.loads(unseal(record["session_id"], record["payload"]))


def task_result(*, record: dict) -> dict | None:
    """The handler's result (decrypted), or None while there is none."""
    if not record.get("result"):
        return None
    return json.loads(unseal(record["session_id"], record["result"]))


async def atask_recent(
    *, state: str | None = None, task_type: str | None = None, limit: int = 100, window: int = 2000
) -> list[dict]:
    """The newest tasks (operators), filtered by state and type over the newest ``window``."""
    out = []
    offset = 0
    while offset < window and len(out) < limit:
        ids = await store.atask_page(offset=offset, limit=200)
        if not ids:
            break
        for raw in await store.atasks_get(task_ids=ids):  # the page in one round trip
            record = _typed(raw)
            if record is None:
                continue
            if (state and record["state"] != state) or (task_type and record["type"] != task_type):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        offset += len(ids)
    return out


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, tests ------
task_get = blocking(atask_get)
task_list = blocking(atask_list)
task_pending_count = blocking(atask_pending_count)
task_recent = blocking(atask_recent)

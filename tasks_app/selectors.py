"""Reads of tasks."""

import json

from tasks_app import store
from tasks_app.states import PENDING
from voiceproject.crypto import unseal


def _typed(record: dict | None) -> dict | None:
    if record is None:
        return None
    record["created_at"] = float(record["created_at"])
    record["updated_at"] = float(record["updated_at"])
    record["result_available"] = bool(record.get("result"))
    return record


def task_get(*, task_id: str) -> dict | None:
    return _typed(store.task_get(task_id=task_id))


async def atask_get(*, task_id: str) -> dict | None:
    return _typed(await store.atask_get(task_id=task_id))


def _in_state(records: list[dict | None], state: str | None) -> list[dict]:
    return [r for r in records if r is not None and (state is None or r["state"] == state)]


def task_list(*, session_id: str, state: str | None = None) -> list[dict]:
    """The session's tasks, oldest first, optionally in one state."""
    ids = store.session_index(session_id=session_id)
    return _in_state([task_get(task_id=t) for t in ids], state)


async def atask_list(*, session_id: str, state: str | None = None) -> list[dict]:
    ids = await store.asession_index(session_id=session_id)
    return _in_state([await atask_get(task_id=t) for t in ids], state)


def _pending(tasks: list[dict]) -> int:
    return sum(1 for t in tasks if t["state"] in PENDING)


def task_pending_count(*, session_id: str) -> int:
    return _pending(task_list(session_id=session_id))


async def atask_pending_count(*, session_id: str) -> int:
    return _pending(await atask_list(session_id=session_id))


def task_payload(*, record: dict) -> dict:
    """What the user asked for (decrypted): the task's text and slots."""
    return json.loads(unseal(record["session_id"], record["payload"]))


def task_result(*, record: dict) -> dict | None:
    """The handler's result (decrypted), or None while there is none."""
    if not record.get("result"):
        return None
    return json.loads(unseal(record["session_id"], record["result"]))


def task_recent(
    *, state: str | None = None, task_type: str | None = None, limit: int = 100, window: int = 2000
) -> list[dict]:
    """The newest tasks (operators), filtered by state and type over the newest ``window``."""
    out = []
    offset = 0
    while offset < window and len(out) < limit:
        ids = store.task_page(offset=offset, limit=200)
        if not ids:
            break
        for task_id in ids:
            record = task_get(task_id=task_id)
            if record is None:
                continue
            if (state and record["state"] != state) or (task_type and record["type"] != task_type):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        offset += len(ids)
    return out

"""Reads of tasks."""

import json

from tasks_app import store
from tasks_app.states import PENDING
from voiceproject.crypto import unseal


def _typed(record: dict) -> dict:
    record["created_at"] = float(record["created_at"])
    record["updated_at"] = float(record["updated_at"])
    record["result_available"] = bool(record.get("result"))
    return record


def task_get(*, task_id: str) -> dict | None:
    record = store.task_get(task_id=task_id)
    return None if record is None else _typed(record)


def task_list(*, session_id: str, state: str | None = None) -> list[dict]:
    """The session's tasks, oldest first, optionally in one state."""
    out = []
    for task_id in store.session_index(session_id=session_id):
        record = task_get(task_id=task_id)
        if record is not None and (state is None or record["state"] == state):
            out.append(record)
    return out


def task_pending_count(*, session_id: str) -> int:
    return sum(1 for t in task_list(session_id=session_id) if t["state"] in PENDING)


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

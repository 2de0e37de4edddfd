"""What the operators' pages read. No transcript text, payload or result is ever shown."""

from asgiref.sync import async_to_sync
from django.conf import settings

from core import clock
from core.health import layer_round_trip
from core.kv import get_kv
from ops import store
from sessions_app.audio.recognizer import get_pool
from sessions_app.selectors import session_list, session_stats
from tasks_app.selectors import task_pending_count, task_recent
from tasks_app.states import PENDING


def ops_sessions(*, offset: int, limit: int) -> tuple[int, list[dict]]:
    """A page of live sessions with the figures operators need (no PII)."""
    total, records = session_list(offset=offset, limit=limit)
    now = clock.now()
    rows = [
        {
            "id": r["id"],
            "short_id": r["id"][:8],
            "status": r["status"],
            "age_seconds": int(now - r["created_at"]),
            "device_type": r["device_type"],
            "message_count": r["message_count"],
            "audio_chunks_received": r["audio_chunks_received"],
            "audio_chunks_processed": r["audio_chunks_processed"],
            "pending_tasks_count": task_pending_count(session_id=r["id"]),
        }
        for r in records
    ]
    return total, rows


def ops_session(*, session_id: str) -> dict | None:
    from tasks_app.selectors import task_list

    stats = session_stats(session_id=session_id)
    if stats is None:
        return None
    tasks = [_task_row(t) for t in task_list(session_id=session_id)]
    return {"id": session_id, **stats, "tasks": tasks}


def ops_tasks(*, state: str | None, task_type: str | None) -> list[dict]:
    return [_task_row(t) for t in task_recent(state=state, task_type=task_type, limit=200)]


def _task_row(task: dict) -> dict:
    """What a page shows of a task: never its payload or result."""
    return {
        "id": task["id"],
        "short_id": task["id"][:8],
        "session_short_id": task["session_id"][:8],
        "type": task["type"],
        "state": task["state"],
        "pending": task["state"] in PENDING,
        "updated": clock.iso(task["updated_at"]),
        "result_available": task["result_available"],
        "error_message": task.get("error_message") or "",
    }


def ops_health() -> dict:
    """Cache, channel layer, workers seen in the last 30 s, this process's recognizer pool."""
    checks = {}
    try:
        get_kv().ping()
        checks["cache"] = "ok"
    except Exception as exc:
        checks["cache"] = f"failing ({type(exc).__name__})"
    checks["channel_layer"] = _layer_check()
    pool = get_pool()
    workers = store.workers_since(since=clock.now() - 30)
    return {
        "checks": checks,
        # Who may touch a session (CONTRACT 1b): an operator should see at once if it is open.
        "session_auth": (
            "bearer token per session"
            if settings.SESSION_AUTH == "token"
            else "OFF: a session id alone is enough (SESSION_AUTH=off)"
        ),
        "workers": [{"id": w, "seen_seconds_ago": round(clock.now() - t, 1)} for w, t in workers],
        "recognizer": {
            "processes": pool.processes,
            "processes_alive": pool.alive_processes(),
            "recognizers": pool.size,
            "busy": pool.busy,
        },
    }


def _layer_check() -> str:
    try:
        async_to_sync(layer_round_trip)()
        return "ok"
    except Exception as exc:
        return f"failing ({type(exc).__name__})"

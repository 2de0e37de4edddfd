"""What operators do, and each worker's heartbeat (so the health page can list workers)."""

import os
import socket
import threading
import time

import structlog
from django.conf import settings

from core import clock
from ops import store
from sessions_app.services import session_close
from tasks_app.services import task_cancel

logger = structlog.get_logger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
_started = False
_start_lock = threading.Lock()


def ops_close_session(*, session_id: str) -> bool:
    """Close a session as DELETE does: its live socket, on any worker, gets 1000."""
    logger.info("ops_session_close", session_id=session_id)
    return session_close(session_id=session_id, reason="deleted")


def ops_cancel_task(*, task_id: str) -> dict:
    logger.info("ops_task_cancel", task_id=task_id)
    return task_cancel(task_id=task_id)


def worker_heartbeat_start() -> None:
    """Start this process's heartbeat thread, once (``WORKER_HEARTBEAT_SECONDS`` 0: never)."""
    global _started
    interval = settings.WORKER_HEARTBEAT_SECONDS
    if interval <= 0 or _started:
        return
    with _start_lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_beat, args=(interval,), daemon=True, name="heartbeat").start()


def _beat(interval: float) -> None:
    while True:
        try:
            store.worker_seen(worker_id=WORKER_ID, now=clock.now())
        except Exception as exc:
            logger.warning("heartbeat_failed", error_type=type(exc).__name__)
        time.sleep(interval)

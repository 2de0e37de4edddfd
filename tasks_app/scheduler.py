"""Tasks that run at a time (reminders): due when due, with or without a live socket.

Every web process runs one daemon thread that, every ``SCHEDULER_TICK_SECONDS``, takes the
tasks due by now out of the store's ``due`` index and hands them to the task runner (a thread
here, or the ``runworker`` queue with ``TASK_RUNNER=worker``). Taking is one atomic step (a Lua
script on Redis), so a due task runs exactly once however many processes look. When it runs,
its handler completes it and its session hears it (``task.updated`` and the reminder's
``response``), live or on resume; over REST its state reads ``completed``.
"""

import threading
import time

import structlog
from django.conf import settings

from core import clock
from core.sync import blocking
from tasks_app import services, store

logger = structlog.get_logger(__name__)

_started = False
_start_lock = threading.Lock()


async def arun_due(*, now: float | None = None) -> int:
    """Start every task due by ``now``; returns how many this caller took."""
    taken = await store.adue_take(now=clock.now() if now is None else now)
    for task_id in taken:
        await services.atask_dispatch(task_id=task_id)
    return len(taken)


# The scheduler's thread is off the loop: it crosses with the one sync entry (core.sync).
run_due = blocking(arun_due)


def _loop() -> None:
    while True:
        time.sleep(settings.SCHEDULER_TICK_SECONDS)
        try:
            run_due()
        except Exception as exc:  # the store is down: try again next tick
            logger.warning("scheduler_tick_failed", error_type=type(exc).__name__)


def scheduler_start() -> None:
    """Start this process's scheduler thread, once (called by the ASGI application)."""
    global _started
    if _started or settings.SCHEDULER_TICK_SECONDS <= 0:
        return
    with _start_lock:
        if not _started:
            threading.Thread(target=_loop, name="voice-scheduler", daemon=True).start()
            _started = True

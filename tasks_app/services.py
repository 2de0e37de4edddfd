"""Writes to tasks, and what an utterance does (CONTRACT section 2a).

Every state change goes through :func:`task_transition`: an atomic compare-and-set in the
store, then ``task.updated`` on the session's one event path. These functions are sync; the
socket calls them in a worker thread, never on its event loop.
"""

import contextlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import structlog
from django.conf import settings
from django.utils.module_loading import import_string

from sessions_app.services import session_emit, session_message_add
from tasks_app import intents, selectors, store
from tasks_app.handlers import HandlerError
from tasks_app.states import PENDING, sources_of
from voiceproject import clock
from voiceproject.crypto import seal
from voiceproject.errors import Conflict, NotFound
from voiceproject.layer import send_sync
from voiceproject.metrics import TASK_STATES

logger = structlog.get_logger(__name__)


class TaskNotFound(NotFound):
    default_detail = "Task not found"


class IllegalTransition(Conflict):
    default_detail = "Task state does not allow this"

    def __init__(self, current: str, target: str):
        super().__init__(f"Task is {current}; it cannot become {target}")
        self.current = current


def task_response(record: dict) -> dict:
    """The public ``TaskResponse`` of a task record (REST bodies and socket events)."""
    return {
        "id": record["id"],
        "session_id": record["session_id"],
        "type": record["type"],
        "state": record["state"],
        "created_at": clock.iso(record["created_at"]),
        "updated_at": clock.iso(record["updated_at"]),
        "result_available": bool(record.get("result")),
        "error_message": record.get("error_message") or None,
    }


def _emit_task(event_type: str, record: dict) -> None:
    session_emit(
        session_id=record["session_id"], event={"type": event_type, "task": task_response(record)}
    )


def task_create(*, session_id: str, task_type: str, payload: dict) -> dict:
    """A new task of a registered type: ``draft`` if the type needs confirming, else queued."""
    now = clock.now()
    task_id = str(uuid.uuid4())
    state = "draft" if task_type in settings.TASK_TYPES_NEEDING_CONFIRMATION else "queued"
    record = {
        "id": task_id,
        "session_id": session_id,
        "type": task_type,
        "state": state,
        "created_at": now,
        "updated_at": now,
        "error_message": "",
        "result": "",
        "payload": seal(session_id, json.dumps(payload)),
        "announced": "0",
    }
    store.task_put(task_id=task_id, record=record)
    store.session_index_add(session_id=session_id, task_id=task_id, created_at=now)
    _emit_task("task.created", record)
    TASK_STATES.labels(state=state).inc()
    logger.info("task_created", task_id=task_id, session_id=session_id, type=task_type)
    if state == "queued":
        task_dispatch(task_id=task_id)
    return record


def task_transition(
    *,
    task_id: str,
    to: str,
    fields: dict | None = None,
    allowed_from: tuple[str, ...] | None = None,
) -> dict:
    """Move a task to ``to`` if the state machine allows it from its current state (else 409)."""
    ok, current = store.task_cas(
        task_id=task_id,
        allowed_from=allowed_from or sources_of(to),
        fields={"state": to, "updated_at": clock.now(), **(fields or {})},
    )
    if current is None:
        raise TaskNotFound()
    if not ok:
        raise IllegalTransition(current, to)
    record = selectors.task_get(task_id=task_id)
    if record is None:
        raise TaskNotFound()
    _emit_task("task.updated", record)
    TASK_STATES.labels(state=to).inc()
    logger.info("task_state_changed", task_id=task_id, state_from=current, state_to=to)
    return record


def task_confirm(*, task_id: str) -> dict:
    """``draft`` to ``queued``, and run it. A draft older than ``DRAFT_TTL_SECONDS`` expires."""
    record = selectors.task_get(task_id=task_id)
    if record is None:
        raise TaskNotFound()
    if (
        record["state"] == "draft"
        and record["created_at"] + settings.DRAFT_TTL_SECONDS < clock.now()
    ):
        task_transition(task_id=task_id, to="expired", allowed_from=("draft",))
        raise IllegalTransition("expired", "queued")
    record = task_transition(task_id=task_id, to="queued", allowed_from=("draft",))
    task_dispatch(task_id=task_id)
    return record


def task_cancel(*, task_id: str) -> dict:
    return task_transition(task_id=task_id, to="cancelled")


def task_expire_draft(*, task_id: str) -> None:
    """A draft nobody confirmed in time (the live socket's tick calls this)."""
    with contextlib.suppress(IllegalTransition, TaskNotFound):
        task_transition(task_id=task_id, to="expired", allowed_from=("draft",))


# running handlers ------------------------------------------------------------------------------
_pool: ThreadPoolExecutor | None = None


def task_dispatch(*, task_id: str) -> None:
    """Hand a queued task to a runner: a thread here, or a ``runworker`` with Redis."""
    global _pool
    if settings.TASK_RUNNER == "worker":
        send_sync(
            settings.TASK_WORKER_CHANNEL,
            {"type": "task.run", "task_id": task_id},
            alias=settings.TASK_WORKER_LAYER,
        )
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="task-handler")
    _pool.submit(task_run, task_id=task_id)


def task_run(*, task_id: str) -> None:
    """Run a queued task's handler; the task ends completed or failed, the session goes on."""
    try:
        record = task_transition(task_id=task_id, to="running", allowed_from=("queued",))
    except (IllegalTransition, TaskNotFound):
        return  # cancelled or expired before it ran
    try:
        handler = import_string(settings.TASK_HANDLERS[record["type"]])
        result = handler(task=task_response(record), payload=selectors.task_payload(record=record))
    except HandlerError as exc:
        _finish(task_id, "failed", {"error_message": str(exc)[:200]})
    except Exception as exc:
        logger.warning("task_handler_failed", task_id=task_id, error_type=type(exc).__name__)
        _finish(task_id, "failed", {"error_message": f"Handler failed ({type(exc).__name__})"})
    else:
        sealed = seal(record["session_id"], json.dumps(result))
        _finish(task_id, "completed", {"result": sealed})


def _finish(task_id: str, to: str, fields: dict) -> None:
    # Cancelled while it ran: the cancel stands, and the result is dropped.
    with contextlib.suppress(IllegalTransition, TaskNotFound):
        task_transition(task_id=task_id, to=to, fields=fields, allowed_from=("running",))


def reminder_announce(*, task_id: str) -> bool:
    """Say a due reminder on its session, once, whichever socket notices first."""
    record = selectors.task_get(task_id=task_id)
    if record is None or not store.task_claim_announcement(task_id=task_id):
        return False
    result = selectors.task_result(record=record) or {}
    session_emit(
        session_id=record["session_id"],
        event={
            "type": "response",
            "text": f"Reminder: {result.get('text', '')}",
            "task_id": task_id,
        },
    )
    return True


# utterances ------------------------------------------------------------------------------------
def _reply_for_task(intent: intents.Intent, record: dict) -> str:
    if intent.name == "reminder":
        due = clock.spoken(intent.slots["due_at"])
        if record["state"] == "draft":
            return f"Reminder to {intent.text} at {due}. Say confirm to set it."
        return f"I will remind you to {intent.text} at {due}."
    if intent.name == "todo":
        return f"Added {intent.text} to your list."
    return "Noted."


def utterance_handle(*, session_id: str, text: str, utterance_id: str) -> dict:
    """One final utterance (spoken or typed) to its outcome: a task, a reply, or both."""
    session_message_add(session_id=session_id, role="user", text=text)
    intent = intents.parse(text, now=clock.now())
    logger.info("utterance_intent", session_id=session_id, intent=intent.name)
    task = None
    if intent.problem == intents.TOO_FAR:
        reply = "That time is too far away. I can set reminders up to a year ahead."
    elif intent.name in ("reminder", "todo", "note"):
        payload = {"text": intent.text, **intent.slots}
        task = task_create(session_id=session_id, task_type=intent.name, payload=payload)
        reply = _reply_for_task(intent, task)
    elif intent.name == "list":
        pending = [
            selectors.task_payload(record=t).get("text", "")
            for t in selectors.task_list(session_id=session_id)
            if t["state"] in PENDING
        ]
        reply = (
            f"You have {len(pending)} pending: " + "; ".join(pending) + "."
            if pending
            else "Your list is empty."
        )
    elif intent.name == "cancel_last":
        reply = "There is no pending task to cancel."
        for t in reversed(selectors.task_list(session_id=session_id)):
            if t["state"] in PENDING:
                try:
                    task = task_cancel(task_id=t["id"])
                except IllegalTransition:
                    continue
                reply = f"Cancelled: {selectors.task_payload(record=t).get('text', '')}."
                break
    elif intent.name == "confirm":
        reply = "There is nothing to confirm."
        for t in reversed(selectors.task_list(session_id=session_id, state="draft")):
            try:
                task = task_confirm(task_id=t["id"])
            except IllegalTransition:
                continue
            reply = "Confirmed."
            break
    else:
        reply = "Sorry, I did not understand that."
    session_emit(
        session_id=session_id,
        event={
            "type": "response",
            "text": reply,
            "utterance_id": utterance_id,
            "intent": intent.name,
        },
    )
    session_message_add(session_id=session_id, role="assistant", text=reply)
    return {"intent": intent.name, "task": task}

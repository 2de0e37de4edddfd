"""Writes to tasks, and what an utterance does (CONTRACT section 2a).

Every state change goes through :func:`task_transition`: an atomic compare-and-set in the
store, then ``task.updated`` on the session's one event path. These functions are ``async
def`` and run on the event loop (the socket's, a REST request's, or the task worker's); only a
task's handler, which may block, runs in a thread. Code off the loop uses the sync entries at
the bottom (``core.sync.blocking``).
"""

import asyncio
import contextlib
import functools
import json
from concurrent.futures import ThreadPoolExecutor

import structlog
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.module_loading import import_string

from core import clock
from core.access import bound_id_issue
from core.crypto import seal
from core.events import asession_message_add, session_aemit
from core.kv import StoreFull
from core.metrics import TASK_STATES
from core.sync import blocking
from tasks_app import intents, selectors, store, timephrases
from tasks_app.errors import IllegalTransition, TaskNotFound, TooManyTasks
from tasks_app.handlers import HandlerError
from tasks_app.states import PENDING, sources_of

logger = structlog.get_logger(__name__)


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


async def _emit_task(event_type: str, record: dict) -> None:
    event = {"type": event_type, "task": task_response(record)}
    # The task's own words, for the session's holder (the web client's task list): on the
    # socket only, beside the TaskResponse, whose REST shape stays as the contract has it.
    text = selectors.task_payload(record=record).get("text") if record.get("payload") else None
    if text:
        event["text"] = text
    await session_aemit(session_id=record["session_id"], event=event)


async def atask_create(*, session_id: str, task_type: str, payload: dict) -> dict:
    """A new task of a registered type: ``draft`` if the type needs confirming, else queued.

    A payload with a ``due_at`` (a reminder) makes a task that runs at that time; the task
    then lives until ``TASK_TTL_HOURS`` after it.
    """
    now = clock.now()
    due = float(payload.get("due_at") or 0)
    task_id = bound_id_issue(owner_id=session_id)  # its session's token, and only it, opens it
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
        "due_ts": due or "",
    }
    await store.atask_put(task_id=task_id, record=record, ttl=due - now + store.task_ttl())
    if not await store.asession_index_add(
        session_id=session_id, task_id=task_id, created_at=now, pending=state in PENDING
    ):
        await store.atask_discard(task_id=task_id)
        raise TooManyTasks()
    await store.atask_list_add(task_id=task_id, created_at=now)
    await _emit_task("task.created", record)
    TASK_STATES.labels(state=state).inc()
    logger.info("task_created", task_id=task_id, session_id=session_id, type=task_type)
    if state == "queued":
        await _start(record)
    return record


async def _start(record: dict) -> None:
    """A task just queued: run it now, at its due time, or when the user says it is done."""
    if record["type"] in settings.TASK_TYPES_UNTIL_DONE:
        return  # a to-do: on the user's list until "mark X as done" runs it
    due = float(record.get("due_ts") or 0)
    if due > clock.now():
        await store.adue_add(task_id=record["id"], due=due)  # the scheduler runs it then
        return
    await atask_dispatch(task_id=record["id"])


async def atask_transition(
    *,
    task_id: str,
    to: str,
    fields: dict | None = None,
    allowed_from: tuple[str, ...] | None = None,
) -> dict:
    """Move a task to ``to`` if the state machine allows it from its current state (else 409).

    The session's pending count moves in the same atomic step as the state.
    """
    session_id = await store.atask_session_id(task_id=task_id)
    if session_id is None:
        raise TaskNotFound()
    ok, current = await store.atask_cas(
        task_id=task_id,
        session_id=session_id,
        allowed_from={
            s: (to in PENDING) - (s in PENDING) for s in (allowed_from or sources_of(to))
        },
        fields={"state": to, "updated_at": clock.now(), **(fields or {})},
    )
    if current is None:
        raise TaskNotFound()
    if not ok:
        raise IllegalTransition(current, to)
    record = await selectors.atask_get(task_id=task_id)
    if record is None:
        raise TaskNotFound()
    await _emit_task("task.updated", record)
    TASK_STATES.labels(state=to).inc()
    logger.info("task_state_changed", task_id=task_id, state_from=current, state_to=to)
    return record


async def atask_confirm(*, task_id: str) -> dict:
    """``draft`` to ``queued``, and run it. A draft older than ``DRAFT_TTL_SECONDS`` expires."""
    record = await selectors.atask_get(task_id=task_id)
    if record is None:
        raise TaskNotFound()
    if (
        record["state"] == "draft"
        and record["created_at"] + settings.DRAFT_TTL_SECONDS < clock.now()
    ):
        await atask_transition(task_id=task_id, to="expired", allowed_from=("draft",))
        raise IllegalTransition("expired", "queued")
    record = await atask_transition(task_id=task_id, to="queued", allowed_from=("draft",))
    await _start(record)
    return record


async def atask_cancel(*, task_id: str) -> dict:
    return await atask_transition(task_id=task_id, to="cancelled")


async def atask_expire_draft(*, task_id: str) -> None:
    """A draft nobody confirmed in time (the live socket's tick calls this)."""
    with contextlib.suppress(IllegalTransition, TaskNotFound):
        await atask_transition(task_id=task_id, to="expired", allowed_from=("draft",))


# running handlers ------------------------------------------------------------------------------
_pool: ThreadPoolExecutor | None = None  # handlers may block: they run here, off the loop
_running: set[asyncio.Task] = set()  # tasks running in this process (a reference each)


async def atask_dispatch(*, task_id: str, claimed: bool = False) -> None:
    """Hand a task to a runner: this process's loop, or a ``runworker`` with Redis.

    A queued task is moved to ``running`` by its runner; a ``claimed`` one was moved there
    already by the caller (a to-do marked done: off the list at once, whenever it runs).
    """
    if settings.TASK_RUNNER == "worker":
        await get_channel_layer(settings.TASK_WORKER_LAYER).send(
            settings.TASK_WORKER_CHANNEL,
            {"type": "task.run", "task_id": task_id, "claimed": claimed},
        )
        return
    run = asyncio.get_running_loop().create_task(atask_run(task_id=task_id, claimed=claimed))
    _running.add(run)
    run.add_done_callback(_running.discard)


def _handler_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="task-handler")
    return _pool


async def atask_run(*, task_id: str, claimed: bool = False) -> None:
    """Run a task's handler (in a thread); the task ends completed or failed, the session
    goes on."""
    if claimed:
        record = await selectors.atask_get(task_id=task_id)
        if record is None or record["state"] != "running":
            return  # cancelled since it was claimed
    else:
        try:
            record = await atask_transition(task_id=task_id, to="running", allowed_from=("queued",))
        except (IllegalTransition, TaskNotFound):
            return  # cancelled or expired before it ran
    try:
        handler = import_string(settings.TASK_HANDLERS[record["type"]])
        call = functools.partial(
            handler, task=task_response(record), payload=selectors.task_payload(record=record)
        )
        result = await asyncio.get_running_loop().run_in_executor(_handler_pool(), call)
    except HandlerError as exc:
        await _finish(task_id, "failed", {"error_message": str(exc)[:200]})
    except Exception as exc:
        logger.warning("task_handler_failed", task_id=task_id, error_type=type(exc).__name__)
        await _finish(
            task_id, "failed", {"error_message": f"Handler failed ({type(exc).__name__})"}
        )
    else:
        sealed = seal(record["session_id"], json.dumps(result))
        if await _finish(task_id, "completed", {"result": sealed}) and record.get("due_ts"):
            await areminder_announce(task_id=task_id)  # it ran because it fell due: say so


async def _finish(task_id: str, to: str, fields: dict) -> bool:
    # Cancelled while it ran: the cancel stands, and the result is dropped.
    try:
        await atask_transition(task_id=task_id, to=to, fields=fields, allowed_from=("running",))
    except (IllegalTransition, TaskNotFound):
        return False
    return True


async def areminder_announce(*, task_id: str) -> bool:
    """Say a due reminder on its session, once (the claim makes a repeat a no-op)."""
    record = await selectors.atask_get(task_id=task_id)
    if record is None or not await store.atask_claim_announcement(task_id=task_id):
        return False
    result = selectors.task_result(record=record) or {}
    await session_aemit(
        session_id=record["session_id"],
        event={
            "type": "response",
            "text": f"Reminder: {result.get('text', '')}",
            "task_id": task_id,
        },
    )
    return True


# utterances ------------------------------------------------------------------------------------
_PROBLEMS = {
    "past": "That time has already passed. When should I remind you?",
    "too_far": "That time is too far away. I can set reminders up to {days} days ahead.",
}


def _reply_for_task(intent: intents.Intent, record: dict, zone: str) -> str:
    if intent.name == "reminder":
        due = timephrases.spoken(intent.slots["due_at"], zone, now=clock.now())
        if record["state"] == "draft":
            return f"Reminder to {intent.text} at {due}. Say confirm to set it."
        return f"I will remind you to {intent.text} at {due}."
    if intent.name == "todo":
        return f"Added {intent.text} to your list."
    return "Noted."


def _words(text: str) -> str:
    return " ".join(intents.normalise(text).split())


async def _open_items(session_id: str) -> list[tuple[dict, dict]]:
    """The user's list: open to-dos and reminders still to come, oldest first, with payloads."""
    out = []
    for t in await selectors.atask_list(session_id=session_id):
        if t["state"] not in ("draft", "queued"):  # running: being done, or falling due now
            continue
        if t["type"] in settings.TASK_TYPES_UNTIL_DONE or t.get("due_ts"):
            out.append((t, selectors.task_payload(record=t)))
    return out


async def _find_item(session_id: str, said: str, *, types: set[str] | None = None) -> dict | None:
    """The open item the user named: the same words, else the newest that contains them."""
    wanted = _words(said)
    items = [
        (t, _words(p.get("text", "")))
        for t, p in reversed(await _open_items(session_id))
        if types is None or t["type"] in types
    ]
    for t, text in items:
        if text == wanted:
            return t
    for t, text in items:
        if wanted and (wanted in text or text in wanted):
            return t
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


LIST_ITEM_CHARS = 200  # one item as "what is on my list" reads it out


def _read_out(head: str, items: list[str]) -> str:
    """The first ``LIST_REPLY_ITEMS`` items that fit in ``MAX_REPLY_CHARS``, then how many
    more there are."""
    said: list[str] = []
    for text in items[: settings.LIST_REPLY_ITEMS]:
        candidate = [*said, _clip(text, LIST_ITEM_CHARS)]
        more = len(items) - len(candidate)
        reply = f"{head}: " + "; ".join(candidate) + (f"; and {more} more." if more else ".")
        if len(reply) > settings.MAX_REPLY_CHARS:
            break
        said = candidate
    if not said:
        return f"{head}."
    more = len(items) - len(said)
    return f"{head}: " + "; ".join(said) + (f"; and {more} more." if more else ".")


async def _list_reply(session_id: str, zone: str) -> str:
    """The open to-dos, then the reminders still to come, read out within the reply's caps."""
    todos, reminders = [], []
    for t, payload in await _open_items(session_id):
        text = payload.get("text", "")
        if t["type"] in settings.TASK_TYPES_UNTIL_DONE:
            todos.append(text)
        else:
            when = timephrases.spoken(float(t["due_ts"]), zone, now=clock.now())
            reminders.append(f"a reminder to {text} at {when}")
    items = todos + reminders
    if not items:
        return "Your list is empty."
    return _read_out(f"You have {len(items)} on your list", items)


def _task_refusal(intent: intents.Intent) -> tuple[str, str] | None:
    if len(intent.text) > settings.MAX_TASK_TEXT_CHARS:
        return "task_text_too_long", (
            f"That is too long to keep: say it in at most {settings.MAX_TASK_TEXT_CHARS}"
            " characters."
        )
    return None


async def autterance_handle(
    *, session_id: str, text: str, utterance_id: str, zone: str = "UTC"
) -> dict:
    """One final utterance (spoken or typed) to its outcome: a task, a reply, or both.

    Times are read and spoken in ``zone``, the session's IANA time zone. A task past a quota
    is not created; the reply says why, and carries a ``code``.
    """
    await asession_message_add(session_id=session_id, role="user", text=text)
    intent = intents.parse(text, now=clock.now(), zone=zone)
    logger.info("utterance_intent", session_id=session_id, intent=intent.name)
    task = None
    code = None
    if intent.problem:
        reply = _PROBLEMS[intent.problem].format(days=int(settings.REMINDER_HORIZON_DAYS))
    elif intent.name in ("reminder", "todo", "note"):
        payload = {"text": intent.text, **intent.slots, "zone": zone}
        refusal = _task_refusal(intent)
        try:
            if refusal is None:
                task = await atask_create(
                    session_id=session_id, task_type=intent.name, payload=payload
                )
        except TooManyTasks:
            refusal = (
                "too_many_tasks",
                (
                    f"Your list is full: a session keeps at most {settings.MAX_TASKS_PER_SESSION}"
                    " tasks. Start a new session to add more."
                ),
            )
        except StoreFull:
            refusal = "store_full", "I cannot keep anything new right now. Try again later."
        if refusal is None:
            reply = _reply_for_task(intent, task, zone)
        else:
            code, reply = refusal
            logger.info("task_refused", session_id=session_id, code=code)
    elif intent.name == "list":
        reply = await _list_reply(session_id, zone)
    elif intent.name == "mark_done":
        item = await _find_item(session_id, intent.text, types=settings.TASK_TYPES_UNTIL_DONE)
        reply = f"{intent.text.capitalize()} is not on your list."
        if item is not None:
            with contextlib.suppress(IllegalTransition, TaskNotFound):
                # off the list now; its handler completes it (done) in a runner
                task = await atask_transition(
                    task_id=item["id"], to="running", allowed_from=("queued",)
                )
                await atask_dispatch(task_id=item["id"], claimed=True)
                reply = f"Marked {selectors.task_payload(record=item).get('text', '')} as done."
    elif intent.name == "remove":
        item = await _find_item(session_id, intent.text)
        reply = f"{intent.text.capitalize()} is not on your list."
        if item is not None:
            with contextlib.suppress(IllegalTransition):
                task = await atask_cancel(task_id=item["id"])
                removed = selectors.task_payload(record=item).get("text", "")
                reply = f"Removed {removed} from your list."
    elif intent.name == "cancel_last":
        reply = "There is no pending task to cancel."
        for t in reversed(await selectors.atask_list(session_id=session_id)):
            if t["state"] in PENDING:
                try:
                    task = await atask_cancel(task_id=t["id"])
                except IllegalTransition:
                    continue
                reply = f"Cancelled: {selectors.task_payload(record=t).get('text', '')}."
                break
    elif intent.name == "confirm":
        reply = "There is nothing to confirm."
        for t in reversed(await selectors.atask_list(session_id=session_id, state="draft")):
            try:
                task = await atask_confirm(task_id=t["id"])
            except IllegalTransition:
                continue
            reply = "Confirmed."
            break
    else:
        reply = "Sorry, I did not understand that."
    reply = _clip(reply, settings.MAX_REPLY_CHARS)
    event = {"type": "response", "text": reply, "utterance_id": utterance_id, "intent": intent.name}
    if code is not None:
        event["code"] = code
    await session_aemit(session_id=session_id, event=event)
    await asession_message_add(session_id=session_id, role="assistant", text=reply)
    return {"intent": intent.name, "task": task}


# sync entries (core.sync.blocking), for code off the event loop: operators' pages, tests ------
task_create = blocking(atask_create)
task_transition = blocking(atask_transition)
task_confirm = blocking(atask_confirm)
task_cancel = blocking(atask_cancel)
task_expire_draft = blocking(atask_expire_draft)
task_dispatch = blocking(atask_dispatch)
task_run = blocking(atask_run)
reminder_announce = blocking(areminder_announce)
utterance_handle = blocking(autterance_handle)

"""Tasks: the state machine, the REST endpoints, handlers, and reminders coming due."""

import time

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from core import clock
from tasks_app import scheduler, selectors, services, states
from tests.conftest import aget, apost, connect, create_session, hold, receive_until

pytestmark = pytest.mark.django_db(databases=[])


def _wait_for_state(task_id: str, state: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = selectors.task_get(task_id=task_id)
        if record["state"] == state:
            return record
        time.sleep(0.02)
    raise AssertionError(f"task never reached {state}: {record['state']}")


def _task(session_id: str, task_type: str = "todo", **payload) -> dict:
    return services.task_create(
        session_id=session_id, task_type=task_type, payload={"text": "x", **payload}
    )


# the state machine -----------------------------------------------------------------------------
# The expectations are written out here from docs/tasks.md ("States") and CONTRACT section 1,
# not read from tasks_app/states.py: a wrong table in the code must fail these tests.
CONTRACT_STATES = ("draft", "queued", "running", "completed", "failed", "cancelled", "expired")
LEGAL = [
    ("draft", "queued"),  # confirm
    ("draft", "cancelled"),
    ("draft", "expired"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "expired"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
]  # completed, failed, cancelled, expired: terminal, nothing leaves them
ILLEGAL = [(s, t) for s in CONTRACT_STATES for t in CONTRACT_STATES if (s, t) not in LEGAL]


def test_the_states_are_the_contracts():
    assert set(states.STATES) == set(CONTRACT_STATES)
    assert set(states.PENDING) == {"draft", "queued", "running"}
    assert set(states.TERMINAL) == {"completed", "failed", "cancelled", "expired"}


@pytest.fixture
def no_runner(monkeypatch):
    """No runner takes the queued note: the test alone moves its state (a runner finishing it
    between the test's steps would be a second actor)."""

    async def stays_queued(*, task_id: str, claimed: bool = False) -> None:
        return None

    monkeypatch.setattr(services, "atask_dispatch", stays_queued)


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_every_legal_move_is_allowed(api, no_runner, source, target):
    session = hold(api, create_session(api))
    record = _task(session["id"], "note")
    services.store.task_update(task_id=record["id"], fields={"state": source})
    moved = services.task_transition(task_id=record["id"], to=target)
    assert moved["state"] == target


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_every_illegal_move_is_refused_with_409(api, no_runner, source, target):
    session = hold(api, create_session(api))
    record = _task(session["id"], "note")
    services.store.task_update(task_id=record["id"], fields={"state": source})
    with pytest.raises(services.IllegalTransition) as info:
        services.task_transition(task_id=record["id"], to=target)
    assert info.value.status_code == 409
    assert selectors.task_get(task_id=record["id"])["state"] == source


def test_terminal_states_have_no_way_out():
    for state in ("completed", "failed", "cancelled", "expired"):
        assert states.TRANSITIONS[state] == ()


# REST --------------------------------------------------------------------------------------------
def test_a_todo_stays_open_until_marked_done_then_its_result_is_readable(backend, api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "todo", text="buy milk")
    time.sleep(0.3)
    assert api.get(f"/api/v1/tasks/{record['id']}").json()["state"] == "queued"
    assert api.get(f"/api/v1/tasks/{record['id']}/result").status_code == 409
    services.utterance_handle(
        session_id=session["id"], text="mark buy milk as done", utterance_id="u"
    )
    _wait_for_state(record["id"], "completed")
    body = api.get(f"/api/v1/tasks/{record['id']}").json()
    assert body["state"] == "completed" and body["result_available"] is True
    assert set(body) == {
        "id", "session_id", "type", "state", "created_at", "updated_at",
        "result_available", "error_message",
    }  # fmt: skip
    assert api.get(f"/api/v1/tasks/{record['id']}/result").json() == {
        "text": "buy milk",
        "done": True,
    }


def test_a_result_is_409_while_the_task_has_none(api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "reminder", due_at=clock.now() + 60)
    response = api.get(f"/api/v1/tasks/{record['id']}/result")
    assert response.status_code == 409
    assert "draft" in response.json()["detail"]


def test_confirm_queues_a_draft_and_a_second_confirm_is_409(api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "reminder", due_at=clock.now() + 60)
    assert record["state"] == "draft"
    response = api.post(f"/api/v1/tasks/{record['id']}/confirm")
    assert response.status_code == 200 and response.json()["state"] == "queued"
    clock.advance(61)  # a reminder runs when it falls due
    scheduler.run_due()
    _wait_for_state(record["id"], "completed")
    assert api.post(f"/api/v1/tasks/{record['id']}/confirm").status_code == 409


def test_cancel_works_while_pending_and_is_409_after(api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "reminder", due_at=clock.now() + 60)
    assert api.post(f"/api/v1/tasks/{record['id']}/cancel").json()["state"] == "cancelled"
    assert api.post(f"/api/v1/tasks/{record['id']}/cancel").status_code == 409
    assert api.post(f"/api/v1/tasks/{record['id']}/confirm").status_code == 409


def test_a_draft_confirmed_too_late_expires(api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "reminder", due_at=clock.now() + 60)
    clock.advance(301)
    assert api.post(f"/api/v1/tasks/{record['id']}/confirm").status_code == 409
    assert api.get(f"/api/v1/tasks/{record['id']}").json()["state"] == "expired"


def test_the_session_task_list_filters_by_state(api):
    session = hold(api, create_session(api))
    draft = _task(session["id"], "reminder", due_at=clock.now() + 60)
    done = _task(session["id"], "note")
    _wait_for_state(done["id"], "completed")
    listing = api.get(f"/api/v1/sessions/{session['id']}/tasks").json()
    assert [t["id"] for t in listing] == [draft["id"], done["id"]]
    drafts = api.get(f"/api/v1/sessions/{session['id']}/tasks?state=draft").json()
    assert [t["id"] for t in drafts] == [draft["id"]]


def test_tasks_outlive_their_session_until_their_own_ttl(backend, api):
    session = hold(api, create_session(api))
    record = _task(session["id"], "note", text="keep me")
    _wait_for_state(record["id"], "completed")
    api.delete(f"/api/v1/sessions/{session['id']}")
    assert api.get(f"/api/v1/tasks/{record['id']}").status_code == 200
    assert api.get(f"/api/v1/tasks/{record['id']}/result").json() == {"text": "keep me"}
    assert api.get(f"/api/v1/sessions/{session['id']}/tasks").status_code == 404


# handlers ----------------------------------------------------------------------------------------
def exploding_handler(*, task, payload):
    raise RuntimeError(f"secret user text: {payload['text']}")


def test_a_failing_handler_leaves_the_task_failed_without_pii(api):
    handlers = {"note": "tests.test_tasks.exploding_handler"}
    with override_settings(TASK_HANDLERS=handlers):
        session = hold(api, create_session(api))
        record = _task(session["id"], "note", text="my bank pin is 1234")
        failed = _wait_for_state(record["id"], "failed")
    assert failed["error_message"] == "Handler failed (RuntimeError)"
    assert "1234" not in api.get(f"/api/v1/tasks/{record['id']}").content.decode()
    assert api.get(f"/api/v1/sessions/{session['id']}").status_code == 200


async def test_a_failing_handler_does_not_harm_the_session_socket(api):
    with override_settings(TASK_HANDLERS={"note": "tests.test_tasks.exploding_handler"}):
        session = hold(api, create_session(api))
        comm, _ = await connect(session)
        await comm.send_json_to({"type": "text", "text": "take a note eggs are off"})
        events = await receive_until(comm, "task.updated")
        while events[-1]["task"]["state"] != "failed":
            events += await receive_until(comm, "task.updated")
        await comm.send_json_to({"type": "ping"})
        assert (await receive_until(comm, "pong"))[-1]["type"] == "pong"
        await comm.disconnect()


# utterances over the socket ----------------------------------------------------------------------
async def _say(comm, text: str) -> list[dict]:
    await comm.send_json_to({"type": "text", "text": text})
    return await receive_until(comm, "response")


async def test_each_intent_over_the_socket_has_its_outcome(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)

    events = await _say(comm, "remind me to call mom in 5 minutes")
    reminder = next(e for e in events if e["type"] == "task.created")["task"]
    assert (reminder["type"], reminder["state"]) == ("reminder", "draft")
    assert "confirm" in events[-1]["text"]

    events = await _say(comm, "create a task to fix the bike")
    assert next(e for e in events if e["type"] == "task.created")["task"]["type"] == "todo"

    events = await _say(comm, "take a note the door code is 4 2 1")
    assert next(e for e in events if e["type"] == "task.created")["task"]["type"] == "note"

    events = await _say(comm, "what is on my list")
    assert "call mom" in events[-1]["text"]

    events = await _say(comm, "confirm")
    assert events[-1]["text"] == "Confirmed."
    assert any(
        e["type"] == "task.updated"
        and e["task"]["id"] == reminder["id"]
        and e["task"]["state"] == "queued"
        for e in events
    )

    events = await _say(comm, "sing me a song")
    assert events[-1]["intent"] == "unknown"
    assert not any(e["type"] == "task.created" for e in events)
    await comm.disconnect()


async def test_cancel_the_last_task_cancels_the_newest_pending_one(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await _say(comm, "remind me to water the plants tomorrow")
    events = await _say(comm, "remind me to call the dentist at 3 pm")
    newest = next(e for e in events if e["type"] == "task.created")["task"]
    events = await _say(comm, "cancel the last task")
    updated = [e for e in events if e["type"] == "task.updated"]
    assert updated and updated[-1]["task"]["id"] == newest["id"]
    assert updated[-1]["task"]["state"] == "cancelled"
    listing = (await aget(api, f"/api/v1/sessions/{session['id']}/tasks?state=draft")).json()
    assert len(listing) == 1 and listing[0]["id"] != newest["id"]
    await comm.disconnect()


async def test_a_reminder_coming_due_on_a_live_session_is_said(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    events = await _say(comm, "remind me to stretch in 10 minutes")
    task = next(e for e in events if e["type"] == "task.created")["task"]
    await apost(api, f"/api/v1/tasks/{task['id']}/confirm")
    event = (await receive_until(comm, "task.updated"))[-1]
    assert event["task"]["state"] == "queued", "it waits for its time"
    assert await comm.receive_nothing(timeout=0.3)
    clock.advance(10 * 60 + 1)
    assert await sync_to_async(scheduler.run_due, thread_sensitive=False)() == 1
    events = await receive_until(comm, "response")
    states = [e["task"]["state"] for e in events if e["type"] == "task.updated"]
    assert states == ["running", "completed"]
    said = events[-1]
    assert said["text"] == "Reminder: stretch" and said["task_id"] == task["id"]
    clock.advance(60)
    assert await sync_to_async(scheduler.run_due, thread_sensitive=False)() == 0
    assert await comm.receive_nothing(timeout=0.3), "a reminder is said once"
    await comm.disconnect()


async def test_a_draft_left_unconfirmed_expires_on_a_live_session(api):
    with override_settings(DRAFT_TTL_SECONDS=0.2):
        session = hold(api, create_session(api))
        comm, _ = await connect(session)
        await _say(comm, "remind me to stretch in 10 minutes")
        event = (await receive_until(comm, "task.updated"))[-1]
        assert event["task"]["state"] == "expired"
        await comm.disconnect()


async def test_task_events_made_over_rest_reach_the_socket(backend, api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    events = await _say(comm, "remind me to stretch in 10 minutes")
    task = next(e for e in events if e["type"] == "task.created")["task"]
    response = await apost(api, f"/api/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    event = (await receive_until(comm, "task.updated"))[-1]
    assert event["task"]["state"] == "cancelled"
    await comm.disconnect()

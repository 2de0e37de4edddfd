"""Sessions have a time zone: times are read and spoken in it (CONTRACT sections 1, 2, 2a)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async

from core import clock
from tasks_app import scheduler
from tests.conftest import aget, bearer, connect, create_session, hold, receive_until

pytestmark = pytest.mark.django_db(databases=[])

NEW_YORK = ZoneInfo("America/New_York")


def _at(hour: int, minute: int = 0) -> None:
    """Move the service's clock to today's ``hour:minute`` in New York."""
    now = datetime.fromtimestamp(clock.now(), NEW_YORK)
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    clock.advance(target.timestamp() - clock.now())


async def _say(comm, text: str) -> list[dict]:
    await comm.send_json_to({"type": "text", "text": text})
    return await receive_until(comm, "response")


def test_a_session_takes_an_iana_time_zone_at_create_and_shows_it(api, backend):
    session = hold(api, create_session(api, timezone="America/New_York"))
    assert session["timezone"] == "America/New_York"
    assert api.get(f"/api/v1/sessions/{session['id']}").json()["timezone"] == "America/New_York"
    assert create_session(api, namespace_id="plain")["timezone"] == "UTC"


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "europe/berlin", "", "../etc/passwd", 5, None]
)
def test_an_unknown_time_zone_is_a_400_field_error(api, zone):
    response = api.post(
        "/api/v1/sessions",
        {"namespace_id": "tz", "key_hash": "sha256:" + "ab" * 32, "timezone": zone},
        format="json",
    )
    assert response.status_code == 400
    assert "timezone" in response.json()


async def test_a_reminder_is_read_and_spoken_in_the_sessions_zone(api, backend):
    _at(10)
    session = hold(api, create_session(api, timezone="America/New_York"))
    comm, ready = await connect(session)
    assert ready["timezone"] == "America/New_York"
    events = await _say(comm, "remind me at 3 pm to call the plumber")
    task = next(e for e in events if e["type"] == "task.created")["task"]
    assert (
        events[-1]["text"] == "Reminder to call the plumber at 3 PM today. Say confirm to set it."
    )
    await _say(comm, "confirm")
    _at(15, 1)
    assert await sync_to_async(scheduler.run_due, thread_sensitive=False)() == 1
    said = (await receive_until(comm, "response"))[-1]
    assert said["text"] == "Reminder: call the plumber"
    result = (await aget(api, f"/api/v1/tasks/{task['id']}/result")).json()
    due = datetime.fromisoformat(result["due_at"])
    assert due.utcoffset() == NEW_YORK.utcoffset(due.replace(tzinfo=None))
    assert (due.hour, due.minute) == (15, 0)
    assert result["timezone"] == "America/New_York"
    await comm.disconnect()


async def test_session_update_changes_the_zone_and_refuses_an_unknown_one(api, backend):
    _at(10)
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    await comm.send_json_to({"type": "session.update", "timezone": "Nowhere/Atlantis"})
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "bad_timezone")
    await comm.send_json_to({"type": "session.update", "timezone": "America/New_York"})
    ready = await comm.receive_json_from(timeout=5)
    assert (ready["type"], ready["timezone"]) == ("session.ready", "America/New_York")
    events = await _say(comm, "remind me to stretch at 6 pm")
    assert "at 6 PM today" in events[-1]["text"]
    body = (await aget(api, f"/api/v1/sessions/{session['id']}")).json()
    assert body["timezone"] == "America/New_York"
    await comm.disconnect()


async def test_a_to_do_stays_on_the_list_until_it_is_done_or_removed(api, backend):
    _at(10)
    session = hold(api, create_session(api, timezone="America/New_York"))
    comm, _ = await connect(session)
    assert (await _say(comm, "add eggs to my list"))[-1]["text"] == "Added eggs to your list."
    await _say(comm, "add buy bread to my list")
    await _say(comm, "remind me tomorrow at 9 am to call mom")
    await _say(comm, "confirm")
    listing = (await _say(comm, "what is on my list"))[-1]["text"]
    assert listing == (
        "You have 3 on your list: eggs; buy bread; a reminder to call mom at 9 AM tomorrow."
    )
    assert (await _say(comm, "mark eggs as done"))[-1]["text"] == "Marked eggs as done."
    assert (await _say(comm, "remove bread from my list"))[-1]["text"] == (
        "Removed buy bread from your list."
    )
    assert (await _say(comm, "what is on my list"))[-1]["text"] == (
        "You have 1 on your list: a reminder to call mom at 9 AM tomorrow."
    )
    assert (await _say(comm, "mark milk as done"))[-1]["text"] == "Milk is not on your list."
    tasks = (await aget(api, f"/api/v1/sessions/{session['id']}/tasks")).json()
    assert [t["state"] for t in tasks] == ["completed", "cancelled", "queued"]
    await comm.disconnect()


async def test_a_past_or_absurd_time_gets_a_polite_reply_and_no_task(api):
    session = hold(api, create_session(api))
    comm, _ = await connect(session)
    past = await _say(comm, "remind me to call mom yesterday")
    assert past[-1]["text"].startswith("That time has already passed")
    far = await _say(comm, "remind me to pay rent in 400 years")
    assert far[-1]["text"].startswith("That time is too far away")
    assert not [e for e in past + far if e["type"] == "task.created"]
    tasks = await aget(api, f"/api/v1/sessions/{session['id']}/tasks")
    assert tasks.json() == []
    await comm.disconnect()


async def test_a_task_made_over_rest_cannot_be_confirmed_by_another_sessions_token(api):
    owner = create_session(api, namespace_id="owner")
    other = create_session(api, namespace_id="other")
    comm, _ = await connect(owner)
    events = await _say(comm, "remind me to stretch in 10 minutes")
    task = next(e for e in events if e["type"] == "task.created")["task"]
    refused = await sync_to_async(api.post, thread_sensitive=False)(
        f"/api/v1/tasks/{task['id']}/confirm", **bearer(other)
    )
    assert refused.status_code == 401
    held = await sync_to_async(api.post, thread_sensitive=False)(
        f"/api/v1/tasks/{task['id']}/confirm", **bearer(owner)
    )
    assert held.status_code == 200 and held.json()["state"] == "queued"
    await comm.disconnect()


ISSUE_PHRASES = [
    ("remind me at 3 pm to call the plumber", "call the plumber", "3 PM today"),
    ("remind me to call the plumber next friday at noon", "call the plumber", "noon on Fri, Dec 4"),
    ("remind me in half an hour to stretch", "stretch", "10:30 AM today"),
    ("remind me on monday to call mom", "call mom", "9 AM on Mon, Nov 30"),
    ("remind me the day after tomorrow to pay rent", "pay rent", "9 AM on Sun, Nov 29"),
    ("remind me at quarter past five to feed the cat", "feed the cat", "5:15 PM today"),
]


@pytest.mark.parametrize(("say", "text", "when"), ISSUE_PHRASES)
async def test_the_issues_time_phrases_work_over_the_socket(api, say, text, when):
    """Said on Friday 27 November 2026 at 10:00 in New York (worked out on a calendar)."""
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=NEW_YORK).timestamp()
    clock.advance(friday - clock.now())
    comm, _ = await connect(hold(api, create_session(api, timezone="America/New_York")))
    events = await _say(comm, say)
    assert events[-1]["text"] == f"Reminder to {text} at {when}. Say confirm to set it."
    await comm.disconnect()

"""Quotas: one session cannot fill the store, and its reads cost the same however big it is.

Each runs on local memory and on Redis (the ``backend`` fixture).
"""

import json
import time
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from core import clock, kv
from core.crypto import seal
from sessions_app import selectors as session_selectors
from sessions_app import services as session_services
from sessions_app import store as session_store
from tasks_app import selectors, services, store
from tests.conftest import KEY_HASH, bearer, connect, create_session, receive_until

pytestmark = pytest.mark.django_db(databases=[])


async def _no_dispatch(*, task_id: str, claimed: bool = False) -> None:
    """No runner: the task stays queued."""


def _create_session(namespace_id: str = "user-1") -> dict:
    return session_services.session_create(
        namespace_id=namespace_id, key_hash=KEY_HASH, device_type="web", client_version=None
    )


def _as(session: dict) -> dict:
    """The holder's header (CONTRACT 1b), for the test client's keyword arguments."""
    return bearer(session)


def _add_tasks(
    session_id: str, n: int, *, text: str = "eggs", state: str = "draft", task_type="reminder"
) -> None:
    """Tasks straight into the store (as task_create writes them), fast. (A to-do on the
    user's list is ``task_type="todo"`` in ``state="queued"``.)"""
    now = clock.now()
    payload = seal(session_id, json.dumps({"text": text}))
    with override_settings(MAX_TASKS_PER_SESSION=10_000):
        for i in range(n):
            task_id = str(uuid.uuid4())
            record = {
                "id": task_id, "session_id": session_id, "type": task_type, "state": state,
                "created_at": now + i, "updated_at": now + i, "error_message": "",
                "result": "", "payload": payload, "announced": "0",
            }  # fmt: skip
            store.task_put(task_id=task_id, record=record)
            assert store.session_index_add(
                session_id=session_id, task_id=task_id, created_at=now + i, pending=True
            )


class RoundTrips:
    """Counts trips to the store: Redis round trips (a pipeline or a script is one), or
    calls of the local-memory primitives."""

    def __init__(self, monkeypatch):
        self.n = 0
        sync_do, async_do = kv.RedisKV._do, kv.AsyncRedisKV._do

        def count_sync(this, *args, **kwargs):
            self.n += 1
            return sync_do(this, *args, **kwargs)

        async def count_async(this, *args, **kwargs):
            self.n += 1
            return await async_do(this, *args, **kwargs)

        monkeypatch.setattr(kv.RedisKV, "_do", count_sync)
        monkeypatch.setattr(kv.AsyncRedisKV, "_do", count_async)
        local = kv.get_kv()
        if isinstance(local, kv.LocalKV):
            for name in [n for n in dir(kv.LocalKV) if not n.startswith("_")]:
                method = getattr(local, name)
                if callable(method):
                    monkeypatch.setattr(local, name, self._counted(method))

    def _counted(self, method):
        def call(*args, **kwargs):
            self.n += 1
            return method(*args, **kwargs)

        return call

    def of(self, fn):
        before = self.n
        out = fn()
        return self.n - before, out


def _redis_commands(client, fn) -> int:
    before = client.info("commandstats")
    fn()
    after = client.info("commandstats")
    return sum(
        v["calls"] - before.get(k, {"calls": 0})["calls"]
        for k, v in after.items()
        if k != "cmdstat_info"
    )


# reads that do not grow with the tasks ------------------------------------------------------


def test_a_session_get_costs_the_same_with_10_tasks_as_with_3000(backend, api, monkeypatch):
    small, big = _create_session("small"), _create_session("big")
    _add_tasks(small["id"], 10)
    _add_tasks(big["id"], 3000)
    trips = RoundTrips(monkeypatch)

    def get(session):
        response = api.get(f"/api/v1/sessions/{session['id']}", **_as(session))
        assert response.status_code == 200
        return response.json()

    small_trips, small_body = trips.of(lambda: get(small))
    big_trips, big_body = trips.of(lambda: get(big))
    assert (small_body["pending_tasks_count"], big_body["pending_tasks_count"]) == (10, 3000)
    assert big_trips == small_trips <= 3
    stats_small, _ = trips.of(
        lambda: api.get(f"/api/v1/sessions/{small['id']}/stats", **_as(small))
    )
    stats_big, _ = trips.of(lambda: api.get(f"/api/v1/sessions/{big['id']}/stats", **_as(big)))
    assert stats_big == stats_small <= 3
    if backend is not None:  # and Redis itself sees the same number of commands
        small_cmds = _redis_commands(backend, lambda: get(small))
        big_cmds = _redis_commands(backend, lambda: get(big))
        assert big_cmds == small_cmds


def test_the_task_list_reads_one_page_in_a_fixed_number_of_round_trips(backend, api, monkeypatch):
    small, big = _create_session("small"), _create_session("big")
    _add_tasks(small["id"], 150)
    _add_tasks(big["id"], 3000)
    trips = RoundTrips(monkeypatch)

    def page(session, query=""):
        response = api.get(f"/api/v1/sessions/{session['id']}/tasks{query}", **_as(session))
        assert response.status_code == 200, response.content
        return response.json()

    small_trips, small_page = trips.of(lambda: page(small))
    big_trips, big_page = trips.of(lambda: page(big))
    assert len(small_page) == len(big_page) == 100  # the default page
    assert big_trips == small_trips <= 4
    # pages are oldest first and follow each other
    whole = store.session_index(session_id=big["id"])
    assert [t["id"] for t in big_page] == whole[:100]
    second = page(big, "?offset=100&limit=500")
    assert [t["id"] for t in second] == whole[100:600]
    assert page(big, "?offset=2990&limit=500") == [
        services.task_response(t) for t in selectors.task_list(session_id=big["id"])[2990:]
    ]


def test_the_operators_task_listing_reads_each_page_of_tasks_in_one_round_trip(
    backend, monkeypatch
):
    session_id = _create_session()["id"]
    _add_tasks(session_id, 600)
    for task_id in store.session_index(session_id=session_id):  # the operators' index
        store.task_list_add(task_id=task_id, created_at=clock.now())
    trips = RoundTrips(monkeypatch)
    used, rows = trips.of(lambda: selectors.task_recent(limit=500))
    assert len(rows) == 500
    assert used <= 6  # three pages of 200: their ids and their records


def test_the_task_list_page_size_is_bounded_and_checked(api):
    session = create_session(api)
    for query in ("?limit=501", "?limit=0", "?offset=-1", "?limit=x"):
        response = api.get(f"/api/v1/sessions/{session['id']}/tasks{query}", **_as(session))
        assert response.status_code == 400, query
    ok = api.get(f"/api/v1/sessions/{session['id']}/tasks?limit=500&offset=0", **_as(session))
    assert ok.status_code == 200 and ok.json() == []


def test_a_state_filter_pages_among_the_tasks_in_that_state(backend):
    session = _create_session()
    _add_tasks(session["id"], 5, state="draft")
    _add_tasks(session["id"], 5, state="completed")
    drafts = selectors.task_list(session_id=session["id"], state="draft")
    assert len(drafts) == 5
    page = selectors.task_list(session_id=session["id"], state="completed", offset=1, limit=2)
    completed = selectors.task_list(session_id=session["id"], state="completed")
    assert [t["id"] for t in page] == [t["id"] for t in completed[1:3]]


# the pending count kept with the index --------------------------------------------------------


def test_the_pending_count_follows_every_state_change(backend, monkeypatch):
    monkeypatch.setattr(services, "atask_dispatch", _no_dispatch)
    session_id = _create_session()["id"]

    def create(task_type):
        return services.task_create(
            session_id=session_id, task_type=task_type, payload={"text": "x"}
        )["id"]

    def counted():
        listed = selectors.task_list(session_id=session_id)
        by_listing = sum(1 for t in listed if t["state"] in ("draft", "queued", "running"))
        kept = store.session_pending_count(session_id=session_id)  # kept with the index
        assert kept == selectors.task_pending_count(session_id=session_id) == by_listing
        return kept

    draft, todo, note, late = create("reminder"), create("todo"), create("note"), create("reminder")
    assert counted() == 4
    services.task_confirm(task_id=draft)  # draft -> queued: still pending
    assert counted() == 4
    services.task_run(task_id=draft)  # queued -> running -> completed
    assert counted() == 3
    services.task_cancel(task_id=todo)
    assert counted() == 2
    with pytest.raises(services.IllegalTransition):
        services.task_cancel(task_id=todo)  # a refused move changes nothing
    assert counted() == 2
    services.task_transition(task_id=note, to="running", allowed_from=("queued",))
    services.task_transition(task_id=note, to="failed", allowed_from=("running",))
    services.task_expire_draft(task_id=late)
    assert counted() == 0


# the cap on tasks, on a task's text and on a reply -------------------------------------------


def _replies(session_id: str) -> list[dict]:
    events, _ = session_selectors.session_replay(session_id=session_id, after_seq=0)
    return [e for e in events if e["type"] == "response"]


def test_the_task_past_the_cap_is_refused_with_a_clear_reply(backend, monkeypatch):
    monkeypatch.setattr(services, "atask_dispatch", _no_dispatch)
    session_id = _create_session()["id"]
    with override_settings(MAX_TASKS_PER_SESSION=3):
        for i in range(3):
            out = services.utterance_handle(
                session_id=session_id, text=f"add item {i} to my list", utterance_id=None
            )
            assert out["task"] is not None
        out = services.utterance_handle(
            session_id=session_id, text="add one more to my list", utterance_id=None
        )
    assert out["task"] is None
    reply = _replies(session_id)[-1]
    assert reply["code"] == "too_many_tasks"
    assert "full" in reply["text"] and "3" in reply["text"]
    assert len(store.session_index(session_id=session_id)) == 3
    assert selectors.task_pending_count(session_id=session_id) == 3
    assert len(store.task_page(offset=0, limit=100)) == 3  # the refused one left no record


def test_the_cap_holds_under_concurrent_creates(backend, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(services, "atask_dispatch", _no_dispatch)
    session_id = _create_session()["id"]

    def attempt(i):
        try:
            services.task_create(session_id=session_id, task_type="note", payload={"text": i})
        except services.TooManyTasks:
            return False
        return True

    with override_settings(MAX_TASKS_PER_SESSION=5), ThreadPoolExecutor(8) as pool:
        made = list(pool.map(attempt, range(20)))
    assert made.count(True) == 5
    assert len(store.session_index(session_id=session_id)) == 5
    assert selectors.task_pending_count(session_id=session_id) == 5


def test_a_task_text_over_the_limit_is_refused_and_says_the_limit(backend):
    session_id = _create_session()["id"]
    limit = settings.MAX_TASK_TEXT_CHARS
    out = services.utterance_handle(
        session_id=session_id, text="take a note " + "x" * (limit + 1), utterance_id=None
    )
    assert out["task"] is None
    reply = _replies(session_id)[-1]
    assert reply["code"] == "task_text_too_long" and str(limit) in reply["text"]
    assert store.session_index(session_id=session_id) == []
    ok = services.utterance_handle(
        session_id=session_id, text="take a note " + "x" * limit, utterance_id=None
    )
    assert ok["task"] is not None


def test_the_list_reply_reads_the_first_items_and_says_how_many_more(backend):
    session_id = _create_session()["id"]
    _add_tasks(session_id, 200, text="y" * 500, task_type="todo", state="queued")
    services.utterance_handle(session_id=session_id, text="what is on my list", utterance_id=None)
    reply = _replies(session_id)[-1]["text"]
    assert len(reply) <= settings.MAX_REPLY_CHARS
    assert reply.startswith("You have 200 on your list: ")
    assert reply.endswith(" more.")
    with override_settings(LIST_REPLY_ITEMS=3):
        short = _create_session("short")["id"]
        _add_tasks(short, 5, text="milk", task_type="todo", state="queued")
        services.utterance_handle(session_id=short, text="what is on my list", utterance_id=None)
    assert _replies(short)[-1]["text"] == "You have 5 on your list: milk; milk; milk; and 2 more."


# byte budgets ---------------------------------------------------------------------------------


def _stored_sizes(backend, session_id: str) -> tuple[int, int]:
    """Bytes held by the replay buffer and the message history, as stored."""
    if backend is None:
        local = kv.get_kv()
        events = local.buffer_read(f"s:{session_id}:ev")
        messages = local.list_read(f"s:{session_id}:msg")
        return (
            sum(len(f"{seq} {payload}".encode()) for seq, payload in events),
            sum(len(m.encode()) for m in messages),
        )
    sizes = []
    for suffix in ("ev", "msg"):
        items = backend.lrange(f"vs-test:1:s:{session_id}:{suffix}", 0, -1)
        sizes.append(sum(len(i) for i in items))
    return sizes[0], sizes[1]


def test_buffer_and_history_stay_within_their_byte_budgets_after_100_big_list_replies(backend):
    session_id = _create_session()["id"]
    _add_tasks(session_id, 200, text="z" * 500, task_type="todo", state="queued")
    with override_settings(EVENT_BUFFER_BYTES=64 * 1024, MESSAGE_HISTORY_BYTES=32 * 1024):
        for _ in range(100):
            services.utterance_handle(
                session_id=session_id, text="what is on my list", utterance_id=None
            )
        events, history = _stored_sizes(backend, session_id)
        assert 48 * 1024 < events <= 64 * 1024
        assert 16 * 1024 < history <= 32 * 1024
        record = session_store.session_get(session_id=session_id)
        assert (int(record["ev_bytes"]), int(record["msg_bytes"])) == (events, history)
        assert int(record["lost_upto"]) > 0  # and a resume will say so
    if backend is not None:
        for suffix in ("ev", "msg"):
            used = backend.memory_usage(f"vs-test:1:s:{session_id}:{suffix}")
            assert used < 96 * 1024, (suffix, used)


def test_an_entry_larger_than_the_whole_budget_is_not_kept(backend):
    session_id = _create_session()["id"]
    with override_settings(EVENT_BUFFER_BYTES=1000, MESSAGE_HISTORY_BYTES=1000):
        session_store.event_append(session_id=session_id, payload="small", buffered=True)
        seq = session_store.event_append(session_id=session_id, payload="b" * 2000, buffered=True)
        session_store.message_append(session_id=session_id, item="m" * 2000)
    assert session_store.events_read(session_id=session_id) == []
    assert session_store.messages_read(session_id=session_id) == []
    record = session_store.session_get(session_id=session_id)
    assert record["lost_upto"] == str(seq)
    assert (record["ev_bytes"], record["msg_bytes"]) == ("0", "0")


def test_messages_for_a_session_that_is_gone_are_not_kept(backend):
    session_id = _create_session()["id"]
    session_store.session_delete(session_id=session_id)
    session_store.message_append(session_id=session_id, item=seal(session_id, "late"))
    assert session_store.messages_read(session_id=session_id) == []


async def _drain(comm) -> list[dict]:
    """Everything the socket sends until it is quiet for half a second."""
    seen = []
    while not await comm.receive_nothing(timeout=0.5):
        seen.append(await comm.receive_json_from())
    return seen


async def test_a_resume_after_the_byte_budget_dropped_events_says_events_were_lost(api):
    with override_settings(EVENT_BUFFER_BYTES=1500):
        session = create_session(api)
        comm, _ = await connect(session)
        for text in ("add eggs to my list", "add milk to my list", "add tea to my list"):
            await comm.send_json_to({"type": "text", "text": text})
            await receive_until(comm, "response")
        await _drain(comm)  # the handlers' task.updated events too
        kept = session_store.events_read(session_id=session["id"])
        assert kept and sum(len(f"{s} {p}") for s, p in kept) <= 1500
        await comm.send_json_to({"type": "session.resume", "last_seq": 0})
        answer = await _drain(comm)
        assert [e["code"] for e in answer if e["type"] == "error"] == ["events_lost"]
        # and what is still buffered is replayed, only that
        assert [e["seq"] for e in answer if e["type"] != "error"] == [s for s, _ in kept]
        await comm.disconnect()


# the embedded store: expired state is freed, a full store refuses ------------------------------


def test_expired_entries_are_freed_from_memory_without_being_read():
    local = kv.get_kv()
    start = time.time()
    with override_settings(CONNECT_WINDOW_SECONDS=30):
        for i in range(50):
            _create_session(f"ns-{i}")
    assert local.size() == 50
    local._time = lambda: start + 31  # past every one's connect window
    session_store.token_claim(nonce="any-write")  # one unrelated write sweeps
    assert local.size() == 1  # only the token just written


def test_expired_entries_freed_per_write_are_bounded_but_all_go_eventually():
    local = kv.get_kv()
    start = time.time()
    local._time = lambda: start  # the store's clock stands still while the sessions are made
    with override_settings(CONNECT_WINDOW_SECONDS=30):
        for i in range(250):
            _create_session(f"ns-{i}")
    local._time = lambda: start + 31
    session_store.token_claim(nonce="first")
    assert local.size() == 250 - local.SWEEP_BATCH + 1
    for n in range(3):
        session_store.token_claim(nonce=f"more-{n}")
    assert local.size() == 4


def test_a_full_embedded_store_answers_503_and_keeps_its_live_sessions(api):
    with override_settings(LOCAL_STORE_MAX_ENTRIES=3):
        live = [create_session(api, namespace_id=f"ns-{i}") for i in range(3)]
        response = api.post(
            "/api/v1/sessions", {"namespace_id": "one-more", "key_hash": KEY_HASH}, format="json"
        )
        assert response.status_code == 503
        assert response.json() == {"detail": "The session store is full, try again later"}
        for session in live:
            got = api.get(f"/api/v1/sessions/{session['id']}", **_as(session))
            assert got.status_code == 200 and got.json()["status"] == "created"


def test_a_full_embedded_store_frees_what_expired_before_it_refuses(api):
    local = kv.get_kv()
    with override_settings(LOCAL_STORE_MAX_ENTRIES=3, CONNECT_WINDOW_SECONDS=30):
        for i in range(3):
            create_session(api, namespace_id=f"ns-{i}")
        start = time.time()
        local._time = lambda: start + 31
        assert create_session(api, namespace_id="later")["status"] == "created"
    assert local.size() == 1


def test_a_task_on_a_full_embedded_store_is_refused_with_a_reply(monkeypatch):
    monkeypatch.setattr(services, "atask_dispatch", _no_dispatch)
    session_id = _create_session()["id"]
    session_services.session_message_add(session_id=session_id, role="user", text="hi")
    session_services.session_emit(session_id=session_id, event={"type": "response", "text": "hi"})
    with override_settings(LOCAL_STORE_MAX_ENTRIES=kv.get_kv().size()):
        out = services.utterance_handle(
            session_id=session_id, text="add eggs to my list", utterance_id=None
        )
    assert out["task"] is None
    assert _replies(session_id)[-1]["code"] == "store_full"

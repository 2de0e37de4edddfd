"""The state store and the per-namespace limit, on local memory and on Redis."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from core import clock
from core.kv import get_kv
from sessions_app import services, store
from tests.conftest import KEY_HASH, bearer, create_session, hold

pytestmark = pytest.mark.django_db(databases=[])

# the session store's names for the event stamp's counter and its lost mark
EMIT_FIELDS = {"seq_field": "seq", "lost_field": "lost_upto"}


def _create(namespace_id="user-1"):
    return services.session_create(
        namespace_id=namespace_id, key_hash=KEY_HASH, device_type="web", client_version=None
    )


def test_the_limit_allows_exactly_max_sessions_per_namespace(backend, api):
    for _ in range(5):
        create_session(api, namespace_id="full")
    response = api.post("/api/v1/sessions", {"namespace_id": "full", "key_hash": KEY_HASH})
    assert response.status_code == 429
    assert response.json() == {"detail": "Maximum 5 concurrent sessions allowed"}
    assert create_session(api, namespace_id="other")["status"] == "created"


def test_closing_a_session_frees_its_slot(backend, api):
    sessions = [create_session(api, namespace_id="ns") for _ in range(5)]
    assert (
        api.post("/api/v1/sessions", {"namespace_id": "ns", "key_hash": KEY_HASH}).status_code
        == 429
    )
    assert (
        api.delete(f"/api/v1/sessions/{sessions[0]['id']}", **bearer(sessions[0])).status_code
        == 200
    )
    assert create_session(api, namespace_id="ns")["status"] == "created"


def test_sessions_never_connected_within_the_window_free_their_slots(backend, api):
    with override_settings(CONNECT_WINDOW_SECONDS=0.2):
        for _ in range(5):
            create_session(api, namespace_id="ns")
        time.sleep(0.3)
        assert create_session(api, namespace_id="ns")["status"] == "created"


def test_expired_sessions_stop_counting_at_once(backend):
    for _ in range(5):
        record = _create("ns")
        store.slot_extend(namespace_id="ns", session_id=record["id"], until=record["expires_at"])
    with pytest.raises(services.TooManySessions):
        _create("ns")
    clock.advance(24 * 3600 + 1)
    assert _create("ns")["status"] == "created"


def test_concurrent_creates_from_many_threads_admit_exactly_the_limit(backend):
    barrier = threading.Barrier(16)

    def attempt(_):
        client = APIClient()
        barrier.wait()
        return client.post(
            "/api/v1/sessions", {"namespace_id": "race", "key_hash": KEY_HASH}, format="json"
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(attempt, range(16)))
    assert sorted(codes) == [200] * 5 + [429] * 11


def test_every_key_the_store_writes_expires(redis_backend, api):
    session = hold(api, create_session(api))
    services.session_message_add(session_id=session["id"], role="user", text="hello")
    services.session_emit(session_id=session["id"], event={"type": "response", "text": "hi"})
    keys = redis_backend.keys("*")
    assert keys
    for key in keys:
        assert redis_backend.pttl(key) > 0, key


def test_the_limit_check_cost_does_not_grow_with_stored_sessions(owned_redis):
    """The limit touches one namespace's sorted set: a fixed number of Redis commands.

    ``INFO commandstats`` counts every client's commands, so this runs on a Redis of its own.
    """
    for i in range(300):
        _create(f"filler-{i}")
    client = owned_redis
    before = client.info("commandstats")
    _create("measured")
    after = client.info("commandstats")
    calls = sum(after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after)
    # create = lease script (with the namespace's key check) + record pipeline + INFO itself;
    # a scan would be hundreds
    assert calls < 25, calls


def _round_trips(monkeypatch) -> list[int]:
    """Counts the async Redis client's round trips (a call, a script or a pipeline each)."""
    from core.kv import AsyncRedisKV

    trips = [0]
    do = AsyncRedisKV._do

    async def counted(self, step, shape=lambda reply: reply):
        trips[0] += 1
        return await do(self, step, shape)

    monkeypatch.setattr(AsyncRedisKV, "_do", counted)
    return trips


def test_creating_a_session_is_one_round_trip_to_redis(redis_backend, monkeypatch):
    """Issue 11: the limit, the record and the indexes in one step, whatever is stored."""
    _create("first")
    trips = _round_trips(monkeypatch)
    session = _create("second")
    assert trips[0] == 1
    assert store.session_get(session_id=session["id"])["status"] == "created"
    assert session["id"] in store.live_page(now=clock.now(), offset=0, limit=10)


def test_the_create_throttle_counts_in_the_same_round_trip(redis_backend, api, monkeypatch):
    with override_settings(SESSION_CREATE_RATE="2/min"):
        create_session(api, "warm-up")
        trips = _round_trips(monkeypatch)
        create_session(api, "counted")
        assert trips[0] == 1
        refused = api.post("/api/v1/sessions", {"namespace_id": "over", "key_hash": KEY_HASH})
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
        assert "throttled" in refused.json()["detail"]


def test_a_refused_create_writes_nothing(redis_backend):
    with override_settings(MAX_SESSIONS_PER_USER=1):
        _create("full")
        keys = set(redis_backend.keys())
        with pytest.raises(services.TooManySessions):
            _create("full")
        assert set(redis_backend.keys()) == keys


def test_reading_a_session_with_its_pending_count_is_one_round_trip(redis_backend, monkeypatch):
    from sessions_app import selectors

    session = _create()
    trips = _round_trips(monkeypatch)
    record, pending = selectors.session_get_with_pending(session_id=session["id"])
    assert trips[0] == 1
    assert (record["id"], pending) == (session["id"], 0)


def test_update_never_resurrects_a_deleted_session(backend):
    record = _create()
    store.session_delete(session_id=record["id"])
    assert store.session_update(session_id=record["id"], fields={"status": "connected"}) is False
    assert store.session_incr(session_id=record["id"], deltas={"message_count": 1}) is None
    assert store.session_get(session_id=record["id"]) is None


def test_tokens_can_be_claimed_only_once(backend):
    assert store.token_claim(nonce="n1") is True
    assert store.token_claim(nonce="n1") is False
    assert store.token_claim(nonce="n2") is True


def test_the_replay_buffer_is_capped_and_remembers_what_fell_out(backend):
    record = _create()
    with override_settings(EVENT_BUFFER_SIZE=3):
        for i in range(5):
            store.event_append(session_id=record["id"], payload=f"e{i}", buffered=True)
    assert [seq for seq, _ in store.events_read(session_id=record["id"])] == [3, 4, 5]
    assert store.session_get(session_id=record["id"])["lost_upto"] == "2"


def test_state_lives_in_django_caches_with_the_namespace_sealed(backend):
    record = _create()
    raw = get_kv().hash_get("s:" + record["id"])
    assert raw["namespace_id"].startswith("v1:")
    assert store.session_get(session_id=record["id"])["namespace_id"] == "user-1"


def _primitive_calls(prefix: str, now: float) -> list[tuple[str, tuple, dict]]:
    """Every primitive of core.kv, each way it can answer, on keys under ``prefix``."""
    h, lease, idx, ev, lst = (prefix + k for k in ("h", "lease", "idx", "ev", "list"))
    h2, ev2, lst2, cnt, cidx = (prefix + k for k in ("h2", "ev2", "list2", "cnt", "cidx"))
    counter = {"counter": (cnt, "pending")}
    budget_push = {"cap": 5, "ttl": 60, "max_bytes": 7}
    lease_args = {"now": now, "until": now + 60, "ttl": 60}
    create = {
        "key": prefix + "cl",
        "owner_key": prefix + "co",
        "owner": "o1",
        "limit": 1,
        **lease_args,
        "hash_key": prefix + "ch",
        "mapping": {"a": 1, "flag": False},
        "hash_ttl": 60,
        "index_key": prefix + "ci",
    }
    return [
        ("hash_create", (h, {"a": 1, "flag": True, "none": None}, 60), {}),
        ("hash_get", (h,), {}),
        ("hash_update", (h, {"a": 2}), {}),
        ("hash_update", (prefix + "missing", {"a": 2}), {}),
        ("hash_incr", (h, {"n": 3, "a": 1}), {}),
        ("hash_incr", (prefix + "missing", {"n": 1}), {}),
        ("hash_cas", (h, "a", ("3",), {"c": "x"}), {}),
        ("hash_cas", (h, "a", ("9",), {"c": "y"}), {}),
        ("hash_cas", (prefix + "missing", "a", ("3",), {}), {}),
        ("hash_fields", ([h, prefix + "missing"], "c"), {}),
        ("claim", (prefix + "claim", 60), {}),
        ("claim", (prefix + "claim", 60), {}),
        ("lease_acquire", (lease, "m1"), {"limit": 1, **lease_args}),
        ("lease_acquire", (lease, "m2"), {"limit": 1, **lease_args}),
        ("lease_extend", (lease, "m1"), {"until": now + 90, "ttl": 90}),
        ("lease_extend", (lease, "m2"), {"until": now + 90, "ttl": 90}),
        ("lease_count", (lease,), {"now": now}),
        ("lease_members", (lease,), {"now": now, "offset": 0, "limit": 10}),
        ("lease_release", (lease, "m1"), {}),
        ("lease_count", (lease,), {"now": now}),
        ("index_add", (idx, "x", 1.0, 60), {}),
        ("index_add", (idx, "y", 2.0, 60), {"drop_below": 0.5}),
        ("index_members", (idx,), {}),
        ("index_page", (idx,), {"offset": 0, "limit": 1}),
        ("emit", (h, ev), {**EMIT_FIELDS, "payload": "e1", "cap": 1, "buffered": True}),
        ("emit", (h, ev), {**EMIT_FIELDS, "payload": "e2", "cap": 1, "buffered": True}),
        ("emit", (h, ev), {**EMIT_FIELDS, "payload": "e3", "cap": 1, "buffered": False}),
        ("buffer_read", (ev,), {}),
        ("list_push", (lst, "a"), {"cap": 2, "ttl": 60}),
        ("list_push", (lst, "b"), {"cap": 2, "ttl": 60}),
        ("list_push", (lst, "c"), {"cap": 2, "ttl": 60}),
        ("list_read", (lst,), {}),
        ("hash_get_many", ([h, prefix + "missing", h],), {}),
        ("hash_get_many", ([],), {}),
        ("hash_create", (cnt, {"pending": 5}, 60), {}),
        ("hash_cas_counted", (h, "a", {"1": 1, "3": -1}, {"c": "z"}), counter),
        ("hash_cas_counted", (h, "a", {"3": -1}, {"a": "4"}), counter),
        ("hash_cas_counted", (h, "a", {"3": -1}, {}), counter),
        ("hash_cas_counted", (h, "a", {"4": 0}, {"c": "w"}), counter),
        ("hash_cas_counted", (prefix + "missing", "a", {"3": 1}, {}), counter),
        ("hash_cas_counted", (h, "a", {"4": 1}, {}), {"counter": (prefix + "gone", "n")}),
        ("hash_get", (cnt,), {}),
        ("hash_get", (prefix + "gone",), {}),
        (
            "index_add_counted",
            (cidx, "x", 2.0, 60),
            {"limit": 2, "counter_key": cnt, "deltas": {"p": 1}},
        ),
        (
            "index_add_counted",
            (cidx, "x", 2.0, 60),
            {"limit": 2, "counter_key": cnt, "deltas": {"p": 1}},
        ),
        (
            "index_add_counted",
            (cidx, "y", 1.0, 60),
            {"limit": 2, "counter_key": cnt, "deltas": {"p": 0}},
        ),
        (
            "index_add_counted",
            (cidx, "z", 3.0, 60),
            {"limit": 2, "counter_key": cnt, "deltas": {"p": 1}},
        ),
        ("hash_get", (cnt,), {}),
        ("index_range", (cidx,), {"offset": 0, "limit": None}),
        ("index_range", (cidx,), {"offset": 1, "limit": 5}),
        ("index_range", (cidx,), {"offset": 0, "limit": 1}),
        ("index_range", (prefix + "missing",), {"offset": 0, "limit": None}),
        ("hash_create", (h2, {"seq": 0}, 60), {}),
        (
            "emit",
            (h2, ev2),
            {
                **EMIT_FIELDS,
                "payload": "p" * 10,
                "cap": 10,
                "buffered": True,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        (
            "emit",
            (h2, ev2),
            {
                **EMIT_FIELDS,
                "payload": "p" * 10,
                "cap": 10,
                "buffered": True,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        (
            "emit",
            (h2, ev2),
            {
                **EMIT_FIELDS,
                "payload": "p" * 10,
                "cap": 10,
                "buffered": True,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        (
            "emit",
            (h2, ev2),
            {
                **EMIT_FIELDS,
                "payload": "q",
                "cap": 10,
                "buffered": False,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        ("buffer_read", (ev2,), {}),
        (
            "emit",
            (h2, ev2),
            {
                **EMIT_FIELDS,
                "payload": "r" * 40,
                "cap": 10,
                "buffered": True,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        ("buffer_read", (ev2,), {}),
        (
            "emit",
            (prefix + "missing", ev2),
            {
                **EMIT_FIELDS,
                "payload": "s",
                "cap": 10,
                "buffered": True,
                "max_bytes": 30,
                "tally_field": "b",
            },
        ),
        ("list_push", (lst2, "abc"), {**budget_push, "tally": (h2, "m")}),
        ("list_push", (lst2, "def"), {**budget_push, "tally": (h2, "m")}),
        ("list_push", (lst2, "ghi"), {**budget_push, "tally": (h2, "m")}),
        ("list_read", (lst2,), {}),
        ("list_push", (lst2, "j" * 8), {**budget_push, "tally": (h2, "m")}),
        ("list_read", (lst2,), {}),
        ("list_push", (lst2, "k"), {**budget_push, "tally": (prefix + "missing", "m")}),
        ("list_read", (lst2,), {}),
        ("hash_get", (h2,), {}),
        (
            "lease_acquire_create",
            (),
            {
                **create,
                "member": "s1",
            },
        ),
        (
            "lease_acquire_create",
            (),
            {
                **create,
                "member": "s2",
            },
        ),
        (
            "lease_acquire_create",
            (),
            {
                **create,
                "member": "s3",
                "owner": "o2",
                "limit": 5,
            },
        ),
        (
            "lease_acquire_create",
            (),
            {
                **create,
                "member": "s4",
                "owner": "o2",
                "limit": 5,
                "also": ("o1",),
            },
        ),
        (
            "lease_acquire_create",
            (),
            {**create, "member": "s5", "rate": (prefix + "r", "a", 1, 60)},
        ),
        (
            "lease_acquire_create",
            (),
            {**create, "member": "s6", "rate": (prefix + "r", "b", 1, 60)},
        ),
        ("hash_get", (prefix + "ch",), {}),
        ("lease_members", (prefix + "ci",), {"now": now, "offset": 0, "limit": 10}),
        ("lease_count", (prefix + "cl",), {"now": now}),
        ("hash_get_with", (prefix + "ch", [(prefix + "ch", "a"), (prefix + "missing", "x")]), {}),
        ("hash_get_with", (prefix + "missing", [(prefix + "ch", "flag")]), {}),
        ("expire", (h, 30), {}),
        ("expire", (prefix + "missing", 30), {}),
        ("ttl", (h,), {}),
        ("delete", (h, lst), {}),
        ("delete", (), {}),
        ("hash_get", (h,), {}),
        ("list_read", (lst,), {}),
        ("ping", (), {}),
    ]


def _comparable(name: str, value):
    return (value is not None and 0 < value <= 30) if name == "ttl" else value


async def test_the_async_primitives_answer_exactly_like_the_sync_ones(backend):
    from core.kv import aget_kv

    now = time.time()
    sync_kv, async_kv = get_kv(), aget_kv()
    sync_answers = [
        _comparable(name, getattr(sync_kv, name)(*args, **kwargs))
        for name, args, kwargs in _primitive_calls("sync:", now)
    ]
    async_answers = [
        _comparable(name, await getattr(async_kv, name)(*args, **kwargs))
        for name, args, kwargs in _primitive_calls("async:", now)
    ]
    assert async_answers == sync_answers
    assert sync_answers[1] == {"a": "1", "flag": "1", "none": ""}
    assert sync_answers[-6] is True  # the ttl after expire(30)


def test_local_memory_forgets_ended_leases_but_not_extended_ones():
    """On local memory nothing else drops abandoned sessions' leases, so they must not pile up."""
    kv = get_kv()
    with override_settings(CONNECT_WINDOW_SECONDS=60):
        abandoned = {_create(f"gone-{i}")["id"] for i in range(50)}
        kept = _create("kept")
        store.slot_extend(namespace_id="kept", session_id=kept["id"], until=clock.now() + 7200)
        assert len(kv._leases) == 52  # 51 namespaces and the index of live sessions
        clock.advance(120)  # past the connect window, not past kept's extended lease
        _create("new")
    members = {m for leases in kv._leases.values() for m in leases}
    assert not members & abandoned
    assert kept["id"] in members
    assert len(kv._leases) == 3  # the "kept" and "new" namespaces, and the live index


def test_local_memory_and_redis_answer_every_primitive_alike(redis_backend):
    """The two back ends are one interface: the same calls give the same answers."""
    from django.core.cache import caches

    from core.kv import LocalKV

    now = time.time()
    redis_kv, local_kv = get_kv(), LocalKV(caches["default"])
    assert not redis_kv.local
    calls = _primitive_calls("both:", now)
    on_redis = [_comparable(name, getattr(redis_kv, name)(*a, **kw)) for name, a, kw in calls]
    on_local = [_comparable(name, getattr(local_kv, name)(*a, **kw)) for name, a, kw in calls]
    for (name, args, _), r, loc in zip(calls, on_redis, on_local, strict=True):
        assert r == loc, (name, args)

"""Hypothesis throws arbitrary JSON bodies at the API: never a 500 (docs/api.md says so)."""

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import KEY_HASH, create_session

pytestmark = pytest.mark.django_db(databases=[])

ANSWERS = {200, 400, 401, 404, 409, 413, 429}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**1000)  # huge ints, still parseable
    | st.floats()  # NaN and Infinity included: Python's json reads them
    | st.text()  # any unicode, surrogates included
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
fields = st.sampled_from(["namespace_id", "key_hash", "device_type", "client_version", "timezone"])
create_like = st.dictionaries(fields, values | st.just(KEY_HASH) | st.just("user-1"), max_size=5)
nested = st.builds(
    lambda n, opener, closer: opener * n + closer * n,
    st.integers(1, 30_000),
    st.sampled_from(["[", '{"a":[']),
    st.sampled_from(["]", "]}"]),
)
bodies = st.one_of(
    values.map(json.dumps),
    create_like.map(json.dumps),
    nested,
    st.integers(4_000, 60_000).map(lambda n: "9" * n),  # past Python's 4,300 digits
    st.text(max_size=200),  # not JSON at all
    st.binary(max_size=200),  # not even UTF-8
    st.just("x" * (65 * 1024)),  # over the body limit
)


@pytest.fixture
def task_ids(api):
    from tasks_app.services import task_create

    session = create_session(api, namespace_id="fuzz")
    draft = task_create(session_id=session["id"], task_type="reminder", payload={"text": "x"})
    return [draft["id"], str(uuid.uuid4()), "not-a-uuid", "9" * 300]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    target=st.sampled_from(["create", "confirm", "cancel"]),
    which=st.integers(0, 3),
)
def test_no_json_body_on_create_confirm_or_cancel_gives_a_500(api, task_ids, body, target, which):
    path = "/api/v1/sessions"
    if target != "create":
        path = f"/api/v1/tasks/{task_ids[which]}/{target}"
    response = api.generic("POST", path, body, content_type="application/json")
    assert response.status_code in ANSWERS, (response.status_code, response.content[:300])

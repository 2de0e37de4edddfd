"""Schemathesis generates requests from the OpenAPI schema against a real daphne: no 500s."""

import pytest
import schemathesis
from hypothesis import settings

from tests.live.servers import daphne

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with daphne(
        tmp_path_factory.mktemp("schemathesis"), "api", SESSION_CREATE_RATE="100000/min"
    ) as srv:
        yield srv


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.http + "/api/schema/")


@schema.parametrize()
@settings(max_examples=25, deadline=None)
def test_no_generated_request_gets_a_server_error(case):
    response = case.call(timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:200])

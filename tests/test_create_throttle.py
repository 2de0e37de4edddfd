"""The create throttle counts the client's real address, under a key of fixed size, and no
header a client sends reaches a log line whole (issue 10, "The create throttle")."""

import secrets

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import KEY_HASH

pytestmark = pytest.mark.django_db(databases=[])

ONE_MB = 1 << 20


def _create(api, n: int, **headers):
    body = {"namespace_id": f"throttled-{n}", "key_hash": KEY_HASH}
    return api.post("/api/v1/sessions", body, format="json", **headers)


def _proxies(n: int):
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": n})


def test_the_production_settings_count_the_socket_address_not_x_forwarded_for():
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0


def test_varying_x_forwarded_for_does_not_bypass_the_throttle_without_a_proxy(backend, api):
    # The settings as deployed: NUM_PROXIES unset in the environment.
    with override_settings(SESSION_CREATE_RATE="3/min"):
        for n in range(3):
            forged = f"203.0.113.{n}"
            assert (
                _create(api, n, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forged).status_code
                == 200
            )
        refused = _create(api, 3, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
        assert refused.status_code == 429
        assert _create(api, 4, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_behind_one_proxy_each_client_in_x_forwarded_for_has_its_own_budget(backend, api):
    proxy = {"REMOTE_ADDR": "10.0.0.254"}
    with _proxies(1), override_settings(SESSION_CREATE_RATE="2/min"):
        for n in range(2):
            # What the client claims (left) is never counted; the proxy's view (right) is.
            xff = f"198.51.100.{n}, 203.0.113.1"
            assert _create(api, n, HTTP_X_FORWARDED_FOR=xff, **proxy).status_code == 200
        refused = _create(api, 2, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.1", **proxy)
        assert refused.status_code == 429
        other = _create(api, 3, HTTP_X_FORWARDED_FOR="203.0.113.2", **proxy)
        assert other.status_code == 200


def test_a_1_mb_header_makes_no_long_redis_key_and_no_long_or_revealing_log_line(
    redis_backend, api, captured_logs, recwarn
):
    marker = "hdr" + secrets.token_hex(12)
    huge = marker + "x" * ONE_MB
    with _proxies(1):
        assert _create(api, 0, HTTP_X_FORWARDED_FOR=huge).status_code == 200
        assert _create(api, 1, HTTP_X_FORWARDED_FOR="1.2.3.4, " + huge).status_code == 200
    with _proxies(0):
        assert _create(api, 2, HTTP_X_FORWARDED_FOR=huge).status_code == 200
    # A Host header that is not allowed: Django's DisallowedHost logger quotes it.
    assert _create(api, 3, HTTP_HOST=marker + "a" * ONE_MB).status_code == 400

    keys = list(redis_backend.scan_iter(count=1000))
    assert keys, "the test must have stored throttle keys"
    assert max(len(k) for k in keys) <= 100
    assert not any(marker.encode() in k for k in keys)

    lines = captured_logs.getvalue().splitlines()
    lines += [str(w.message) for w in recwarn]
    assert any("session_created" in line for line in lines), "logs must have been captured"
    assert max(len(line) for line in lines) < 4096
    assert not [line[:200] for line in lines if marker in line]

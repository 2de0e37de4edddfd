"""The service refuses to start misconfigured, with one line that says why."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start(**env: str) -> subprocess.CompletedProcess:
    ours = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "SESSION_AUTH", "LOG_FORMAT")
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    clean.update(env, DJANGO_SETTINGS_MODULE="voiceproject.settings")
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "SECRET_KEY must be set when DEBUG is off"),
        ({"SECRET_KEY": "k" * 40, "ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must not contain '*'"),
        ({"SECRET_KEY": "k" * 40, "MAX_SESSIONS_PER_USER": "many"}, "MAX_SESSIONS_PER_USER"),
        ({"SECRET_KEY": "k" * 40, "SESSION_AUTH": "maybe"}, "SESSION_AUTH must be"),
    ],
)
def test_a_misconfigured_service_refuses_to_start_with_one_line(env, says):
    result = _start(**env)
    assert result.returncode == 1
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_debug_mode_starts_without_a_secret_key():
    assert _start(DEBUG="1").returncode == 0


def test_a_configured_service_starts():
    assert _start(SECRET_KEY="k" * 40, ALLOWED_HOSTS="voice.example.com").returncode == 0


def test_sessions_open_to_anyone_with_an_id_are_announced_at_start():
    """SESSION_AUTH=off with DEBUG off: a warning at start (CONTRACT 1b)."""
    result = _start(SECRET_KEY="k" * 40, SESSION_AUTH="off")
    assert result.returncode == 0
    assert '"event": "session_auth_off"' in result.stderr
    assert '"level": "warning"' in result.stderr
    quiet = _start(SECRET_KEY="k" * 40)
    assert "session_auth_off" not in quiet.stderr

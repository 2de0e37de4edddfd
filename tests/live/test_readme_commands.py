"""The README's commands, as written, on a fresh clone, against a server started as it says.

The commands are read from README.md's ``sh`` blocks (so the test fails when the README drifts
from what works): the create ``curl`` and the ones after it, the interactive
``python -m websockets`` client with the lines the README types into it, and every
``manage.py voice_client`` line. They run in a shell whose environment is a fresh clone's:
no ``SECRET_KEY``, no ``DEBUG``, no settings module. The server is what ``make serve`` runs
(uvicorn on the embedded defaults with ``DEBUG=1``; the Makefile's own recipe would install
into the venv). The only change made to a command is the port: ``127.0.0.1:8000`` becomes the
test server's free port (``voice_client`` gets ``--url`` for it).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.live.servers import INHERITED, ROOT, base_env, serve

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

README = ROOT / "README.md"


def sh_blocks(text: str) -> list[list[str]]:
    """The ``sh`` code blocks of a Markdown text, as lists of lines."""
    return [block.splitlines() for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Shell commands (continuations joined) and the comment or ``>`` lines that follow each."""
    out: list[tuple[str, list[str]]] = []
    current = ""
    for line in lines:
        stripped = line.strip()
        if current:
            current += " " + stripped.rstrip("\\").strip()
            if not stripped.endswith("\\"):
                out.append((current, []))
                current = ""
            continue
        if not stripped:
            continue
        if stripped.startswith(("#", ">", "<")):
            if out:
                out[-1][1].append(stripped)
            continue
        if stripped.endswith("\\"):
            current = stripped.rstrip("\\").strip()
        else:
            out.append((stripped, []))
    return out


def readme_commands() -> list[tuple[str, list[str]]]:
    return [c for block in sh_blocks(README.read_text()) for c in commands(block)]


def fresh_clone_env(**extra: str) -> dict:
    """A new user's shell: PATH, HOME, the locale; nothing of this project configured."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(extra)
    return env


def _require_tools() -> None:
    """The README's shell tools; CI must have them (``.ci/run`` installs curl)."""
    missing = [t for t in ("bash", "curl", "sha256sum", "cut") if not shutil.which(t)]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the README's commands need {missing}")
    pytest.skip(f"the README's commands need {missing}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``make serve``: uvicorn on the embedded defaults with DEBUG=1 and no SECRET_KEY."""
    _require_tools()
    tmp = tmp_path_factory.mktemp("readme")
    env = {"SECRET_KEY": None, "ALLOWED_HOSTS": None, "DEBUG": "1", "LOG_LEVEL": None}
    assert "SECRET_KEY" not in base_env(**env)
    with serve(tmp, "serve", "uvicorn", **env) as srv:
        # The README shows a warm server's output, and says that a cold one's first utterance
        # comes without partials while the recognizer loads: one utterance warms it.
        warm = ".venv/bin/python manage.py voice_client tests/fixtures/audio/confirm.wav"
        warm += f" --url http://127.0.0.1:{srv.port}"
        assert _run(warm, timeout=120).returncode == 0
        yield srv


def _on(srv, command: str) -> str:
    return command.replace("127.0.0.1:8000", f"127.0.0.1:{srv.port}")


def _run(command: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=fresh_clone_env(**env),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _event_types(lines: list[str]) -> list[str]:
    """The event types that lines of JSON (or the README's comments showing them) name, in order."""
    return [m.group(1) for line in lines if (m := re.search(r'\{"type": ?"([a-z._]+)"', line))]


def test_the_readme_shows_the_commands_this_test_runs():
    found = [c for c, _ in readme_commands()]
    assert any("manage.py voice_client" in c for c in found), found
    assert any(c.startswith("curl") and "-X POST" in c and "/api/v1/sessions" in c for c in found)
    assert any(" -m websockets " in c for c in found), found


def test_the_create_curl_and_the_rest_calls_after_it(served):
    cmds = [c for c, _ in readme_commands() if c.startswith("curl")]
    create = next(c for c in cmds if "-X POST" in c and "/api/v1/sessions" in c)
    result = _run(_on(served, create))
    assert result.returncode == 0, result.stderr
    session = json.loads(result.stdout)
    assert session["status"] == "created", session
    assert session["websocket_url"].startswith(
        f"ws://127.0.0.1:{served.port}/ws/voice?session_id={session['id']}&token="
    )
    holder = {"ID": session["id"], "TOKEN": session.get("session_token", "")}
    for command in cmds[cmds.index(create) + 1 :]:
        command = re.sub(r"/sessions/ID\b", "/sessions/" + session["id"], _on(served, command))
        result = _run(command, **holder)
        assert result.returncode == 0, (command, result.stderr)
        body = json.loads(result.stdout)
        assert not (isinstance(body, dict) and "detail" in body), (command, body)
    assert body == {"status": "closed", "session_id": session["id"]}, "the last one hangs up"


def test_the_interactive_websocket_client_with_the_lines_the_readme_types(served):
    command, shown = next((c, s) for c, s in readme_commands() if " -m websockets " in c)
    create = next(c for c, _ in readme_commands() if c.startswith("curl") and "-X POST" in c)
    session = json.loads(_run(_on(served, create)).stdout)
    # the README's URL is a placeholder: the one the create answered goes in its place
    command = re.sub(r"'ws://[^']*'", shlex.quote(session["websocket_url"]), command)
    typed = [line[1:].strip() for line in shown if line.startswith(">")]
    assert typed, shown
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, env=fresh_clone_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        for n, line in enumerate(typed, start=1):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 15
            while sum('"type": "response"' in r for r in received) < n:
                assert time.monotonic() < deadline, (line, received)
                assert proc.poll() is None, received
                time.sleep(0.05)
    finally:
        proc.stdin.close()
        proc.wait(timeout=15)
        reader.join(timeout=5)
    got = _event_types(received)
    expected = _event_types([line for line in shown if line.startswith("<")])
    it = iter(got)
    assert all(t in it for t in expected), (expected, got)  # in the README's order
    replies = [json.loads(r[r.index("{") :]) for r in received if '"type": "response"' in r]
    shown_replies = [json.loads(s[1:].strip().replace("…", "")) for s in shown if "response" in s]
    for reply, said in zip(replies, [s for s in shown_replies if "text" in s], strict=False):
        assert reply["text"] == said["text"]


@pytest.mark.parametrize(
    "command", [c for c, _ in readme_commands() if "manage.py voice_client" in c] or ["none"]
)
def test_every_voice_client_line(served, command):
    assert command != "none", "the README shows no voice_client line"
    shown = next(s for c, s in readme_commands() if c == command)
    if "--url" not in command:
        command += f" --url http://127.0.0.1:{served.port}"
    result = _run(_on(served, command), timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "SECRET_KEY" not in result.stdout
    lines = result.stdout.splitlines()
    assert re.match(r"session [0-9a-f-]{36} \(created\)", lines[0]), lines[0]
    got = _event_types(lines)
    assert "session.ready" in got and "response" in got, got
    it = iter(got)
    expected = _event_types(shown)
    assert all(t in it for t in expected), (expected, got)  # what the README shows, in order


def test_runworker_still_refuses_to_start_without_a_secret_key():
    """manage.py's development default is for development commands only."""
    result = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--layer", "tasks", "voice-tasks"],
        cwd=ROOT, env=fresh_clone_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr

"""Real server processes for the live tests: daphne or uvicorn workers and a ``runworker``."""

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_HASH = "sha256:" + "ab" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a server process inherits from the pytest process: how to find programs and the locale,
# nothing else. Every setting of the service is given explicitly by the test (tests/settings.py
# sets the suite's own, a 0.05 s tick, throttles and heartbeats off, in os.environ; they must
# not leak into a server that claims to run as deployed).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "SystemRoot", "TZ")
LIVE_SECRET_KEY = "live-test-secret-key-0123456789abcdef"
LIVE_HOSTS = "127.0.0.1,localhost"


def production_env(**extra: str) -> dict:
    """The settings a deployment must give (docs/operations.md); everything else its default."""
    return {"SECRET_KEY": LIVE_SECRET_KEY, "ALLOWED_HOSTS": LIVE_HOSTS, **extra}


def base_env(**extra: str) -> dict:
    """A server process's whole environment: the inherited basics, ``production_env()``, extra.

    Nothing of the pytest process's own settings gets through; a test that wants a non-default
    setting (``SESSION_CREATE_RATE`` for many creates, a short window) passes it here.
    """
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "voiceproject.settings",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            **production_env(),
        }
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


class Server:
    def __init__(self, proc: subprocess.Popen, port: int | None, log: Path):
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, headers=None, *, token=None, timeout=10):
        """One request; with ``token``, as the session's holder (``Authorization: Bearer``)."""
        data = None if body is None else json.dumps(body).encode()
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(
            self.http + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", **auth, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def create_session(self, namespace_id: str = "live-user") -> dict:
        """The create's whole answer (with ``session_token`` once sessions have tokens)."""
        status, body = self.request(
            "POST", "/api/v1/sessions", {"namespace_id": namespace_id, "key_hash": KEY_HASH}
        )
        assert status == 200, body
        return body

    def ws_url(self, session: dict) -> str:
        url = session["websocket_url"]
        return f"ws://127.0.0.1:{self.port}" + url[url.index("/ws/voice") :]


def _wait_ready(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start: {server.log.read_text()[-2000:]}")


APP = "voiceproject.asgi:application"


def ws_max_size(env: dict) -> int:
    """The server's own frame limit: MAX_FRAME_BYTES and 4 KiB (docs/operations.md).

    A frame a little over MAX_FRAME_BYTES reaches the service, which closes with 4413 and says
    why; a larger one is refused by the server from its header (1009), never read whole.
    """
    return int(env.get("MAX_FRAME_BYTES") or 65536) + 4096


# How each server is run in production (README, docs/operations.md), on a given port, with
# the server's frame limit.
COMMANDS = {
    "daphne": lambda port, limit: ["-m", "daphne", "-v", "0", "-b", "127.0.0.1",
                                   "-p", str(port), "--websocket-max-frame-size", str(limit),
                                   "--websocket-max-message-size", str(limit), APP],
    "uvicorn": lambda port, limit: ["-m", "uvicorn", APP, "--host", "127.0.0.1",
                                    "--port", str(port), "--ws-max-size", str(limit),
                                    "--ws-per-message-deflate", "false", "--no-access-log",
                                    "--lifespan", "off"],
}  # fmt: skip


@contextlib.contextmanager
def serve(tmp_path: Path, name: str = "web", server: str = "daphne", **env: str):
    """One worker of the service under ``server`` (daphne or uvicorn), on a free port."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    environ = base_env(**env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *COMMANDS[server](port, ws_max_size(environ))],
            cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(proc, port, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(proc)


def daphne(tmp_path: Path, name: str = "web", **env: str):
    return serve(tmp_path, name, "daphne", **env)


def uvicorn(tmp_path: Path, name: str = "web", **env: str):
    return serve(tmp_path, name, "uvicorn", **env)


@contextlib.contextmanager
def runworker(tmp_path: Path, **env: str):
    log = tmp_path / "runworker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "--layer", "tasks", "voice-tasks"],
            cwd=ROOT, env=base_env(**env), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        time.sleep(1.5)
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def until(ws, predicate, timeout: float = 10) -> list[dict]:
    """Events from a websockets client up to and including the first that ``predicate`` likes."""
    seen = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        seen.append(event)
        if predicate(event):
            return seen

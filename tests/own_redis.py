"""A redis-server of the test's own, on a free port: to stop, freeze or count without
disturbing (or being disturbed by) the machine's shared Redis and the other tests on it.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis_server() -> None:
    """Skip without Debian's redis-server, unless CI/REQUIRE_REDIS says it must be there."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    reason = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("CI") or os.environ.get("REQUIRE_REDIS"):
        pytest.fail(reason)
    pytest.skip(reason)


def start_redis(port: int, directory: Path) -> subprocess.Popen:
    """A fresh, empty redis-server on ``port`` (no persistence); returns once it answers."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        )
        if ping.stdout.strip() == "PONG":
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def stop_redis(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def own_redis(directory: Path):
    """``(url, process)`` of a redis-server that only this test uses; stopped afterwards."""
    require_redis_server()
    port = free_port()
    proc = start_redis(port, directory)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop_redis(proc)

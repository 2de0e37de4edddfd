"""What every benchmark shares: a server it starts itself, tables, and saved results."""

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KEY_HASH = "sha256:" + "0" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BENCH_ENV = {
    "SECRET_KEY": "bench-secret-key-0123456789abcdef0123",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "LOG_LEVEL": "WARNING",
    "SESSION_CREATE_RATE": "1000000000/min",
    "MAX_SESSIONS_PER_USER": "100000",
    "WORKER_HEARTBEAT_SECONDS": "0",
}


def ws_max_size(env: dict) -> int:
    """The server's own frame limit: MAX_FRAME_BYTES and 4 KiB (docs/operations.md)."""
    return int(env.get("MAX_FRAME_BYTES") or 65536) + 4096


@contextlib.contextmanager
def serve(kind: str = "daphne", **env: str):
    """One server process on a free port: the project under ``daphne`` or ``uvicorn``, or the
    seed-style ``baseline``. Yields ``(host, pid)`` once it accepts connections."""
    port = free_port()
    app = "bench.baseline_app:app" if kind == "baseline" else "voiceproject.asgi:application"
    full_env = {**os.environ, **BENCH_ENV, **env}
    limit = str(ws_max_size(full_env))
    if kind == "daphne":
        cmd = [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
               "--websocket-max-frame-size", limit, "--websocket-max-message-size", limit,
               app]  # fmt: skip
    else:
        # As `make serve` runs it, for the project and the baseline alike: uvicorn picks
        # httptools and uvloop (requirements.txt), per-message deflate is off, and the
        # server refuses frames over its limit before reading them.
        cmd = [sys.executable, "-m", "uvicorn", app, "--port", str(port),
               "--ws-max-size", limit, "--ws-per-message-deflate", "false", "--lifespan", "off",
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=full_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def create_session(host: str, namespace: str, headers: dict | None = None) -> dict:
    body = json.dumps({"namespace_id": namespace, "key_hash": KEY_HASH}).encode()
    req = urllib.request.Request(
        f"http://{host}/api/v1/sessions", data=body,
        headers={"content-type": "application/json", **(headers or {})}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "| " + " | ".join("-" * w for w in widths) + " |"
    out = [
        f"\n{title}",
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        line,
    ]
    out += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in cells[1:]
    ]
    return "\n".join(out)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"machine": machine(), "when": stamp, **data}, indent=2))
    return path

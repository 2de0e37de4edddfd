"""WebSocket audio ingest against a bare FastAPI socket that only counts frames.

    python -m bench.ingest [--sockets 20] [--frames 10000] [--idle 500]
                           [--servers baseline,daphne,uvicorn]

K sockets each send 20 ms PCM16 frames as fast as they can; the figure is frames per second
until the server has counted them all (``/stats`` for the project, so the counts are the
service's own, flushed once per tick; the tick is 0.1 s for the run, so the last count is at
most that late, against several seconds of streaming). The frames are quiet noise: VAD runs on
every frame, recognition never starts. The rate limit is off for the run. Then M idle
sockets are held open on each server and its memory per socket is reported. One server
process each; the clients run in this process, without keepalive pings (on a loaded machine a
ping that waits behind 10,000 frames times out and ends the run).
"""

import asyncio
import json
import os
import sys
import time
import urllib.request

import numpy as np
import websockets

from bench.common import create_session, save, serve, table

FRAME = (np.random.default_rng(3).integers(-30, 30, 320)).astype("<i2").tobytes()
ENV = {"AUDIO_RATE_LIMIT_FACTOR": "0", "IDLE_TIMEOUT_SECONDS": "600", "SOCKET_TICK_SECONDS": "0.1"}


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(x.split()[1]) / 1024 for x in status if x.startswith("VmRSS:"))


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_TOKENS: dict[str, str] = {}  # session id -> its bearer token, for the stats reads


def _url(kind: str, host: str) -> str:
    if kind == "baseline":
        return f"ws://{host}/ws/voice"
    session = create_session(host, f"ingest-{time.monotonic_ns()}")
    _TOKENS[session["id"]] = session["session_token"]
    return f"ws://{host}" + session["websocket_url"].split(host, 1)[1]


def _counted(kind: str, host: str, sessions: list[str]) -> int:
    if kind == "baseline":
        return json.load(urllib.request.urlopen(f"http://{host}/_frames"))["count"]
    total = 0
    for sid in sessions:
        request = urllib.request.Request(
            f"http://{host}/api/v1/sessions/{sid}/stats",
            headers={"Authorization": f"Bearer {_TOKENS[sid]}"},
        )
        stats = json.load(urllib.request.urlopen(request))
        total += stats["audio_chunks_processed"]
    return total


async def ingest(kind: str, host: str, sockets: int, frames: int) -> float:
    urls = [_url(kind, host) for _ in range(sockets)]
    sessions = [u.split("session_id=")[1].split("&")[0] for u in urls if "session_id=" in u]
    conns = [await websockets.connect(u, max_queue=None, ping_interval=None) for u in urls]
    if kind != "baseline":
        for ws in conns:
            await ws.recv()

    async def pump(ws):
        for _ in range(frames):
            await ws.send(FRAME)

    start = time.monotonic()
    await asyncio.gather(*[pump(ws) for ws in conns])
    want = sockets * frames
    while await asyncio.to_thread(_counted, kind, host, sessions) < want:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    for ws in conns:
        await ws.close()
    return want / elapsed


async def idle(kind: str, host: str, pid: int, count: int) -> float:
    before = _rss_mib(pid)
    conns = []
    for _ in range(count):
        ws = await websockets.connect(_url(kind, host), ping_interval=None)
        if kind != "baseline":
            await ws.recv()
        conns.append(ws)
    await asyncio.sleep(1)
    per_socket_kib = (_rss_mib(pid) - before) * 1024 / count
    for ws in conns:
        await ws.close()
    return per_socket_kib


def main(argv: list[str]) -> None:
    def opt(name, default):
        return int(argv[argv.index(name) + 1]) if name in argv else default

    sockets, frames, idle_count = opt("--sockets", 20), opt("--frames", 10000), opt("--idle", 500)
    kinds = ["baseline", "daphne", "uvicorn"]
    if "--servers" in argv:
        wanted = argv[argv.index("--servers") + 1].split(",")
        kinds = ["baseline", *(k for k in kinds[1:] if k in wanted)]
    rows, results = [], {}
    for kind in kinds:
        with serve(kind, **ENV) as (host, pid):
            cpu = _cpu_seconds(pid)
            fps = asyncio.run(ingest(kind, host, sockets, frames))
            us_per_frame = (_cpu_seconds(pid) - cpu) * 1e6 / (sockets * frames)
            kib = asyncio.run(idle(kind, host, pid, idle_count))
        results[kind] = {"frames_per_second": fps, "server_cpu_us_per_frame": us_per_frame,
                         "kib_per_idle_socket": kib}  # fmt: skip
        base = results["baseline"]
        rows.append([kind, fps, fps / base["frames_per_second"], fps * 0.02, us_per_frame,
                     base["server_cpu_us_per_frame"] / us_per_frame, kib])  # fmt: skip
        print(f"  {kind}: {results[kind]}", flush=True)
    print(table(
        f"Audio ingest, one process each: {sockets} sockets x {frames} frames of 20 ms, "
        "VAD on, recognition off",
        ["server", "frames/s", "ratio to baseline", "real-time streams", "server CPU us/frame",
         "CPU ratio (base/this)", "KiB per idle socket"],
        rows,
    ))  # fmt: skip
    print(f"\nsaved {save('ingest', results)}")


if __name__ == "__main__":
    main(sys.argv[1:])

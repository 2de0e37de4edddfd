"""Audio ingest through ``/v1/realtime`` (OpenAI's base64 JSON appends) against ``/ws/voice``.

    python -m bench.realtime_openai [--sockets 10] [--seconds 60]

One uvicorn process, one run: K sockets each send S seconds of quiet noise as fast as they
can, in each way a client may send it; the figure is the server's CPU time per second of audio
(VAD on every frame, recognition never starts, the rate limit off), and its ratio to binary
PCM16 frames on ``/ws/voice`` in the same run. Counts are the service's own (``/stats``).
"""

import asyncio
import base64
import json
import os
import sys
import time
import urllib.request

import numpy as np
import websockets

from bench.common import machine, save, serve, table

KEY_HASH = "sha256:" + "0" * 64
ENV = {"AUDIO_RATE_LIMIT_FACTOR": "0", "IDLE_TIMEOUT_SECONDS": "600", "SOCKET_TICK_SECONDS": "0.1"}
NOISE = np.random.default_rng(3).integers(-30, 30, 48000).astype("<i2")

# way -> (path, sample rate, ms per frame, how a frame is sent)
WAYS = {
    "/ws/voice binary 16 kHz, 20 ms": ("voice", 16000, 20, "binary"),
    "/ws/voice base64 JSON 16 kHz, 20 ms": ("voice", 16000, 20, "json"),
    "/ws/voice base64 JSON 24 kHz, 20 ms": ("voice", 24000, 20, "json"),
    "/v1/realtime append 24 kHz, 20 ms": ("openai", 24000, 20, "append"),
    "/v1/realtime append 24 kHz, 100 ms": ("openai", 24000, 100, "append"),
}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _create(host: str) -> dict:
    body = {"namespace_id": f"rt-{time.monotonic_ns()}", "key_hash": KEY_HASH, "intents": False}
    request = urllib.request.Request(
        f"http://{host}/api/v1/sessions", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _processed(host: str, session: dict) -> int:
    request = urllib.request.Request(
        f"http://{host}/api/v1/sessions/{session['id']}/stats",
        headers={"Authorization": f"Bearer {session['session_token']}"},
    )
    return json.load(urllib.request.urlopen(request))["audio_chunks_processed"]


async def _open(host: str, path: str, session: dict, rate: int):
    if path == "voice":
        url = f"ws://{host}" + session["websocket_url"].split(host, 1)[1]
        ws = await websockets.connect(url, max_queue=None)
        if rate != 16000:
            await ws.recv()
            audio = {"encoding": "pcm_s16le", "sample_rate": rate}
            await ws.send(json.dumps({"type": "session.update", "audio": audio}))
    else:
        ws = await websockets.connect(
            f"ws://{host}/v1/realtime?model=bench",
            additional_headers={"Authorization": f"Bearer {session['session_token']}"},
            max_queue=None,
        )
    await ws.recv()  # session.ready / session.created
    return ws


async def run(host: str, pid: int, way: str, sockets: int, seconds: int) -> dict:
    path, rate, ms, how = WAYS[way]
    samples = rate * ms // 1000
    pcm = NOISE[:samples].tobytes()
    frame = {
        "binary": pcm,
        "json": json.dumps({"type": "audio", "data": base64.b64encode(pcm).decode()}),
        "append": json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        ),
    }[how]
    frames = seconds * 1000 // ms
    sessions = [_create(host) for _ in range(sockets)]
    conns = [await _open(host, path, s, rate) for s in sessions]

    async def pump(ws):
        for _ in range(frames):
            await ws.send(frame)

    cpu, start = _cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*[pump(ws) for ws in conns])
    while sum([await asyncio.to_thread(_processed, host, s) for s in sessions]) < frames * sockets:
        await asyncio.sleep(0.05)
    elapsed, used = time.monotonic() - start, _cpu_seconds(pid) - cpu
    for ws in conns:
        await ws.close()
    audio_seconds = sockets * seconds
    return {
        "frames_per_second": frames * sockets / elapsed,
        "audio_seconds_per_second": audio_seconds / elapsed,
        "server_cpu_ms_per_audio_second": used * 1000 / audio_seconds,
    }


def main(argv: list[str]) -> None:
    def opt(name, default):
        return int(argv[argv.index(name) + 1]) if name in argv else default

    sockets, seconds = opt("--sockets", 10), opt("--seconds", 60)
    results = {}
    with serve("uvicorn", **ENV) as (host, pid):
        asyncio.run(run(host, pid, next(iter(WAYS)), 2, 5))  # warm up
        for way in WAYS:
            results[way] = asyncio.run(run(host, pid, way, sockets, seconds))
            print(f"  {way}: {results[way]}", flush=True)
    base = results[next(iter(WAYS))]["server_cpu_ms_per_audio_second"]
    rows = [
        [way, r["frames_per_second"], r["audio_seconds_per_second"],
         r["server_cpu_ms_per_audio_second"], r["server_cpu_ms_per_audio_second"] / base]
        for way, r in results.items()
    ]  # fmt: skip
    print(table(
        f"Audio ingest by wire, one uvicorn process ({machine()}): {sockets} sockets x "
        f"{seconds} s of audio each, VAD on, recognition off",
        ["way", "frames/s", "audio s per s", "server CPU ms per audio s", "ratio to binary"],
        rows,
    ))  # fmt: skip
    print(f"\nsaved {save('realtime_openai', results)}")


if __name__ == "__main__":
    main(sys.argv[1:])

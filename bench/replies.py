"""Spoken replies (issue 14): how soon a reply is heard, how fast barge-in stops it, and what
synthesis costs. Through a real uvicorn worker, audio streamed at real time.

    python -m bench.replies [first] [bargein] [rtf] [throughput] [--quick]

* first: a spoken one-sentence command ("add milk to my list" -> "Added milk to your list."):
  time from ``transcript.final`` to the reply's first audio frame at the client, p50/p95.
* bargein: a two-sentence reply is playing; the user says "confirm" over it. Time from
  ``speech.started`` to the last reply frame the client got, and how much reply audio
  (ms) arrived after ``speech.started``; and how much the client held unplayed then
  (what the interruption throws away).
* rtf: the engine alone (Piper, en_US-joe-medium), in process: synthesis time / audio
  duration, and the time to its first chunk, for replies of one to three sentences.
* throughput: one synthesis worker process (the server's pool, SYNTH_PROCESSES=1), replies
  of one sentence back to back: replies per second.

Uses Redis at ``BENCH_REDIS_URL`` when set (else the embedded store). Prints tables; saves
JSON in bench/results/. Nothing here asserts a time.
"""

import asyncio
import json
import os
import sys
import time
import wave

import websockets

from bench.common import ROOT, create_session, machine, percentile, save, serve, table
from sessions_app.management.commands.voice_client import send_paced

FIXTURES = ROOT / "tests" / "fixtures" / "audio"
OUTPUT = {"encoding": "pcm_s16le", "sample_rate": 16000, "transport": "binary"}
RTF_TEXTS = [
    "Added milk to your list.",
    "Confirmed.",
    "Reminder to buy milk at 9 AM tomorrow. Say confirm to set it.",
    "Your list: buy milk; call mom; fix the bike; and 2 more.",
    "Sorry, I did not understand that.",
]


def _wav(name: str) -> bytes:
    with wave.open(str(FIXTURES / f"{name}.wav")) as w:
        return w.readframes(w.getnframes())


SILENCE_1S = b"\x00\x00" * 16000


async def _open(host: str):
    session = create_session(host, "bench-replies")
    ws = await websockets.connect(session["websocket_url"], max_size=2**20)
    await ws.recv()  # session.ready
    await ws.send(json.dumps({"type": "session.update", "output_audio": OUTPUT}))
    while json.loads(await ws.recv())["type"] != "session.ready":
        pass
    return ws


async def _until(ws, kinds: set[str], timeout: float = 30):
    """(arrival time, event or bytes) up to the first event of ``kinds``."""
    out = []
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        now = time.monotonic()
        if isinstance(message, bytes):
            out.append((now, message))
            continue
        event = json.loads(message)
        out.append((now, event))
        if event["type"] in kinds:
            return out


async def first_audio(host: str, quick: bool) -> dict:
    runs = 5 if quick else 20
    ws = await _open(host)
    audio = _wav("add_milk_to_my_list") + SILENCE_1S
    latencies, to_response, to_started = [], [], []
    # A first turn warms the worker (the voice is loaded when output audio is turned on).
    for i in range(runs + 1):
        sender = asyncio.create_task(send_paced(ws, audio, frame_bytes=640, seconds_per_frame=0.02))
        got = await _until(ws, {"response.audio.done"}, timeout=60)
        await sender
        final_at = next(
            t for t, e in got if isinstance(e, dict) and e["type"] == "transcript.final"
        )
        first_at = next(t for t, e in got if isinstance(e, bytes))
        response_at = next(t for t, e in got if isinstance(e, dict) and e["type"] == "response")
        started_at = next(
            t for t, e in got if isinstance(e, dict) and e["type"] == "response.audio.started"
        )
        if i:
            latencies.append(first_at - final_at)
            to_response.append(response_at - final_at)
            to_started.append(started_at - response_at)
    await ws.close()
    p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
    print(table(
        "First reply audio after transcript.final (one sentence, 'Added milk to your list.')",
        ["runs", "p50 ms", "p95 ms", "target p95 ms", "met"],
        [[len(latencies), p50, p95, 300, "yes" if p95 < 300 else "NO"]],
    ))  # fmt: skip
    print(table(
        "Where that time goes (p50 ms)",
        ["final -> response (intent, task, store)", "response -> audio.started (synthesis)",
         "audio.started -> first frame"],
        [[percentile(to_response, 50) * 1000, percentile(to_started, 50) * 1000,
          (percentile(latencies, 50) - percentile(to_response, 50)
           - percentile(to_started, 50)) * 1000]],
    ))  # fmt: skip
    return {
        "runs": len(latencies), "p50_ms": p50, "p95_ms": p95,
        "final_to_response_p50_ms": percentile(to_response, 50) * 1000,
        "response_to_started_p50_ms": percentile(to_started, 50) * 1000,
    }  # fmt: skip


async def barge_in(host: str, quick: bool) -> dict:
    runs = 3 if quick else 10
    speech = _wav("confirm")
    rows = []
    for _ in range(runs):
        ws = await _open(host)
        await ws.send(json.dumps({"type": "text", "text": "remind me to buy milk tomorrow"}))
        got = await _until(ws, {"response.audio.started"})
        first = None
        while first is None:  # the reply is playing at the client
            message = await ws.recv()
            if isinstance(message, bytes):
                first = time.monotonic()
        await asyncio.sleep(0.6)
        sender = asyncio.create_task(
            send_paced(ws, speech, frame_bytes=640, seconds_per_frame=0.02)
        )
        got = await _until(ws, {"response.audio.interrupted", "response.audio.done"})
        await sender
        kinds = [e["type"] for _, e in got if isinstance(e, dict)]
        if "response.audio.interrupted" not in kinds:
            rows.append(None)
            await ws.close()
            continue
        started_at = next(
            t for t, e in got if isinstance(e, dict) and e["type"] == "speech.started"
        )
        frames = [(t, e) for t, e in got if isinstance(e, bytes)]
        after = [e for t, e in frames if t > started_at]
        last_frame = max((t for t, _ in frames), default=first)
        interrupted = next(
            e for _, e in got if isinstance(e, dict) and e["type"] == "response.audio.interrupted"
        )
        played_ms = (started_at - first) * 1000  # what the client could have played by then
        rows.append({
            "last_frame_after_speech_started_ms": (last_frame - started_at) * 1000,
            "audio_after_speech_started_ms": sum(len(b) for b in after) / 32,
            "unplayed_at_interruption_ms": max(0.0, interrupted["sent_ms"] - played_ms),
        })  # fmt: skip
        await ws.close()
    done = [r for r in rows if r]
    worst_audio = max((r["audio_after_speech_started_ms"] for r in done), default=float("nan"))
    print(table(
        "Barge-in: the user talks over a reply (two sentences, ~3.6 s)",
        ["runs", "interrupted", "last frame - speech.started, p50 / max ms",
         "reply audio after speech.started, max ms", "target ms", "met",
         "unplayed at the client, p50 ms"],
        [[len(rows), len(done),
          f"{percentile([r['last_frame_after_speech_started_ms'] for r in done], 50):.0f} / "
          f"{max((r['last_frame_after_speech_started_ms'] for r in done), default=0):.0f}",
          worst_audio, 100, "yes" if worst_audio <= 100 else "NO",
          percentile([r["unplayed_at_interruption_ms"] for r in done], 50)]],
    ))  # fmt: skip
    return {"runs": len(rows), "interrupted": len(done), "rows": done}


def rtf(quick: bool) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from sessions_app.audio.piper_engine import PiperEngine

    engine = PiperEngine()
    voice = engine.voices()[0]
    list(engine.synthesize("Warm up.", voice))
    rows, totals = [], [0.0, 0.0]
    for text in RTF_TEXTS[: 2 if quick else None]:
        start = time.perf_counter()
        first, seconds = None, 0.0
        for pcm, rate in engine.synthesize(text, voice):
            first = first or time.perf_counter() - start
            seconds += len(pcm) / 2 / rate
        took = time.perf_counter() - start
        totals[0] += took
        totals[1] += seconds
        rows.append([text[:40], seconds, took, took / seconds, first * 1000])
    print(table(
        "Synthesis alone (Piper en_US-joe-medium, one process)",
        ["reply", "audio s", "synthesis s", "RTF", "first chunk ms"], rows,
    ))  # fmt: skip
    return {"rtf": totals[0] / totals[1], "rows": rows}


async def throughput(quick: bool) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from sessions_app.audio.synthesis import SynthesisPool, voices

    pool = SynthesisPool(engine_path="sessions_app.audio.piper_engine.PiperEngine", processes=1)
    voice = voices()[0]
    async for _ in pool.stream("Warm up.", voice):
        pass
    n = 5 if quick else 20

    async def one():
        async for _ in pool.stream("Added milk to your list.", voice):
            pass

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    took = time.perf_counter() - start
    pool.stop()
    print(table(
        "One synthesis worker, one-sentence replies back to back",
        ["replies", "seconds", "replies/s"], [[n, took, n / took]],
    ))  # fmt: skip
    return {"replies": n, "seconds": took, "replies_per_second": n / took}


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    parts = [a for a in argv if not a.startswith("--")] or [
        "first", "bargein", "rtf", "throughput"
    ]  # fmt: skip
    print(f"machine: {machine()}")
    results: dict = {}
    env = {"SYNTH_PROCESSES": "1", "AUDIO_RATE_LIMIT_FACTOR": "2"}
    if os.environ.get("BENCH_REDIS_URL"):
        env["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    if "first" in parts or "bargein" in parts:
        with serve("uvicorn", **env) as (host, _):
            if "first" in parts:
                results["first_audio"] = asyncio.run(first_audio(host, quick))
            if "bargein" in parts:
                results["barge_in"] = asyncio.run(barge_in(host, quick))
    if "rtf" in parts:
        results["rtf"] = rtf(quick)
    if "throughput" in parts:
        results["throughput"] = asyncio.run(throughput(quick))
    print(f"\nsaved {save('replies', results)}")


if __name__ == "__main__":
    main(sys.argv[1:])

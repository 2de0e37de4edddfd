"""The recognizer interface's promises to engines: I/O-bound engines run utterances side by
side in one worker, audio arrives at the rate an engine declares, capabilities are read from
the engine's class without loading it."""

import asyncio

import pytest

from sessions_app.audio.recognizer import (
    Capabilities,
    Hypothesis,
    TranscriptionError,
    check_transcription,
    engine_capabilities,
)


async def test_an_async_engine_runs_two_utterances_at_once_in_one_worker(pools):
    pool = pools("tests.slow_engine.BarrierEngine", 2)
    first, second = await pool.acquire(), await pool.acquire()
    assert first.worker is second.worker, "one worker process holds both"
    for recognizer in (first, second):
        await recognizer.start({})
        await recognizer.feed(b"\x00" * 640)
    finals = await asyncio.wait_for(asyncio.gather(first.finish(), second.finish()), 60)
    assert [f.text for f in finals] == ["together after 640 bytes"] * 2
    assert all(isinstance(f, Hypothesis) for f in finals), "bare text becomes a Hypothesis"


async def test_audio_reaches_an_engine_at_the_rate_it_declares(pools):
    pool = pools("tests.slow_engine.NarrowbandEngine", 1)
    recognizer = await pool.acquire()
    await recognizer.start({})
    for _ in range(50):  # 1 s of 16 kHz PCM16 in 20 ms batches
        partial = await recognizer.feed(b"\x10\x00" * 320)
    # 1 s at 8 kHz is 16,000 bytes; the resampler holds back a few samples until the end.
    assert 14_800 <= int(partial.text) <= 16_000
    pool.release(recognizer)


def test_capabilities_come_from_the_engine_class():
    pocketsphinx = engine_capabilities("sessions_app.audio.pocketsphinx_engine.PocketSphinxEngine")
    assert pocketsphinx.streaming and pocketsphinx.supports("en-US")
    assert not pocketsphinx.supports("de-DE")
    assert engine_capabilities("tests.slow_engine.SlowEngine") == Capabilities()


@pytest.mark.parametrize(
    ("language", "hints"),
    [("de-DE", []), ("", []), (7, []), ("en-US", "grade the essays"), ("en-US", [""]),
     ("en-US", ["x" * 101]), ("en-US", ["a"] * 101)],
)  # fmt: skip
def test_a_language_or_hints_the_engine_cannot_take_are_refused(language, hints):
    with pytest.raises(TranscriptionError):
        check_transcription(Capabilities(languages=("en",)), language, hints)


class _Recording:
    """A CPU engine's recognizer that records the order its worker ran requests in."""

    def __init__(self, log: list, number: int):
        self.log, self.number = log, number

    def start(self, context, *, language, hints):
        self.log.append((self.number, "start"))

    def feed(self, pcm16):
        self.log.append((self.number, "feed"))

    def finish(self):
        self.log.append((self.number, "finish"))
        return Hypothesis("")


async def test_a_cpu_engine_decodes_an_ended_utterance_before_other_speakers_audio():
    """Speaker 0 has audio waiting when speaker 1's turn ends: speaker 1's last audio and final
    go first, so a final does not wait behind every other speaker's next batch."""
    from sessions_app.audio.recognizer import _serve_in_turn

    log: list = []
    inbox: asyncio.Queue = asyncio.Queue()
    requests = [(0, "start"), (0, "feed"), (0, "feed"), (1, "start"), (1, "feed"),
                (1, "finish"), (0, "feed"), (0, "finish")]  # fmt: skip
    for request_id, (slot, op) in enumerate(requests):
        inbox.put_nowait((request_id, op, slot, b"" if op == "feed" else {}))
    recognizers = {n: _Recording(log, n) for n in (0, 1)}
    answered = []

    async def answer(slot, request_id, op, arg):
        getattr(recognizers[slot], op)(*(() if op == "finish" else (arg,)), **(
            {"language": "en", "hints": ()} if op == "start" else {}))  # fmt: skip
        answered.append(request_id)
        if len(answered) == len(requests):
            inbox.put_nowait(None)  # the pool's stop

    await asyncio.wait_for(_serve_in_turn(inbox, answer, lambda: False), 5)
    assert log == [(1, "start"), (1, "feed"), (1, "finish"),
                   (0, "start"), (0, "feed"), (0, "feed"), (0, "feed"), (0, "finish")]  # fmt: skip


async def test_a_worker_loads_every_slots_recognizer_soon_after_it_starts(pools):
    """No utterance meets a cold recognizer: a worker makes its slots' recognizers in the
    background once it serves (each final here says how many its engine has made)."""
    pool = pools("tests.slow_engine.CountingEngine", 6)
    pool.warm()
    made, deadline = 0, asyncio.get_running_loop().time() + 20
    while made < 6 and asyncio.get_running_loop().time() < deadline:
        recognizer = await pool.acquire(timeout=5)
        try:
            await recognizer.start({})
            made = int((await recognizer.finish()).text.split()[0])
        finally:
            pool.release(recognizer)
        await asyncio.sleep(0.05)
    assert made == 6

"""Audio out: how a reply's speech leaves a connection (CONTRACT section 2b).

The runtime knows nothing about the wire. An adapter that wants spoken replies hands the
runtime an :class:`OutputAudio` (the format) and an :class:`AudioOut` (where the audio goes)
with ``ConversationRuntime.set_output_audio(config, out)``. The runtime then, for each reply:

1. emits ``response.audio.started`` through the session's event path (seq, buffered for
   resume, every socket of the session), and calls ``out.started(...)`` once that event has
   come back to this connection (so a wire that sends events and audio on one socket keeps
   them in order);
2. calls ``out.chunk(response_id, frame)`` for each frame of ``config.frame_ms`` (20 ms) of
   audio in the session's output format, paced by :class:`Pacer`;
3. calls ``out.done(response_id, duration_ms)``, then emits ``response.audio.done``;
   or, on barge-in / ``response.cancel`` / output turned off, calls
   ``out.interrupted(response_id, sent_ms)`` at once (no frame follows it) and emits
   ``response.audio.interrupted``.

Audio frames never go through the event path (no seq, never stored, never replayed): the
adapter writes them to its wire directly. The ``/ws/voice`` consumer sends them as binary
frames or ``response.audio.delta`` events; a telephony adapter sends its own media messages,
a mark after ``done`` and a clear after ``interrupted``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr
import webrtcvad

from sessions_app.audio.formats import TARGET_RATE, Decoder

OUTPUT_ENCODINGS = ("pcm_s16le", "mulaw")
OUTPUT_SAMPLE_RATES = (8000, 16000, 24000, 48000)
FRAME_MS = 20
# How far ahead of real time the runtime lets a reply run: the client holds at most this much
# unplayed audio, and that is what an interruption throws away (plus the frame in flight).
LEAD_MS = 200


@dataclass(frozen=True)
class OutputAudio:
    """A connection's spoken-reply format. ``voice`` is a name from ``synthesis.voices()``."""

    encoding: str  # "pcm_s16le" | "mulaw" (mulaw only at 8000)
    sample_rate: int  # 8000 | 16000 | 24000 | 48000
    voice: str
    frame_ms: int = FRAME_MS

    @property
    def frame_bytes(self) -> int:
        samples = self.sample_rate * self.frame_ms // 1000
        return samples if self.encoding == "mulaw" else samples * 2

    def ms_of(self, nbytes: int) -> int:
        samples = nbytes if self.encoding == "mulaw" else nbytes // 2
        return samples * 1000 // self.sample_rate


class AudioOut(Protocol):
    """Where one connection's reply audio leaves; the adapter implements it.

    The runtime calls these in order for a reply: ``started``, ``chunk``..., then ``done``
    or ``interrupted``; never a ``chunk`` after either. Calls run on the event loop and
    should only write to the wire.
    """

    async def started(self, response_id: str, encoding: str, sample_rate: int) -> None: ...

    async def chunk(self, response_id: str, audio: bytes) -> None: ...

    async def done(self, response_id: str, duration_ms: int) -> None: ...

    async def interrupted(self, response_id: str, sent_ms: int) -> None: ...


def _mulaw_encode_table() -> np.ndarray:
    """G.711 mu-law code of every int16 value (a 64 KiB table, built once)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


PCM_TO_MULAW = _mulaw_encode_table()


class Encoder:
    """Synthesised PCM16 at the engine's rate, to the connection's output format, in frames."""

    def __init__(self, config: OutputAudio, source_rate: int):
        self.config = config
        self._resampler = (
            None
            if source_rate == config.sample_rate
            else soxr.ResampleStream(source_rate, config.sample_rate, 1, dtype="int16")
        )
        self._pending = bytearray()

    def _convert(self, samples: np.ndarray) -> bytes:
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=False)
        if self.config.encoding == "mulaw":
            return PCM_TO_MULAW[samples.astype(np.int32) + 32768].tobytes()
        return samples.astype("<i2").tobytes()

    def frames(self, pcm16: bytes) -> list[bytes]:
        self._pending += self._convert(np.frombuffer(pcm16, dtype="<i2"))
        return self._cut(final=False)

    def flush(self) -> list[bytes]:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if self.config.encoding == "mulaw":
                self._pending += PCM_TO_MULAW[tail.astype(np.int32) + 32768].tobytes()
            else:
                self._pending += tail.astype("<i2").tobytes()
        return self._cut(final=True)

    def _cut(self, *, final: bool) -> list[bytes]:
        size = self.config.frame_bytes
        out = []
        while len(self._pending) >= size or (final and self._pending):
            out.append(bytes(self._pending[:size]))
            del self._pending[:size]
        return out


class Pacer:
    """Real time plus ``lead_ms``: a frame may go when what was sent before it is no more
    than ``lead_ms`` ahead of the wall clock since the reply's first frame."""

    def __init__(self, lead_ms: int = LEAD_MS):
        self.lead = lead_ms / 1000
        self.start: float | None = None
        self.sent_ms = 0

    def wait(self) -> float:
        """Seconds to wait before the next frame (0: send now)."""
        now = time.monotonic()
        if self.start is None:
            self.start = now
        return max(0.0, self.start + self.sent_ms / 1000 - self.lead - now)


class EchoGuard:
    """Tells the reply's own echo from the user's voice, by comparing what was heard against
    what was sent.

    While a reply plays (and ``TAIL_S`` after), the runtime keeps the last ``SENT_S`` of the
    audio it sent (decoded back to 16 kHz, as the client got it, mu-law and all) and the last
    ``HEARD_S`` of what the client sent in. When VAD says speech started, :meth:`is_echo`
    takes the normalised cross-correlation of what was heard against every lag of what was
    sent. A peak over ``THRESHOLD`` whose residual (the heard audio less that scaled copy of
    the reply) is not speech to WebRTC's VAD means the microphone picked up the reply (a
    phone without echo cancellation, a speakerphone), not a person talking over it. This
    runs once per speech start, never per frame; per frame there is one bytes append while
    a reply is live. It models the echo as one delayed, scaled copy: good for a line's
    echo, not for a room's reverberation, which a device's echo canceller has to remove.
    """

    SENT_S = 3.0
    HEARD_S = 0.6
    TAIL_S = 1.5
    THRESHOLD = 0.55
    RESIDUAL_VOICED = 0.3

    def __init__(self, in_encoding: str, in_rate: int, out: OutputAudio):
        self.in_encoding, self.in_rate = in_encoding, in_rate
        self._out_decoder = Decoder(encoding=out.encoding, sample_rate=out.sample_rate)
        self._sent: deque[np.ndarray] = deque()
        self._sent_len = 0
        self._heard = bytearray()
        self._heard_cap = int(in_rate * self.HEARD_S) * (1 if in_encoding == "mulaw" else 2)
        self.live_until = 0.0

    def active(self) -> bool:
        return time.monotonic() < self.live_until

    def playing(self, seconds: float = 0.0) -> None:
        """A reply is live: listen for its echo until ``TAIL_S`` after now + ``seconds``."""
        self.live_until = max(self.live_until, time.monotonic() + seconds + self.TAIL_S)

    def sent(self, frame: bytes) -> None:
        pcm = self._out_decoder.decode(frame)
        self._sent.append(pcm)
        self._sent_len += len(pcm)
        while self._sent_len - len(self._sent[0]) > TARGET_RATE * self.SENT_S:
            self._sent_len -= len(self._sent.popleft())

    def heard(self, chunk: bytes) -> None:
        self._heard += chunk
        if len(self._heard) > self._heard_cap * 2:
            del self._heard[: len(self._heard) - self._heard_cap]

    def is_echo(self) -> bool:
        if not self._sent:
            return False
        heard_raw = bytes(self._heard[-self._heard_cap :])
        if self.in_encoding != "mulaw" and len(heard_raw) % 2:
            heard_raw = heard_raw[1:]
        decoder = Decoder(encoding=self.in_encoding, sample_rate=self.in_rate)
        x = np.concatenate([decoder.decode(heard_raw), decoder.flush()]).astype(np.float64)
        y = np.concatenate(list(self._sent)).astype(np.float64)
        score, residual = echo_score(x, y)
        # Echo: the heard audio is mostly the reply, and what is left once the reply is taken
        # away is not speech (someone talking over the reply leaves their voice there).
        return score >= self.THRESHOLD and voiced_share(residual) < self.RESIDUAL_VOICED


def echo_score(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """How much of ``x`` (heard) is a scaled copy of some stretch of ``y`` (sent): the
    highest normalised cross-correlation, and what is left of ``x`` once that copy is taken
    away (a one-tap echo canceller). ``y`` is padded in front with silence, so that a heard
    stretch may start before the reply did. A window of ``y`` quieter than a quarter of
    ``x``'s energy counts as that quarter: an echo is rarely louder than what was played,
    and near-silent windows would otherwise correlate with anything."""
    n = len(x)
    if n < TARGET_RATE // 10 or len(y) < TARGET_RATE // 10:
        return 0.0, x
    x = x - x.mean()
    x_energy = float(np.dot(x, x))
    if x_energy < 1e-6:
        return 0.0, x
    y = np.concatenate([np.zeros(n), y])
    size = 1 << int(np.ceil(np.log2(len(y) + n)))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    corr = corr[: len(y) - n + 1]
    energy = np.cumsum(np.concatenate([[0.0], y * y]))
    window_energy = np.maximum(energy[n:] - energy[:-n], x_energy / 4)
    scores = np.abs(corr) / (np.sqrt(x_energy) * np.sqrt(window_energy))
    lag = int(np.argmax(scores))
    gain = corr[lag] / window_energy[lag]
    return float(scores[lag]), x - gain * y[lag : lag + n]


def voiced_share(pcm16k: np.ndarray) -> float:
    """The share of 30 ms frames of 16 kHz audio that WebRTC's VAD calls speech."""
    vad = webrtcvad.Vad(3)
    samples = np.clip(pcm16k, -32768, 32767).astype("<i2")
    frames = [samples[i : i + 480] for i in range(0, len(samples) - 479, 480)]
    if not frames:
        return 0.0
    return sum(vad.is_speech(f.tobytes(), TARGET_RATE) for f in frames) / len(frames)

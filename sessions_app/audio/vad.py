"""Voice activity detection: WebRTC's VAD over 30 ms frames, with hysteresis.

Speech starts when most of the last ~240 ms is voiced, and stops after the session's
``silence_duration_ms`` of silence (never, in manual turn detection: only a commit ends it).
The session's ``prefix_padding_ms`` before the start is kept, so the first syllable is not cut.

In speech, a frame is silent when the VAD says so, or when it is :data:`GATE_DB` quieter than
the utterance's loudest voiced frame so far. WebRTC's VAD holds "speech" for 90-200 ms after
the last sound (its hangover), which every turn's end waited for on top of its silence; a
frame that far below the speaker's own level is the fading end, not speech. A noise floor
less than ``GATE_DB`` below the voice never trips it, and the VAD decides alone.
"""

from collections import deque

import numpy as np
import webrtcvad

from sessions_app.audio.formats import TARGET_RATE
from sessions_app.audio.turns import DEFAULT, TurnDetection

FRAME_MS = 30
FRAME_BYTES = TARGET_RATE * FRAME_MS // 1000 * 2
START_WINDOW = 8  # frames looked at to decide speech started
START_VOICED = 5  # of which at least this many voiced
SILENCE_MS = DEFAULT.silence_duration_ms
PREROLL_FRAMES = DEFAULT.prefix_padding_ms // FRAME_MS
PAUSE_FRAMES = 3  # 90 ms of silence in speech: a pause (the pipeline checks the partial)
GATE_DB = 40  # in speech, a frame this much below the loudest voiced one is silence
_GATE_RATIO = 10 ** (GATE_DB / 10)  # in energy


def _energy(frame: bytes) -> int:
    samples = np.frombuffer(frame, dtype="<i2").astype(np.int64)
    return int(np.dot(samples, samples))


class Segmenter:
    """Feed 16 kHz PCM16 bytes; get ("start", preroll), ("audio", frame), ("pause", None) (a
    silence began in speech), ("stop", None)."""

    def __init__(self, turns: TurnDetection = DEFAULT):
        self._pending = bytearray()
        self._window: deque[bool] = deque(maxlen=START_WINDOW)  # voiced flags, newest last
        self._silent = 0
        self.in_speech = False
        self._early_limit: int | None = None
        self._loudest = 0  # the utterance's loudest voiced frame's energy
        self.configure(turns)

    @property
    def paused(self) -> bool:
        """In speech, and silent for at least ``PAUSE_FRAMES``."""
        return self.in_speech and self._silent >= PAUSE_FRAMES

    def end_after(self, silence_ms: int | None) -> None:
        """End this turn after ``silence_ms`` of silence (shorter than the session's), or
        after the session's own again (None). Cleared when speech goes on after a pause."""
        if silence_ms is None or self.turns.manual or not self.turns.command_end:
            self._early_limit = None
        else:
            self._early_limit = max(1, silence_ms // FRAME_MS)

    def configure(self, turns: TurnDetection) -> None:
        """Apply a session's turn detection; at any time, also in the middle of speech."""
        self.turns = turns
        self._vad = webrtcvad.Vad(turns.aggressiveness)
        self._preroll_frames = turns.prefix_padding_ms // FRAME_MS
        old = list(getattr(self, "_recent", ()))
        self._recent: deque[tuple[bytes, bool]] = deque(
            old, maxlen=max(START_WINDOW, self._preroll_frames)
        )
        # Manual: silence never ends the turn (only force_stop, i.e. audio.commit, does).
        self._silence_limit = (
            None if turns.manual else max(1, turns.silence_duration_ms // FRAME_MS)
        )

    def feed(self, pcm: bytes) -> list[tuple[str, bytes | None]]:
        self._pending += pcm
        out: list[tuple[str, bytes | None]] = []
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            voiced = self._vad.is_speech(frame, TARGET_RATE)
            if not self.in_speech:
                self._recent.append((frame, voiced))
                self._window.append(voiced)
                if voiced and self._window.count(True) >= START_VOICED:
                    self.in_speech = True
                    self._silent = 0
                    self._loudest = max(_energy(f) for f, v in self._recent if v)
                    frames = (
                        list(self._recent)[-self._preroll_frames :] if self._preroll_frames else []
                    )
                    preroll = b"".join(f for f, _ in frames)
                    self._recent.clear()
                    self._window.clear()
                    out.append(("start", preroll))
            else:
                out.append(("audio", frame))
                if voiced:
                    energy = _energy(frame)
                    if energy > self._loudest:
                        self._loudest = energy
                    elif energy * _GATE_RATIO < self._loudest:
                        voiced = False  # the fading end of a sound, held by the VAD
                if voiced:
                    if self._silent >= PAUSE_FRAMES:
                        self._early_limit = None  # the speaker went on: wait for new words
                    self._silent = 0
                else:
                    self._silent += 1
                    if self._silent == PAUSE_FRAMES:
                        out.append(("pause", None))
                limit = self._silence_limit
                if limit is not None and self._early_limit is not None:
                    limit = min(limit, self._early_limit)
                if limit is not None and self._silent >= limit:
                    self.in_speech = False
                    self._silent = 0
                    self._early_limit = None
                    out.append(("stop", None))
        return out

    def force_stop(self) -> bytes:
        """End the utterance now (``audio.commit``): what is left of it, if any."""
        rest = bytes(self._pending)
        self._pending.clear()
        self._recent.clear()
        self._window.clear()
        self.in_speech = False
        self._silent = 0
        self._early_limit = None
        return rest

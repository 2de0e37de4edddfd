"""Audio formats in, 16 kHz PCM16 out (what VAD and the recognizer take).

Mu-law is expanded with a 256-entry table (G.711); resampling uses soxr's streaming
resampler, one per connection, so frame boundaries leave no clicks.
"""

import numpy as np
import soxr

TARGET_RATE = 16000
ENCODINGS = ("pcm_s16le", "mulaw")
SAMPLE_RATES = (8000, 16000, 24000, 48000)


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    sample = magnitude - 0x84
    return np.where(sign != 0, -sample, sample).astype(np.int16)


MULAW_TO_PCM = _mulaw_table()


def bytes_per_second(encoding: str, sample_rate: int) -> int:
    return sample_rate * (1 if encoding == "mulaw" else 2)


class FormatError(ValueError):
    """A frame that cannot be audio of the session's format."""


class Decoder:
    """One connection's audio format: bytes in, 16 kHz int16 samples out."""

    def __init__(self, *, encoding: str, sample_rate: int):
        if encoding not in ENCODINGS or sample_rate not in SAMPLE_RATES:
            raise FormatError("unsupported audio format")
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._resampler = (
            None
            if sample_rate == TARGET_RATE
            else soxr.ResampleStream(sample_rate, TARGET_RATE, 1, dtype="int16", quality="HQ")
        )

    def decode(self, chunk: bytes) -> np.ndarray:
        if self.encoding == "mulaw":
            samples = MULAW_TO_PCM[np.frombuffer(chunk, dtype=np.uint8)]
        else:
            if len(chunk) % 2:
                raise FormatError("PCM16 frame has an odd number of bytes")
            samples = np.frombuffer(chunk, dtype="<i2")
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)

"""Speech synthesis with espeak-ng (Debian's package), for test fixtures and the accuracy bench.

``python -m bench.synth`` rewrites the committed WAV fixtures in ``tests/fixtures/audio``.
The tests only read those files; nothing synthesizes at test time.
"""

import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import soxr

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
LEAD_IN_S = 0.3
TAIL_S = 1.0

# The committed fixtures: phrases this engine recognises from a session's first utterance, so
# that the functional tests test the path, not the accuracy (bench/speech.py measures that).
FIXTURE_PHRASES = {
    "remind_buy_milk_tomorrow": ("remind me to buy milk tomorrow", "en-us", 150),
    "create_a_task_fix_the_bike": ("create a task to fix the bike", "en-us", 150),
    "add_milk_to_my_list": ("add milk to my list", "en-us", 140),
    "take_a_note_park_level_three": ("take a note park on level three", "en-us+f3", 150),
    "what_is_on_my_list": ("what is on my list", "en", 150),
    "cancel_the_last_task": ("cancel the last task", "en-us", 150),
    "confirm": ("confirm", "en-us+f3", 150),
}


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, *, voice: str = "en-us", speed: int = 150, rate: int = 16000) -> bytes:
    """``text`` spoken by espeak-ng as mono PCM16 at ``rate``, with silence around it."""
    raw = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(raw)) as w:
        source_rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    pcm = soxr.resample(pcm, source_rate, rate).astype(np.int16)
    lead = np.zeros(int(rate * LEAD_IN_S), dtype=np.int16)
    tail = np.zeros(int(rate * TAIL_S), dtype=np.int16)
    return np.concatenate([lead, pcm, tail]).tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


if __name__ == "__main__":
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, (text, voice, speed) in FIXTURE_PHRASES.items():
        write_wav(FIXTURES / f"{name}.wav", synthesize(text, voice=voice, speed=speed))
        print(f"{name}.wav: {text!r} ({voice}, {speed} wpm)")

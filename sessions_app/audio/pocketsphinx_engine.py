"""The embedded recognizer: PocketSphinx with the en-US acoustic model its PyPI package ships.

It decodes with ``commands.lm``, a small trigram model of the command domain (see
``commands_corpus``), and the package's own pronunciation dictionary. Nothing is downloaded.
"""

import os

from pocketsphinx import Decoder

from sessions_app.audio.commands_corpus import LM_PATH
from sessions_app.audio.recognizer import Capabilities, Hypothesis, Word

# The cepstral mean a session's live decoding starts from: what live CMN converges to on clean
# speech. After each utterance the session keeps its own (see ``start`` / ``finish``), so one
# session's noise or voice never shifts another session's partial transcripts.
DEFAULT_CMN = os.environ.get(
    "POCKETSPHINX_CMN_INIT",
    "56.63,-2.28,5.22,18.62,-18.91,5.82,-14.02,-0.36,-5.42,-0.77,-2.50,3.44,3.60",
)


FRAME_SECONDS = 0.01  # PocketSphinx's frame rate: 100 a second
FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "<unk>")


def _second_pass() -> str:
    """When the final comes from a second, whole-utterance decode: "first" (a connection's
    first utterance only, default), "always" or "never" (``POCKETSPHINX_SECOND_PASS``)."""
    value = os.environ.get("POCKETSPHINX_SECOND_PASS", "first")
    return value if value in ("first", "always", "never") else "first"


class PocketSphinxRecognizer:
    """Streaming: live decoding gives the partials, and its own final hypothesis is the final.

    An utterance is decoded once, except a connection's first: live decoding starts from a
    default cepstral mean (``DEFAULT_CMN``), and until it has adapted to the line (telephony
    audio is far from it) its first utterance is decoded once more over the whole utterance
    with the utterance's own mean. After that the connection keeps its own mean (``context``)
    and the live pass's final hypothesis is the final. ``POCKETSPHINX_SECOND_PASS`` ("first",
    "always", "never") chooses; ``bench/speech.py`` measures what the second pass buys and costs.
    """

    def __init__(self, options: dict):
        self._decoder = Decoder(**options)
        self._in_utt = False
        self._context: dict = {}
        self._mode = _second_pass()
        self._second_pass = False
        self._audio = bytearray()

    def start(self, context: dict, *, language: str = "en-US", hints: tuple = ()) -> None:
        # The command LM is fixed: phrase hints do not change it (see docs/speech.md).
        if self._in_utt:
            self._decoder.end_utt()
        self._context = context
        self._audio = bytearray()
        mode = self._mode
        self._second_pass = mode == "always" or (mode == "first" and "cmn" not in context)
        self._decoder.set_cmn(context.get("cmn") or DEFAULT_CMN)
        self._decoder.start_utt()
        self._in_utt = True

    def feed(self, pcm16: bytes) -> Hypothesis | None:
        if self._second_pass:
            self._audio += pcm16
        self._decoder.process_raw(pcm16, False, False)
        hyp = self._decoder.hyp()
        return Hypothesis(hyp.hypstr) if hyp is not None and hyp.hypstr else None

    def finish(self) -> Hypothesis:
        self._decoder.end_utt()
        self._in_utt = False
        self._context["cmn"] = self._decoder.get_cmn()
        if self._second_pass and self._audio:
            self._decoder.start_utt()
            self._decoder.process_raw(bytes(self._audio), False, True)
            self._decoder.end_utt()
            self._audio = bytearray()
        hyp = self._decoder.hyp()
        if hyp is None or not hyp.hypstr:
            return Hypothesis("")
        words = tuple(
            Word(
                text=seg.word.split("(")[0],
                start=round(seg.start_frame * FRAME_SECONDS, 2),
                end=round((seg.end_frame + 1) * FRAME_SECONDS, 2),
                confidence=round(min(1.0, max(0.0, seg.prob)), 3),
            )
            for seg in self._decoder.seg()
            if seg.word not in FILLERS and not seg.word.startswith("[")
        )
        confidence = sum(w.confidence for w in words) / len(words) if words else None
        return Hypothesis(hyp.hypstr, confidence=confidence, words=words)


class PocketSphinxEngine:
    capabilities = Capabilities(
        streaming=True, languages=("en",), sample_rates=(16000,), word_timings=True
    )

    def __init__(self):
        # The package's default en-US acoustic model and dictionary, our command LM.
        self._options = {
            "samprate": 16000,
            "lm": os.environ.get("POCKETSPHINX_LM", str(LM_PATH)),
            "lw": float(os.environ.get("POCKETSPHINX_LW", "10")),
            "loglevel": "FATAL",
        }
        # The flat-lexicon pass at the end of each utterance: on by default. Without it the
        # bench's 16 kHz commands came out as well and the final came sooner, but phone audio
        # (8 kHz mu-law, upsampled) lost most of its words ("remind me to buy milk tomorrow"
        # heard as "remind"): tests/test_twilio.py. POCKETSPHINX_FWDFLAT=0 turns it off.
        self._options["fwdflat"] = os.environ.get("POCKETSPHINX_FWDFLAT", "1") not in (
            "0",
            "false",
            "",
        )

    def recognizer(self) -> PocketSphinxRecognizer:
        return PocketSphinxRecognizer(self._options)

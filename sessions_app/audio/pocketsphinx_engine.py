"""The embedded recognizer: PocketSphinx with the en-US acoustic model its PyPI package ships.

It decodes with ``commands.lm``, a small trigram model of the command domain (see
``commands_corpus``), and ``commands.dict``, the package dictionary's pronunciations of that
model's words. Nothing is downloaded.
"""

import os

from pocketsphinx import Decoder

from sessions_app.audio.commands_corpus import DICT_PATH, LM_PATH
from sessions_app.audio.recognizer import Capabilities, Hypothesis, Word

# The cepstral mean a session's live decoding starts from: what live CMN converges to on clean
# speech. After each utterance the session keeps its own (see ``start`` / ``finish``), so one
# session's noise or voice never shifts another session's partial transcripts.
DEFAULT_CMN = os.environ.get(
    "POCKETSPHINX_CMN_INIT",
    "56.63,-2.28,5.22,18.62,-18.91,5.82,-14.02,-0.36,-5.42,-0.77,-2.50,3.44,3.60",
)


FRAME_SECONDS = 0.01  # PocketSphinx's frame rate: 100 a second
LIVE_PIECE_BYTES = 640  # 20 ms of 16 kHz PCM16: the most one live call gets (``feed``)
MIN_WHOLE_BYTES = 6400  # 200 ms: a shorter utterance gets no second pass (its final is live)
FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "<unk>")


def _flat_pass() -> str:
    """When PocketSphinx's flat-lexicon pass runs at the end of an utterance
    (``POCKETSPHINX_FWDFLAT``): "auto" (default: on narrowband lines only), "1" always, "0"
    never."""
    value = os.environ.get("POCKETSPHINX_FWDFLAT", "auto").lower()
    if value in ("1", "true", "on"):
        return "1"
    return "0" if value in ("0", "false", "off", "") else "auto"


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

    def __init__(self, options: dict, flat: str = "auto"):
        # One decoder per kind of line it has met: without the flat-lexicon pass (wideband)
        # and with it (narrowband, or always/never by POCKETSPHINX_FWDFLAT); the second is
        # made at the first utterance that needs it (~15 ms).
        self._options, self._flat = options, flat
        self._decoders: dict[bool, Decoder] = {}
        self._decoder = self._decoder_for(narrowband=False)
        self._in_utt = False
        self._context: dict = {}
        self._mode = _second_pass()
        self._second_pass = False
        self._audio = bytearray()

    def _decoder_for(self, *, narrowband: bool) -> Decoder:
        flat = narrowband if self._flat == "auto" else self._flat == "1"
        if flat not in self._decoders:
            self._decoders[flat] = Decoder(**self._options, fwdflat=flat)
        return self._decoders[flat]

    def start(self, context: dict, *, language: str = "en-US", hints: tuple = ()) -> None:
        # The command LM is fixed: phrase hints do not change it (see docs/speech.md).
        if self._in_utt:
            self._decoder.end_utt()
        self._context = context
        # The pipeline puts the rate the client sends in the context: a phone line's 8 kHz,
        # upsampled, needs the flat-lexicon pass (without it "remind me to buy milk tomorrow"
        # was heard as "remind", tests/test_twilio.py); on 16 kHz and wider audio it bought
        # nothing and cost most of the final's time (bench/heldout.py).
        self._decoder = self._decoder_for(narrowband=context.get("source_rate", 16000) <= 8000)
        self._audio = bytearray()
        mode = self._mode
        self._second_pass = mode == "always" or (mode == "first" and "cmn" not in context)
        self._decoder.set_cmn(context.get("cmn") or DEFAULT_CMN)
        self._decoder.start_utt()
        self._in_utt = True

    def feed(self, pcm16: bytes) -> Hypothesis | None:
        if self._second_pass:
            self._audio += pcm16
        # In pieces of 20 ms: after a whole-utterance decode (the second pass), PocketSphinx
        # 5.0.4 sizes a buffer to that utterance, and a later live call with more audio than
        # that overran it and crashed the worker (a segfault; tests/test_speech.py).
        for start in range(0, len(pcm16), LIVE_PIECE_BYTES):
            self._decoder.process_raw(pcm16[start : start + LIVE_PIECE_BYTES], False, False)
        hyp = self._decoder.hyp()
        return Hypothesis(hyp.hypstr) if hyp is not None and hyp.hypstr else None

    def finish(self) -> Hypothesis:
        self._decoder.end_utt()
        self._in_utt = False
        self._context["cmn"] = self._decoder.get_cmn()
        if self._second_pass and len(self._audio) >= MIN_WHOLE_BYTES:
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
        # The package's default en-US acoustic model; our command LM and its words'
        # pronunciations (a decoder loads in ~15 ms with them, 1.5-5 s with the package's
        # whole dictionary). Another model (POCKETSPHINX_LM) gets the whole dictionary unless
        # POCKETSPHINX_DICT names one.
        lm = os.environ.get("POCKETSPHINX_LM") or str(LM_PATH)
        dictionary = os.environ.get("POCKETSPHINX_DICT") or (
            str(DICT_PATH) if lm == str(LM_PATH) else None
        )
        self._options = {
            "samprate": 16000,
            "lm": lm,
            "lw": float(os.environ.get("POCKETSPHINX_LW", "10")),
            "loglevel": "FATAL",
        }
        if dictionary:
            self._options["dict"] = dictionary
        self._flat = _flat_pass()

    def recognizer(self) -> PocketSphinxRecognizer:
        return PocketSphinxRecognizer(self._options, self._flat)

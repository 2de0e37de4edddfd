"""The embedded recognizer: PocketSphinx with the en-US acoustic model its PyPI package ships.

It decodes with ``commands.lm``, a small trigram model of the command domain (see
``commands_corpus``), and the package's own pronunciation dictionary. Nothing is downloaded.
"""

import os

from pocketsphinx import Decoder

from sessions_app.audio.commands_corpus import LM_PATH

# The cepstral mean a session's live decoding starts from: what live CMN converges to on clean
# speech. After each utterance the session keeps its own (see ``start`` / ``finish``), so one
# session's noise or voice never shifts another session's partial transcripts.
DEFAULT_CMN = os.environ.get(
    "POCKETSPHINX_CMN_INIT",
    "56.63,-2.28,5.22,18.62,-18.91,5.82,-14.02,-0.36,-5.42,-0.77,-2.50,3.44,3.60",
)


class PocketSphinxRecognizer:
    """Live decoding for partials; the final transcript is a second, whole-utterance pass.

    The second pass normalises the cepstrum over the utterance itself (``full_utt``), so the
    final transcript depends on this utterance's audio only, never on what the recognizer
    heard before. It costs one more decode of the utterance (about 4% of its duration here).
    """

    def __init__(self, options: dict):
        self._decoder = Decoder(**options)
        self._in_utt = False
        self._context: dict = {}
        self._audio = bytearray()

    def start(self, context: dict) -> None:
        if self._in_utt:
            self._decoder.end_utt()
        self._context = context
        self._audio = bytearray()
        self._decoder.set_cmn(context.get("cmn") or DEFAULT_CMN)
        self._decoder.start_utt()
        self._in_utt = True

    def feed(self, pcm16: bytes) -> str:
        self._audio += pcm16
        self._decoder.process_raw(pcm16, False, False)
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        self._decoder.end_utt()
        self._in_utt = False
        self._context["cmn"] = self._decoder.get_cmn()
        self._decoder.start_utt()
        self._decoder.process_raw(bytes(self._audio), False, True)
        self._decoder.end_utt()
        self._audio = bytearray()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class PocketSphinxEngine:
    def __init__(self):
        # The package's default en-US acoustic model and dictionary, our command LM.
        self._options = {
            "samprate": 16000,
            "lm": os.environ.get("POCKETSPHINX_LM", str(LM_PATH)),
            "lw": float(os.environ.get("POCKETSPHINX_LW", "10")),
            "loglevel": "FATAL",
        }

    def recognizer(self) -> PocketSphinxRecognizer:
        return PocketSphinxRecognizer(self._options)

"""The embedded recognizer: PocketSphinx with the en-US acoustic model its PyPI package ships.

It decodes with ``commands.lm``, a small trigram model of the command domain (see
``commands_corpus``), and the package's own pronunciation dictionary. Nothing is downloaded.
"""

import os

from pocketsphinx import Decoder

from sessions_app.audio.commands_corpus import LM_PATH


class PocketSphinxRecognizer:
    def __init__(self, options: dict):
        self._decoder = Decoder(**options)
        self._in_utt = False

    def start(self) -> None:
        if self._in_utt:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utt = True

    def feed(self, pcm16: bytes) -> str:
        self._decoder.process_raw(pcm16, False, False)
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        self._decoder.end_utt()
        self._in_utt = False
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class PocketSphinxEngine:
    def __init__(self):
        # The package's default en-US acoustic model and dictionary, our command LM.
        self._options = {
            "samprate": 16000,
            "lm": os.environ.get("POCKETSPHINX_LM", str(LM_PATH)),
            "lw": float(os.environ.get("POCKETSPHINX_LW", "6.5")),
            "loglevel": "FATAL",
        }

    def recognizer(self) -> PocketSphinxRecognizer:
        return PocketSphinxRecognizer(self._options)

"""A real (if slow) recognizer engine for the backpressure test: 0.5 s per 200 ms batch."""

import time


class SlowRecognizer:
    def start(self, context: dict, *, language: str, hints: tuple) -> None:
        pass

    def feed(self, pcm16: bytes) -> str:
        time.sleep(0.5)
        return ""

    def finish(self) -> str:
        return ""


class SlowEngine:
    def recognizer(self) -> SlowRecognizer:
        return SlowRecognizer()

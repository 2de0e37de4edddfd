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


class BarrierRecognizer:
    """Async: ``finish`` returns only once two utterances of the same worker are finishing."""

    def __init__(self, engine):
        self.engine = engine
        self.received = 0

    async def start(self, context: dict, *, language: str, hints: tuple) -> None:
        self.received = 0

    async def feed(self, pcm16: bytes):
        self.received += len(pcm16)
        return str(self.received)

    async def finish(self) -> str:
        import asyncio

        self.engine.finishing += 1
        if self.engine.finishing == 2:
            self.engine.together.set()
        await asyncio.wait_for(self.engine.together.wait(), 20)
        return f"together after {self.received} bytes"


class BarrierEngine:
    """An I/O-bound engine: its utterances must be in flight at the same time to finish."""

    def __init__(self):
        import asyncio

        self.finishing = 0
        self.together = asyncio.Event()

    def recognizer(self) -> BarrierRecognizer:
        return BarrierRecognizer(self)


class NarrowbandEngine(BarrierEngine):
    """Declares 8 kHz only: the pipeline's 16 kHz audio must reach it resampled."""

    from sessions_app.audio.recognizer import Capabilities

    capabilities = Capabilities(streaming=True, languages=("en",), sample_rates=(8000,))


class CountingRecognizer:
    """Its final says how many recognizers its engine has made so far."""

    def __init__(self, engine):
        self.engine = engine

    def start(self, context: dict, *, language: str, hints: tuple) -> None:
        pass

    def feed(self, pcm16: bytes) -> None:
        return None

    def finish(self) -> str:
        return f"{self.engine.made} made"


class CountingEngine:
    def __init__(self):
        self.made = 0

    def recognizer(self) -> CountingRecognizer:
        self.made += 1
        return CountingRecognizer(self)

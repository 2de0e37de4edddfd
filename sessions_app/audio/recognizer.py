"""The recognizer interface, and the pool that runs recognizers off the event loop.

An engine is a class named by ``settings.RECOGNIZER_ENGINE`` (a dotted path)::

    class MyEngine:
        def __init__(self): ...                     # load models once per process
        def recognizer(self) -> Recognizer: ...     # a new decoder

    class Recognizer:                               # one utterance at a time
        def start(self, context: dict) -> None: ...  # context: kept per connection, for
                                                    # the engine's speaker adaptation
        def feed(self, pcm16: bytes) -> str: ...    # 16 kHz mono PCM16; partial text so far
        def finish(self) -> str: ...                # the final text of the utterance

Each process holds ``RECOGNIZER_POOL_SIZE`` recognizers and as many threads. A session's
utterance holds one recognizer from its first voiced frame to its final transcript, and its
audio reaches that recognizer in batches of about 200 ms: one thread hop per batch, never
per frame. One session's decoding never runs on, or stalls, the event loop.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils.module_loading import import_string


class RecognizerPool:
    def __init__(self, *, engine_path: str, size: int):
        self.size = max(1, size)
        self._engine_path = engine_path
        self._engine = None
        self._engine_lock = threading.Lock()
        self._free: list = []
        self._created = 0
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="recognizer")
        self.busy = 0

    def _engine_instance(self):
        with self._engine_lock:
            if self._engine is None:
                self._engine = import_string(self._engine_path)()
            return self._engine

    def _take(self) -> tuple[object | None, bool]:
        with self._lock:
            if self._free:
                self.busy += 1
                return self._free.pop(), False
            if self._created < self.size:
                self._created += 1
                self.busy += 1
                return None, True
            return None, False

    async def acquire(self):
        """A recognizer for one utterance; waits (without blocking the loop) when all are busy."""
        while True:
            recognizer, create = self._take()
            if recognizer is not None:
                return recognizer
            if create:
                loop = asyncio.get_running_loop()
                try:
                    return await loop.run_in_executor(
                        self.executor, lambda: self._engine_instance().recognizer()
                    )
                except BaseException:
                    with self._lock:
                        self._created -= 1
                        self.busy -= 1
                    raise
            await asyncio.sleep(0.02)

    def release(self, recognizer) -> None:
        with self._lock:
            self.busy -= 1
            self._free.append(recognizer)

    def warm_up(self) -> None:
        """Load the engine now (``python manage.py`` commands and benchmarks call this)."""
        self._engine_instance()


_pool: RecognizerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> RecognizerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = RecognizerPool(
                engine_path=settings.RECOGNIZER_ENGINE, size=settings.RECOGNIZER_POOL_SIZE
            )
        return _pool

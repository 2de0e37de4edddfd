"""The speech synthesis interface, and the process pool that runs it off the event loop.

An engine is a class named by ``settings.SYNTH_ENGINE`` (a dotted path; empty: no speech)::

    class MyEngine:
        @classmethod
        def voices(cls) -> list[str]: ...   # the voices it can load, default first; cheap
                                            # (no model loaded): the server's process asks
        def __init__(self): ...             # in a worker process: load models once
        def synthesize(self, text: str, voice: str) -> Iterator[tuple[bytes, int]]: ...
            # mono PCM16 chunks and their sample rate, the first as soon as it is ready
            # (a sentence, or less), so that a reply starts playing before it is all made

Engines run in ``SYNTH_PROCESSES`` worker processes, not threads: ONNX inference would hold
a core and stall the event loop's sockets. Each worker synthesises one reply at a time, in
the order asked, and checks for cancels between chunks: a reply cut off by barge-in stops
being synthesised after the chunk in progress. Audio comes back over a pipe one chunk (a
sentence) per message.
"""

import asyncio
import atexit
import contextlib
import itertools
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import AsyncIterator

import structlog
from django.conf import settings
from django.utils.module_loading import import_string

logger = structlog.get_logger(__name__)


class SynthesisFailed(Exception):
    """The engine raised, or its worker died, before the reply was made."""


def _serve(conn, engine_path: str) -> None:
    """A synthesis worker: one engine, replies in order, cancels checked between chunks."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    engine = import_string(engine_path)()
    conn.send((None, "ready", None))
    queue: deque = deque()
    cancelled: set[int] = set()

    def take(message) -> bool:
        if message is None:
            return False
        if message[0] == "cancel":
            cancelled.add(message[1])
        else:
            queue.append(message)
        return True

    while True:
        try:
            while not queue:
                if not take(conn.recv()):
                    return
            _, rid, text, voice = queue.popleft()
            if rid in cancelled:
                cancelled.discard(rid)
                continue
            try:
                for pcm, rate in engine.synthesize(text, voice):
                    conn.send((rid, "chunk", (pcm, rate)))
                    while conn.poll():
                        if not take(conn.recv()):
                            return
                    if rid in cancelled:
                        break
                conn.send((rid, "end", None))
            except Exception as exc:
                conn.send((rid, "error", type(exc).__name__))
            cancelled.discard(rid)
        except (EOFError, OSError):
            return


class _Worker:
    """The parent's end of one synthesis process."""

    def __init__(self, engine_path: str):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, engine_path), daemon=True, name="synthesizer"
        )
        self.process.start()
        child.close()
        atexit.register(self.stop)
        self.ready = threading.Event()
        self.outstanding = 0
        self._queues: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._send_lock = threading.Lock()
        self.alive = True
        self.stopping = False
        threading.Thread(target=self._read, daemon=True, name="synthesizer-reader").start()

    def _read(self) -> None:
        while True:
            try:
                rid, kind, value = self.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "ready":
                self.ready.set()
                continue
            loop, queue = self._queues.get(rid, (None, None))
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        self.alive = False
        if not self.stopping:
            logger.warning("synthesis_worker_died")
        for loop, queue in list(self._queues.values()):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, ("error", "worker died"))

    def send(self, message) -> None:
        with self._send_lock:
            self.conn.send(message)

    def stop(self) -> None:
        self.stopping = True
        self.alive = False
        with contextlib.suppress(OSError):
            self.send(None)
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()


class SynthesisPool:
    def __init__(self, *, engine_path: str, processes: int):
        self.engine_path = engine_path
        self.processes = max(1, processes)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def warm(self) -> None:
        """Start the workers now (each loads its models), so the first reply does not wait."""
        with self._lock:
            self._workers = [w for w in self._workers if w.alive]
            while len(self._workers) < self.processes:
                self._workers.append(_Worker(self.engine_path))

    def _pick(self) -> _Worker:
        self.warm()
        with self._lock:
            return min(self._workers, key=lambda w: w.outstanding)

    async def stream(self, text: str, voice: str) -> AsyncIterator[tuple[bytes, int]]:
        """A reply's audio, chunk by chunk, as the engine makes it. Leaving the loop early
        (or being cancelled) cancels the rest of the synthesis."""
        worker = self._pick()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        rid = next(self._ids)
        worker._queues[rid] = (loop, queue)
        worker.outstanding += 1
        finished = False
        try:
            worker.send(("speak", rid, text, voice))
            while True:
                kind, value = await queue.get()
                if kind == "chunk":
                    yield value
                elif kind == "end":
                    finished = True
                    return
                else:
                    finished = True
                    raise SynthesisFailed(str(value))
        finally:
            worker.outstanding -= 1
            worker._queues.pop(rid, None)
            if not finished and worker.alive:
                with contextlib.suppress(OSError):
                    worker.send(("cancel", rid))

    def stop(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.stop()
            self._workers = []


_pool: SynthesisPool | None = None
_pool_lock = threading.Lock()
_voices: list[str] | None = None


def voices() -> list[str]:
    """The voice names this deployment can speak with, the default first; [] without an
    engine (``SYNTH_ENGINE`` empty, or its package not installed): replies are text only."""
    global _voices
    if _voices is None:
        path = settings.SYNTH_ENGINE
        found: list[str] = []
        if path:
            try:
                found = list(import_string(path).voices())
            except ImportError:
                logger.info("synthesis_engine_unavailable")
        _voices = found
    return list(_voices)


def get_pool() -> SynthesisPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = SynthesisPool(
                engine_path=settings.SYNTH_ENGINE, processes=settings.SYNTH_PROCESSES
            )
        return _pool


def reset() -> None:
    """Forget the voices and stop the workers (tests that change the settings)."""
    global _pool, _voices
    with _pool_lock:
        if _pool is not None:
            _pool.stop()
        _pool, _voices = None, None

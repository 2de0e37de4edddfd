"""The one way from sync code into the async services.

Services, selectors and stores are ``async def``: on Redis they await the asyncio client, on
local memory their store calls are plain dict operations that return at once. Code that is
not on an event loop (the scheduler thread, the operators' sync views, management commands,
the benches' preloading, tests) calls them through :func:`blocking`, and only through it.

It runs the coroutine on the loop that serves this process's sockets when that loop is
running in another thread: ``InMemoryChannelLayer``'s queues belong to that loop, so a group
send from anywhere else would poke them from the wrong thread. With no serving loop (a
management command, a test between sockets), or when called from a thread that is itself
running a loop, it runs on one private loop thread of this module, so an asyncio Redis client
lives on a loop that stays, not one per call.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_serving_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_lock = threading.Lock()


def remember_serving_loop() -> None:
    """Called from the ASGI application: the loop that owns the sockets of this process."""
    global _serving_loop
    _serving_loop = asyncio.get_running_loop()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _own() -> asyncio.AbstractEventLoop:
    global _own_loop
    with _own_lock:
        if _own_loop is None or _own_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="sync-bridge", daemon=True).start()
            _own_loop = loop
        return _own_loop


def run(afn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run ``afn(*args, **kwargs)`` to completion from sync code and return its result."""
    here = _running_loop()
    loop = _serving_loop
    if loop is None or not loop.is_running() or loop is here:
        loop = _own()
    if loop is here:
        raise RuntimeError(f"{afn.__name__} awaited from sync code on its own loop")
    return asyncio.run_coroutine_threadsafe(afn(*args, **kwargs), loop).result()


def blocking(afn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """The sync entry of an async service: ``session_create = blocking(asession_create)``."""

    @functools.wraps(afn)
    def entry(*args: Any, **kwargs: Any) -> T:
        return run(afn, *args, **kwargs)

    return entry

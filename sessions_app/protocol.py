"""The ``/ws/voice`` wire protocol's rules: close codes, frame checks, rate limits.

What a frame may be and what a client is told when it breaks a rule, in one place, for the
consumer (and for any other dialect's adapter) to apply.
"""

import json
import time

from redis.exceptions import RedisError

from core.kv import KVUnavailable

MAX_TEXT_CHARS = 2000
# Daphne drops close reasons, so every close other than 1000 is preceded by an ``error``
# event carrying the same code and reason, which any client can read.
CLOSE_NAMES = {
    1011: "internal_error",
    4400: "protocol_violation",
    4401: "unauthorized",
    4404: "session_not_found",
    4408: "idle_timeout",
    4409: "replaced",
    4413: "frame_too_large",
    4429: "too_fast",
}

# Exceptions that mean the state store or the channel layer is gone: the socket closes 1011.
UNAVAILABLE = (KVUnavailable, RedisError, OSError)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity, -Infinity: Python's extension


decode_json = json.JSONDecoder(parse_constant=_no_constant).decode


class RateLimiter:
    """A token bucket: audio bytes at ``factor`` times real time, or messages per second.

    It refills at ``bytes_per_second * factor`` a second up to a burst of ``burst_seconds``
    of that. A refused call is charged (audio: the socket closes anyway) unless the caller
    hands it back with :meth:`refund`. A factor of 0 turns the limit off (benchmarks that
    stream as fast as they can).
    """

    def __init__(self, *, bytes_per_second: float, factor: float, burst_seconds: float):
        self.off = factor <= 0
        self.rate = bytes_per_second * factor
        self.capacity = bytes_per_second * burst_seconds * factor
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def allow(self, n: int) -> bool:
        if self.off:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return self.tokens >= 0

    def refund(self, n: int) -> None:
        """Give back what a refused call took (what was refused was not done)."""
        self.tokens += n

    def wait_for(self, n: int) -> float:
        """Seconds until ``n`` would be allowed."""
        return max(0.0, (n - self.tokens) / self.rate) if self.rate else 0.0


def close_event(code: int, reason: str, **extra) -> dict:
    return {
        "type": "error",
        "code": CLOSE_NAMES.get(code, "closed"),
        "message": reason,
        "close_code": code,
        **extra,
    }


def utf8_size_over(text: str, limit: int) -> bool:
    """Whether ``text`` is more than ``limit`` bytes as sent (UTF-8), encoding only when it
    could be: a character takes at most 4 bytes."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit

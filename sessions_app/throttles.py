"""The create throttle: creates per client address, counted under a hashed key.

DRF's ``SimpleRateThrottle`` keys on ``get_ident()``, which with ``NUM_PROXIES`` unset reads
the raw ``X-Forwarded-For`` header: a client that varies the header gets a fresh budget each
time, and a 1 MB header becomes a 1 MB cache key (and Django's ``CacheKeyWarning``, a 1 MB
raw line on stderr). Here:

* with ``NUM_PROXIES`` 0 (the default: nothing in front), the client is the socket's address,
  ``REMOTE_ADDR``, and ``X-Forwarded-For`` is ignored;
* behind N proxies, the client is the Nth address from the right of ``X-Forwarded-For``: the
  one the outermost trusted proxy saw. What a client puts further left is its own claim and
  never counted;
* the identity is reduced to a keyed hash (HMAC-SHA256 under ``SECRET_KEY``, 32 hex digits)
  before it becomes a key, so a key has a fixed size and the store never holds an address.

The count is a lease set in the ``throttle`` store (``core.kv``): each create holds a lease
for the rate's period, and a create is allowed while fewer than the rate's number are live:
DRF's sliding window, checked and recorded in one atomic step, awaited on the loop (no
thread, and no read-then-write race between workers).
"""

import uuid

from django.conf import settings
from django.core.cache import caches
from rest_framework.exceptions import Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core import clock
from core.access import keyed_hash
from core.kv import aget_kv


def client_address(request) -> str:
    """The address that the throttle counts (see the module's docstring)."""
    remote = request.META.get("REMOTE_ADDR") or ""
    num_proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if num_proxies <= 0 or not forwarded:
        return remote
    addresses = forwarded.split(",")
    return addresses[-min(num_proxies, len(addresses))].strip()


def identity_hash(identity: str) -> str:
    """A fixed-size keyed hash of a client identity: what a cache key may carry."""
    return keyed_hash("throttle-identity", identity)[:32]


class SessionCreateThrottle(SimpleRateThrottle):
    """Session creates per client address, counted in the ``throttle`` cache (all workers
    share it with Redis)."""

    scope = "session_create"

    def __init__(self):
        self.cache = caches["throttle"]
        super().__init__()

    def get_rate(self):
        return settings.SESSION_CREATE_RATE

    def get_ident(self, request):
        return client_address(request)

    def get_cache_key(self, request, view):
        return self.cache_format % {
            "scope": self.scope,
            "ident": identity_hash(self.get_ident(request)),
        }

    async def acheck(self, request, view=None) -> None:
        """Count this request; raise DRF's ``Throttled`` (429, ``Retry-After``) past the rate."""
        if self.rate is None:
            return
        key = self.get_cache_key(request, view)
        now = clock.now()
        kv = aget_kv("throttle")
        member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
        until = now + self.duration
        if await kv.lease_acquire(
            key, member, limit=self.num_requests, now=now, until=until, ttl=self.duration
        ):
            return
        oldest = await kv.lease_members(key, now=now, offset=0, limit=1)
        started = float(oldest[0].split(":", 1)[0]) if oldest else now
        raise Throttled(wait=max(0.0, self.duration - (now - started)))

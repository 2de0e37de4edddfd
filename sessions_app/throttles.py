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

The count rides in the create itself (``services.asession_create(client=...)``): a lease
set per client in the state store, one lease per create for the rate's period, checked and
recorded in the same atomic step as the namespace's slot and the record (one round trip on
Redis). A create is allowed while fewer than the rate's number are live: DRF's sliding
window. :meth:`SessionCreateThrottle.client` gives what the service needs; DRF's own
``allow_request`` is not used (it would block the loop on the cache).
"""

from django.conf import settings
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core.access import keyed_hash


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
    """Session creates per client address (``SESSION_CREATE_RATE``): DRF's rate and client
    identity, counted by the create itself in the state store (see the module's docstring),
    which every worker shares with Redis."""

    scope = "session_create"

    def get_rate(self):
        return settings.SESSION_CREATE_RATE

    def get_ident(self, request):
        return client_address(request)

    def client(self, request, view=None) -> tuple[str, int, float] | None:
        """The client's keyed identity, the creates it may make and the period in seconds,
        or None when creates are not throttled."""
        if self.rate is None:
            return None
        return identity_hash(self.get_ident(request)), self.num_requests, float(self.duration)

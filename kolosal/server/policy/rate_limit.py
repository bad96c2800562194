"""Rate limiting with the ``limits`` library: per API key when one is
presented, else per client address (``X-Forwarded-For`` only from trusted
proxies: ``forwarded.py``). The request hook (``policy/__init__.py``) checks the routes whose
declaration has a rate-limit class (``api_route(..., limit="default")``).

Both config forms (normalised by ``settings.limit_strings``) map onto
moving-window limits shared by every such endpoint:

* ``security.rate_limiting{requests_per_minute: R, burst_size: B}`` (token
  bucket): at most B requests in any ``60*B/R`` seconds, and at most R in any
  minute. A used request slot comes back ``60*B/R`` seconds after its use.
* ``auth.rate_limit{max_requests: M, window_size: W}``: at most M requests in
  any W seconds.

Storage is in memory, or Redis (``storage_uri: redis://...``) so that several
instances share one quota; while Redis cannot be reached the limits are kept
in memory (``storage.py``)."""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, List, Optional, Tuple

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse_many
from limits.strategies import MovingWindowRateLimiter

from ..errors import ApiError, error_response
from ..settings import RateSettings, limit_strings  # noqa: F401  (limit_strings: the notation, for tests and docs)
from .auth import KeyStore, current_key
from .forwarded import Network, client_address, trusted_networks  # noqa: F401  (re-exported)
from .storage import LimitStorage, limit_storage

log = logging.getLogger("kolosal.server.ratelimit")


def request_identity(store: KeyStore, nets: List[Network]) -> str:
    """Whom a request counts against: its valid API key, else its client address."""
    _, key = current_key(store)
    if key is not None:
        return key.key_id
    return "addr_" + client_address(request.environ, nets)


class RateLimiter:
    """Moving-window limits per identity, all of them hit by every counted
    request (in order of their window, the first one exceeded refuses it)."""

    KEY_PREFIX = "kolosal"

    def __init__(self, limits: List[str], storage: LimitStorage, identity: Callable[[], str]) -> None:
        self.limits = limits
        self.identity = identity
        self.items: List[RateLimitItem] = sorted(parse_many(";".join(limits)))
        self.storage = storage
        self._strategy = storage.strategy(MovingWindowRateLimiter)

    def _hit_all(self, storage: Any, who: str) -> Tuple[bool, RateLimitItem, Any]:
        strategy = self._strategy(storage)
        for item in self.items:
            if not strategy.hit(item, self.KEY_PREFIX, who):
                return False, item, strategy.get_window_stats(item, self.KEY_PREFIX, who)
        first = self.items[0]
        return True, first, strategy.get_window_stats(first, self.KEY_PREFIX, who)

    def hit(self, who: str) -> Tuple[bool, RateLimitItem, Any]:
        """Count one request of ``who``: (allowed, the limit to report, its window stats)."""
        return self.storage.run(lambda storage: self._hit_all(storage, who))

    def check(self) -> Optional[Response]:
        """Count the current request; a 429 answer when it is over a limit.
        The figures for the ``RateLimit-*`` headers wait in ``g``."""
        allowed, item, stats = self.hit(self.identity())
        g.kolosal_rate_limit = (item.amount, stats.remaining if allowed else 0, stats.reset_time)
        if allowed:
            return None
        return error_response(ApiError(429, f"Rate limit exceeded ({item}); retry later.",
                                       code="rate_limit_exceeded"))


def install_rate_limit(app: Flask, rate: RateSettings, store: KeyStore, nets: List[Network]) -> Optional[RateLimiter]:
    """The limiter the request hook uses, or None without limits; its headers go on every counted answer."""
    limits = list(rate.limits)
    if not limits:
        return None
    storage = rate.storage_uri
    limiter = RateLimiter(limits, limit_storage(app, storage), lambda: request_identity(store, nets))

    @app.after_request
    def _headers(resp: Response) -> Response:
        figures = g.pop("kolosal_rate_limit", None)
        if figures is not None:
            add_headers(resp, *figures)
        return resp

    log.info("rate limiting: %s per API key or client address (storage %s)", "; ".join(limits),
             storage.split("://", 1)[0])
    return limiter


def add_headers(resp: Response, limit: int, remaining: int, reset_at: float) -> None:
    """``RateLimit-*`` (seconds until reset) and, on a 429, ``Retry-After``."""
    reset = max(1, math.ceil(reset_at - time.time()))
    resp.headers["RateLimit-Limit"] = str(limit)
    resp.headers["RateLimit-Remaining"] = str(max(0, remaining))
    resp.headers["RateLimit-Reset"] = str(reset)
    if resp.status_code == 429:
        resp.headers["Retry-After"] = str(reset)

"""Rate limiting with Flask-Limiter: per API key when one is presented, else
per client address (``X-Forwarded-For`` only from trusted proxies).

Both config forms map onto moving-window limits shared by every endpoint:

* ``security.rate_limiting{requests_per_minute: R, burst_size: B}`` (token
  bucket): at most B requests in any ``60*B/R`` seconds, and at most R in any
  minute. A used request slot comes back ``60*B/R`` seconds after its use.
* ``auth.rate_limit{max_requests: M, window_size: W}``: at most M requests in
  any W seconds.

Storage is in memory, or Redis (``storage_uri: redis://...``) so that several
instances share one quota."""
from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any, Dict, List, Optional, Union

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded

from .auth import KeyStore, current_key, is_health, is_metrics
from .config import ConfigError
from .config_schema import ConfigFile, RateLimiting
from .errors import ApiError, error_response

log = logging.getLogger("kolosal.server.ratelimit")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def limit_strings(rl: RateLimiting) -> List[str]:
    """The limits one config block asks for, in Flask-Limiter's notation."""
    if not rl.enabled:
        return []
    out = []
    if rl.requests_per_minute:
        rate = rl.requests_per_minute
        burst = rl.burst_size or rate
        period = max(1, round(60 * burst / rate))
        out.append(f"{burst} per {period} second")
        if burst < rate:
            out.append(f"{rate} per 1 minute")
    if rl.max_requests and rl.window_size:
        out.append(f"{rl.max_requests} per {rl.window_size} second")
    return out


def trusted_networks(values: List[str]) -> List[Network]:
    nets = []
    for i, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ConfigError([f"security.trusted_proxies[{i}]: not an IP address or network: {v}"]) from None
    return nets


def _trusted(addr: str, nets: List[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(environ: Dict[str, Any], nets: List[Network]) -> str:
    """The peer address; behind trusted proxies, the right-most untrusted hop of
    ``X-Forwarded-For`` (hops a client wrote itself are left of it)."""
    remote = environ.get("REMOTE_ADDR") or "unknown"
    if not nets or not _trusted(remote, nets):
        return remote
    hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, nets):
            return hop
    return hops[0] if hops else remote


def request_identity(store: KeyStore, nets: List[Network]) -> str:
    """Whom a request counts against: its valid API key, else its client address."""
    _, key = current_key(store)
    if key is not None:
        return key.key_id
    return "addr_" + client_address(request.environ, nets)


def storage_uri(cfg: ConfigFile) -> str:
    uris = {b.storage_uri for b in (cfg.security.rate_limiting, cfg.auth.rate_limit) if b.enabled and b.storage_uri}
    if len(uris) > 1:
        raise ConfigError(["rate_limiting.storage_uri: the two rate limit blocks name different storages"])
    return uris.pop() if uris else "memory://"


def install_rate_limit(app: Flask, cfg: ConfigFile, store: KeyStore, nets: List[Network]) -> Optional[Limiter]:
    limits = limit_strings(cfg.security.rate_limiting) + limit_strings(cfg.auth.rate_limit)
    if not limits:
        return None
    storage = storage_uri(cfg)

    def identity() -> str:
        return request_identity(store, nets)

    def exempt() -> bool:
        p = request.path
        return request.method == "OPTIONS" or is_health(p) or is_metrics(p) or p.endswith("/openapi.json")

    limiter = Limiter(identity, app=app, application_limits=[";".join(limits)],
                      application_limits_exempt_when=exempt, storage_uri=storage, strategy="moving-window",
                      headers_enabled=False, key_prefix="kolosal", in_memory_fallback_enabled=True)

    @app.after_request
    def _headers(resp: Response) -> Response:
        lim = limiter.current_limit
        if lim is not None:
            add_headers(resp, lim.limit.amount, lim.remaining, lim.reset_at)
        return resp

    @app.errorhandler(RateLimitExceeded)
    def _exceeded(e: RateLimitExceeded) -> Response:
        lim = limiter.current_limit
        resp = error_response(ApiError(429, f"Rate limit exceeded ({e.description}); retry later.",
                                       code="rate_limit_exceeded"))
        if lim is not None:
            add_headers(resp, lim.limit.amount, 0, lim.reset_at)
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

"""Per-key token quotas: ``rate_limiting.tokens_per_minute`` counts the
prompt and completion tokens of generation requests per API key (else per
client address) in fixed one-minute windows, in the rate limiter's storage
(memory or Redis).

A request reserves what it may use before its generations start: for each
prompt, (prompt tokens + ``max_tokens``) x ``n``. Reservations are atomic
increments of the caller's counter, so concurrent requests cannot overrun
the quota between them; a reservation that does not fit is refused with 429
(or 400 when it could never fit in one minute). Without ``max_tokens`` the
completion is capped to what the quota has left. When the response ends the
counter is corrected to the tokens actually used."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional

from flask import Flask, Response, current_app, g, has_request_context, request
from limits import parse
from limits.strategies import FixedWindowRateLimiter

from ..errors import ApiError, error_response
from ..request_log import ENV_GENS
from ..serving.runner import usage
from ..settings import RateSettings
from .auth import KeyStore
from .rate_limit import Network, request_identity
from .storage import LimitStorage, limit_storage

EXT = "kolosal_token_quota"
_ENV_WHO = "kolosal.quota_identity"
_ENV_RESERVED = "kolosal.quota_reserved"  # (tokens, window reset time)


class TokenQuota:
    """The counters live in the rate limiter's storage: ``memory://`` (per
    process) or ``redis://`` (one budget per key across every instance that
    names the same Redis). While Redis cannot be reached, they are kept in
    memory (per instance) and Redis is tried again every few seconds
    (``storage.py``)."""

    def __init__(self, per_minute: int, storage: LimitStorage, identity: Callable[[], str]) -> None:
        self.per_minute = per_minute
        self.identity = identity
        self.item = parse(f"{per_minute} per 1 minute")
        self.storage = storage
        self._strategy = storage.strategy(FixedWindowRateLimiter)

    def admit(self) -> Optional[Response]:
        """A generation request: 429 when the caller's quota for this minute is spent."""
        who = self.identity()
        request.environ[_ENV_WHO] = who
        if self.stats(who).remaining > 0:
            return None
        return error_response(_exceeded(self, who))

    def _key(self, who: str) -> str:
        return self.item.key_for("kolosal_tokens", who)

    def stats(self, who: str) -> Any:
        return self.storage.run(lambda s: self._strategy(s).get_window_stats(self.item, "kolosal_tokens", who))

    def reserve(self, who: str, amount: int) -> Optional[float]:
        """Take ``amount`` tokens if they fit; the window's reset time, or None."""
        key = self._key(who)

        def take(storage: Any) -> Optional[float]:
            if storage.incr(key, self.item.get_expiry(), amount=amount) > self.per_minute:
                storage.incr(key, self.item.get_expiry(), amount=-amount)
                return None
            return storage.get_expiry(key)
        return self.storage.run(take)

    def settle(self, who: str, reserved: int, reset_at: Optional[float], used: int) -> None:
        """Replace a reservation by the tokens used (in a later window: charge them there)."""
        key = self._key(who)
        delta = used - reserved if reset_at is not None and time.time() < reset_at else used
        if delta:
            self.storage.run(lambda storage: storage.incr(key, self.item.get_expiry(), amount=delta))


def _quota() -> Optional[TokenQuota]:
    if not has_request_context() or _ENV_WHO not in request.environ:
        return None
    return current_app.extensions.get(EXT)


def fit_to_quota(n_prompt: int, max_tokens: int, explicit: bool) -> int:
    """Reserve (``n_prompt`` + ``max_tokens``) x n for one prompt of the
    current request; returns ``max_tokens``, lowered to what the quota has
    left when the client did not set it. Raises 429/400 when it cannot fit."""
    quota = _quota()
    if quota is None:
        return max_tokens
    choices = max(1, int(g.get("kolosal_choices", 1)))
    who = request.environ[_ENV_WHO]
    if not explicit:
        left = quota.stats(who).remaining // choices - n_prompt
        max_tokens = max(1, min(max_tokens, left))
    amount = (n_prompt + max_tokens) * choices
    if amount > quota.per_minute:
        raise ApiError(400, f"This request may use {amount} tokens ({n_prompt} prompt + {max_tokens} max_tokens"
                            f"{f', x n={choices}' if choices > 1 else ''}) but the token quota is "
                            f"{quota.per_minute} per minute; lower max_tokens.", param="max_tokens",
                       code="token_quota_exceeded")
    reset_at = quota.reserve(who, amount)
    if reset_at is None:
        raise _exceeded(quota, who)
    tokens, _ = request.environ.get(_ENV_RESERVED, (0, None))
    request.environ[_ENV_RESERVED] = (tokens + amount, reset_at)
    return max_tokens


def _exceeded(quota: TokenQuota, who: str) -> ApiError:
    retry = max(1, math.ceil(quota.stats(who).reset_time - time.time()))
    return ApiError(429, f"Token quota exceeded ({quota.per_minute} tokens per minute); retry in {retry} s.",
                    code="token_quota_exceeded", retry_after=retry)


def install_token_quota(app: Flask, rate: RateSettings, store: KeyStore, nets: List[Network]) -> Optional[TokenQuota]:
    """The quota the request hook admits generation requests against (None
    without one); the reservation is settled when the answer's body closes."""
    per_minute = rate.tokens_per_minute
    if per_minute is None:
        return None
    quota = TokenQuota(per_minute, limit_storage(app, rate.storage_uri), lambda: request_identity(store, nets))
    app.extensions[EXT] = quota

    @app.after_request
    def _settle_later(resp: Response) -> Response:
        environ = request.environ
        if _ENV_WHO in environ:
            resp.call_on_close(lambda: _settle(environ))
        return resp

    def _settle(environ: Dict[str, Any]) -> None:
        reserved, reset_at = environ.pop(_ENV_RESERVED, (0, None))
        tracked = environ.get(ENV_GENS)
        used = 0
        if tracked:
            try:
                used = usage(tracked[0], tracked[1])["total_tokens"]
            except Exception:  # generations torn down with their engine: keep the reservation
                used = reserved
        if reserved or used:
            quota.settle(environ[_ENV_WHO], reserved, reset_at, used)

    return quota

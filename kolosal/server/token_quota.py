"""Per-key token quotas: ``rate_limiting.tokens_per_minute`` counts the
prompt and completion tokens of chat and text completions per API key (else
per client address) in fixed one-minute windows, in the rate limiter's
storage (memory or Redis). A request is admitted while its caller has tokens
left in the current minute; its usage is charged when its response ends, so
one request may overshoot the quota by its own size."""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional

from flask import Flask, Response, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .auth import KeyStore, bare_path
from .config_schema import ConfigFile
from .errors import ApiError, error_response
from .rate_limit import Network, request_identity, storage_uri
from .request_log import ENV_GENS
from .runner import usage

GENERATION_PATHS = ("/chat/completions", "/completions")
_ENV_WHO = "kolosal.quota_identity"


def tokens_per_minute(cfg: ConfigFile) -> Optional[int]:
    values = [b.tokens_per_minute for b in (cfg.security.rate_limiting, cfg.auth.rate_limit)
              if b.enabled and b.tokens_per_minute]
    return min(values) if values else None


def install_token_quota(app: Flask, cfg: ConfigFile, store: KeyStore, nets: List[Network]) -> None:
    per_minute = tokens_per_minute(cfg)
    if per_minute is None:
        return
    item = parse(f"{per_minute} per 1 minute")
    strategy = FixedWindowRateLimiter(storage_from_string(storage_uri(cfg)))

    @app.before_request
    def _admit() -> Optional[Response]:
        if request.method != "POST" or bare_path(request.path) not in GENERATION_PATHS:
            return None
        who = request_identity(store, nets)
        request.environ[_ENV_WHO] = who
        stats = strategy.get_window_stats(item, "kolosal_tokens", who)
        if stats.remaining > 0:
            return None
        resp = error_response(ApiError(429, f"Token quota exceeded ({per_minute} tokens per minute); retry later.",
                                       code="token_quota_exceeded"))
        resp.headers["Retry-After"] = str(max(1, math.ceil(stats.reset_time - time.time())))
        return resp

    @app.after_request
    def _charge_later(resp: Response) -> Response:
        environ = request.environ
        if _ENV_WHO in environ:
            resp.call_on_close(lambda: _charge(environ))
        return resp

    def _charge(environ: Dict[str, Any]) -> None:
        tracked = environ.get(ENV_GENS)
        if not tracked:
            return
        gens, n_prompts = tracked[0], tracked[1]
        try:
            total = usage(gens, n_prompts)["total_tokens"]
        except Exception:
            return
        if total > 0:
            strategy.hit(item, "kolosal_tokens", environ[_ENV_WHO], cost=total)

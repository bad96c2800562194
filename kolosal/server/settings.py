"""The settings the server runs by, normalised once from both configuration
vocabularies (the flat one: ``security.api_keys``, ``security.rate_limiting``,
``security.cors_*``; the sectioned one: ``auth``, ``auth.rate_limit``,
``cors``). ``ConfigFile.settings`` builds it; the code that applies keys,
rate limits, token quotas and CORS reads this object, never those sections.

Single spellings of one setting (``server.request_timeout`` for
``request_timeout_seconds``, ``logging.file`` for ``file_path``, the model
entry's ``id``/``engine_id`` ...) are folded when the file is validated
(``config_schema``), so the rest of the server reads one name for each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:
    from .config_schema import ConfigFile, RateLimiting

DEFAULT_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class KeyEntry:
    text: str  # the key, or sha256:HEX
    admin: bool
    where: str  # the config key it came from, for error messages ("auth.api_keys[0]")


@dataclass(frozen=True)
class KeySettings:
    entries: Tuple[KeyEntry, ...]
    files: Tuple[str, ...]  # keys files (absolute paths after loading)
    header: str  # the header that may carry the key besides Authorization: Bearer
    demanded: bool  # auth.enabled or auth.require_api_key set true: keys must be configured
    optional: bool  # auth.require_api_key set false: a request without a key is let in


@dataclass(frozen=True)
class RateSettings:
    limits: Tuple[str, ...]  # request limits of both blocks, in the limits library's notation
    storage_uri: str  # memory:// or redis://...
    tokens_per_minute: Optional[int]  # the token quota (the lower of the two blocks)


@dataclass(frozen=True)
class CorsSettings:
    origins: Tuple[str, ...]
    allow_credentials: bool
    where: str  # "cors" or "security", for error messages


@dataclass(frozen=True)
class Settings:
    keys: KeySettings
    rate: RateSettings
    cors: Optional[CorsSettings]  # None: CORS off


def limit_strings(rl: "RateLimiting") -> List[str]:
    """The limits one rate-limit block asks for, in the notation of the limits library.

    * ``requests_per_minute: R, burst_size: B`` (token bucket): at most B
      requests in any ``60*B/R`` seconds, and at most R in any minute.
    * ``max_requests: M, window_size: W``: at most M requests in any W seconds."""
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


def _keys(cfg: "ConfigFile") -> KeySettings:
    a, s = cfg.auth, cfg.security
    entries = ([KeyEntry(k, False, f"security.api_keys[{i}]") for i, k in enumerate(s.api_keys)]
               + [KeyEntry(k, False, f"auth.api_keys[{i}]") for i, k in enumerate(a.api_keys)]
               + [KeyEntry(k, True, f"security.admin_api_keys[{i}]") for i, k in enumerate(s.admin_api_keys)]
               + [KeyEntry(k, True, f"auth.admin_api_keys[{i}]") for i, k in enumerate(a.admin_api_keys)])
    if a.api_key is not None:
        entries.append(KeyEntry(a.api_key, False, "auth.api_key"))
    files = [f for f in (s.api_keys_file, a.api_keys_file) if f]
    if "enabled" in a.model_fields_set and not a.enabled:  # auth.enabled: false turns keys off
        entries, files = [], []
    return KeySettings(tuple(entries), tuple(files), a.api_key_header or s.api_key_header or DEFAULT_KEY_HEADER,
                       demanded=a.enabled or a.require_api_key,
                       optional="require_api_key" in a.model_fields_set and not a.require_api_key)


def _rate(cfg: "ConfigFile") -> Tuple[RateSettings, List[str]]:
    blocks = [b for b in (cfg.security.rate_limiting, cfg.auth.rate_limit) if b.enabled]
    errors = []
    uris = {b.storage_uri for b in blocks if b.storage_uri}
    if len(uris) > 1:
        errors.append("rate_limiting.storage_uri: the two rate limit blocks name different storages")
    quotas = [b.tokens_per_minute for b in blocks if b.tokens_per_minute]
    limits = tuple(s for b in blocks for s in limit_strings(b))
    return RateSettings(limits, min(uris) if uris else "memory://", min(quotas) if quotas else None), errors


def _cors(cfg: "ConfigFile") -> Tuple[Optional[CorsSettings], List[str]]:
    s, c = cfg.security, cfg.cors
    if c.enabled:
        out = CorsSettings(tuple(c.origins), c.allow_credentials, "cors")
    elif s.cors_enabled:
        out = CorsSettings(tuple(s.cors_origins), s.cors_allow_credentials, "security")
    else:
        return None, []
    if out.allow_credentials and "*" in out.origins:
        return out, [f"{out.where}: credentials cannot be allowed for every origin ('*'); list the origins"]
    return out, []


def normalise(cfg: "ConfigFile") -> Settings:
    """The settings of ``cfg``; ConfigError for combinations that cannot work."""
    from .config import ConfigError

    rate, errors = _rate(cfg)
    cors, cors_errors = _cors(cfg)
    if errors + cors_errors:
        raise ConfigError(errors + cors_errors)
    return Settings(_keys(cfg), rate, cors)

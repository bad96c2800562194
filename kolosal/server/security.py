"""Wiring the security settings into the app: API keys and roles, rate
limits, CORS, the request body limit and the model directories that
``POST /engines`` may load from. ``app.extensions["kolosal_security"]``
holds what the routes need."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from flask import Flask

from .auth import KeyStore, install_auth, key_store
from .config import ConfigError
from .config_schema import ConfigFile
from .model_paths import allowed_directories
from .rate_limit import Network, client_address, install_rate_limit, trusted_networks
from .token_quota import install_token_quota

log = logging.getLogger("kolosal.server.security")

EXT = "kolosal_security"
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


@dataclass
class SecurityState:
    keys: KeyStore
    proxies: List[Network]
    model_dirs: Optional[List[str]]
    limiter: Any = None

    def client(self, environ: Dict[str, Any]) -> str:
        return client_address(environ, self.proxies)


def security_of(app: Flask) -> SecurityState:
    return app.extensions[EXT]


def check_security(cfg: ConfigFile) -> None:
    """Raise ConfigError for security settings that cannot work (read keys files, parse networks)."""
    key_store(cfg)
    trusted_networks(cfg.security.trusted_proxies)
    _cors_settings(cfg)


def _cors_settings(cfg: ConfigFile) -> Optional[Dict[str, Any]]:
    s, c = cfg.security, cfg.cors
    if not (s.cors_enabled or c.enabled):
        return None
    if c.enabled:
        origins, credentials, where = c.origins, c.allow_credentials, "cors"
    else:
        origins, credentials, where = s.cors_origins, s.cors_allow_credentials, "security"
    if credentials and "*" in origins:
        raise ConfigError([f"{where}: credentials cannot be allowed for every origin ('*'); list the origins"])
    return {"origins": origins, "supports_credentials": credentials, "expose_headers": EXPOSED_HEADERS,
            "max_age": 600}


def install_security(app: Flask, cfg: ConfigFile) -> SecurityState:
    store = key_store(cfg)
    state = SecurityState(store, trusted_networks(cfg.security.trusted_proxies),
                          allowed_directories(cfg, store.enabled))
    app.extensions[EXT] = state
    app.config["MAX_CONTENT_LENGTH"] = int(cfg.server.max_request_body_mb * 1024 * 1024)
    state.limiter = install_rate_limit(app, cfg, store, state.proxies)  # first: counts refused keys too
    install_auth(app, cfg, store)
    install_token_quota(app, cfg, store, state.proxies)
    cors = _cors_settings(cfg)
    if cors is not None:
        from flask_cors import CORS
        CORS(app, **cors)
    if not store.enabled and cfg.server.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without API keys: anyone who can reach it may use it", cfg.server.host)
    return state

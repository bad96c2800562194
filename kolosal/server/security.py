"""Wiring the security settings into the app: allowed ``Host`` names, API
keys and roles, rate limits and token quotas (``policy/``: applied by its
request hook from each route's declaration), CORS, request limits, who may
load models on demand, who sees file paths, and the model directories that
``POST /engines`` may load from. ``app.extensions["kolosal_security"]``
holds what the routes need."""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from flask import Flask, has_request_context

from .config_schema import ConfigFile
from .errors import ApiError
from .limits import install_limits
from .models.paths import allowed_directories
from .policy import install_policy
from .policy.auth import KeyStore, current_key, key_store
from .policy.quota import install_token_quota
from .policy.rate_limit import Network, client_address, install_rate_limit, trusted_networks
from .settings import CorsSettings

log = logging.getLogger("kolosal.server.security")

EXT = "kolosal_security"
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


LOOPBACK_NAMES = ("localhost",)


@dataclass
class SecurityState:
    keys: KeyStore
    proxies: List[Network]
    model_dirs: Optional[List[str]]
    limiter: Any = None
    hosts: Optional[List[str]] = None  # None: any Host header
    ip_hosts: bool = False  # with ``hosts``: also any IP address
    load_on_demand: str = "any"
    extra_paths: List[str] = field(default_factory=list)

    def client(self, environ: Dict[str, Any]) -> str:
        return client_address(environ, self.proxies)

    def is_admin(self) -> bool:
        """Whether the caller holds an admin key; without keys every caller does."""
        if not self.keys.enabled:
            return True
        if not has_request_context():
            return True
        _, key = current_key(self.keys)
        return bool(key and key.admin)

    def host_allowed(self, host: str) -> bool:
        if self.hosts is None or not host:
            return True
        name = _host_name(host)
        if self.ip_hosts and _is_ip(name):
            return True
        for allowed in self.hosts:
            if allowed.startswith(".") and (name.endswith(allowed) or name == allowed[1:]):
                return True
            if name == allowed or (_is_ip(name) and _is_ip(allowed) and
                                   ipaddress.ip_address(name) == ipaddress.ip_address(allowed)):
                return True
        return False

    def check_host(self, host: str) -> None:
        """400 ``host_not_allowed`` unless ``host`` names this server (DNS rebinding)."""
        if not self.host_allowed(host):
            raise ApiError(400, f"The Host header '{_host_name(host)[:100]}' is not a name of this server; add it "
                                f"to server.allowed_hosts to accept it.", code="host_not_allowed")

    def check_load(self, model_id: str) -> None:
        """``inference.load_on_demand``: may this caller cause ``model_id`` to be loaded?"""
        policy = self.load_on_demand
        if policy == "any" or (policy == "admin" and self.is_admin()):
            return
        who = "admin API keys" if policy == "admin" else "nobody (inference.load_on_demand: off)"
        raise ApiError(403, f"The model '{model_id}' is not loaded, and on this server using a model loads it "
                            f"only for {who}.", param="model", code="model_not_loaded")

    def redact(self, text: str, paths: List[str]) -> str:
        """``text`` with file paths reduced to file names, unless the caller is an admin."""
        if not text or self.is_admin():
            return text
        for p in sorted(set(paths + self.extra_paths), key=len, reverse=True):
            if p and p in text:
                text = text.replace(p, os.path.basename(p.rstrip(os.sep)) or "(hidden)")
        return text


def _host_name(host: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(cfg: ConfigFile, keys_required: bool) -> tuple:
    """(names, also_ip_addresses) for the Host check; names None accepts any."""
    given = cfg.server.allowed_hosts
    if given is None:
        return (None, False) if keys_required else (list(LOOPBACK_NAMES), True)
    names = [h.strip().lower().rstrip(".") for h in given if h.strip()]
    if "*" in names:
        return None, False
    return [("." + n[2:]) if n.startswith("*.") else n for n in names], False  # "*.x" or ".x": x and below


def security_of(app: Flask) -> SecurityState:
    return app.extensions[EXT]


def check_security(cfg: ConfigFile) -> None:
    """Raise ConfigError for security settings that cannot work (read keys files, parse networks)."""
    key_store(cfg)
    trusted_networks(cfg.security.trusted_proxies)


def _cors_options(cors: Optional[CorsSettings]) -> Optional[Dict[str, Any]]:
    if cors is None:
        return None
    return {"origins": list(cors.origins), "supports_credentials": cors.allow_credentials,
            "expose_headers": EXPOSED_HEADERS, "max_age": 600}


def install_security(app: Flask, cfg: ConfigFile) -> SecurityState:
    settings = cfg.settings
    store = key_store(cfg)
    hosts, ip_hosts = allowed_hosts(cfg, store.required)
    state = SecurityState(store, trusted_networks(cfg.security.trusted_proxies),
                          allowed_directories(cfg, store.enabled), hosts=hosts, ip_hosts=ip_hosts,
                          load_on_demand=cfg.inference.load_on_demand,
                          extra_paths=[os.path.dirname(m.file) for m in cfg.models] + list(cfg.security.model_directories))
    app.extensions[EXT] = state
    install_limits(app, cfg)
    state.limiter = install_rate_limit(app, settings.rate, store, state.proxies)
    quota = install_token_quota(app, settings.rate, store, state.proxies)
    install_policy(app, state, cfg.security, state.limiter, quota)  # the first before_request hook
    cors = _cors_options(settings.cors)
    if cors is not None:
        from flask_cors import CORS
        CORS(app, **cors)
    if not store.enabled and cfg.server.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without API keys: anyone who can reach it may use it", cfg.server.host)
    return state

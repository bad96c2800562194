"""``create_app(config)``: the Flask application factory."""
from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

from flask import Flask, jsonify, request

from ._version import server_version
from .config import load_config
from .config_schema import ConfigFile
from .errors import ApiError, error_response, register_error_handlers
from .openapi import build_openapi
from .routes import register_blueprints
from .state import EXT, InflightMiddleware, ServerState

log = logging.getLogger("kolosal.server")

_OPEN_PATHS = ("/health", "/v1/health", "/openapi.json", "/v1/openapi.json")


def create_app(config: Union[ConfigFile, Dict[str, Any], str, Path, None] = None, *,
               load_models: str = "sync") -> Flask:
    """Build the app. ``config``: a ConfigFile, a dict in the config-file shape,
    or a path to a JSON/YAML file. ``load_models``: ``"sync"`` loads the
    start-up models before returning, ``"background"`` in a thread (health
    says ``loading`` meanwhile), ``"none"`` leaves them to load on first use."""
    if isinstance(config, (str, Path)):
        cfg = load_config(config)
    elif isinstance(config, dict) or config is None:
        cfg = load_config(data=config or {})
    else:
        cfg = config
    app = Flask("kolosal.server")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    state = ServerState(cfg, server_version())
    app.extensions[EXT] = state

    register_error_handlers(app)
    register_blueprints(app)
    _install_auth(app, cfg.api_keys)
    if cfg.security.cors_enabled:
        from flask_cors import CORS
        CORS(app, origins=cfg.security.cors_origins)

    @app.get("/openapi.json")
    @app.get("/v1/openapi.json")
    def openapi():  # type: ignore[no-untyped-def]
        return jsonify(build_openapi(app, state.version))

    startup = []
    for m in cfg.models:
        state.registry.add(m.model_id, m.file, m.engine_kwargs(cfg.inference), m.priority)
        if m.startup:
            startup.append(m.model_id)
    if load_models == "sync":
        state.registry.load_all(startup)
    elif load_models == "background" and startup:
        for rec in state.registry.records():
            if rec.engine_id in startup:
                rec.state = "loading"
        threading.Thread(target=state.registry.load_all, args=(startup,), name="kolosal-load", daemon=True).start()
    app.wsgi_app = InflightMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def _install_auth(app: Flask, keys: list) -> None:
    if not keys:
        return
    encoded = [k.encode() for k in keys]

    @app.before_request
    def _check_key() -> Optional[Any]:
        if request.method == "OPTIONS" or request.path in _OPEN_PATHS:
            return None
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("X-API-Key", "")
        if given and any(hmac.compare_digest(given.encode(), k) for k in encoded):
            return None
        return error_response(ApiError(401, "Invalid or missing API key (send 'Authorization: Bearer KEY').",
                                       code="invalid_api_key"))

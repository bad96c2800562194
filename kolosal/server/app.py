"""``create_app(config)``: the Flask application factory."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

from flask import Flask, Response, g, jsonify, request

from ._version import server_version
from .compression import install_compression
from .config import load_config
from .config_schema import ConfigFile
from .errors import REDACT, register_error_handlers
from .monitoring import Monitoring
from .openapi import RouteSpec, build_openapi, declare
from .policy.forwarded import ForwardedMiddleware
from .request_log import RequestLogMiddleware
from .routes import register_blueprints
from .routes.console import install_console
from .security import install_security
from .state import EXT, InflightMiddleware, ServerState

log = logging.getLogger("kolosal.server")


class KolosalFlask(Flask):
    def make_default_options_response(self) -> Response:
        """``Allow`` lists the methods of the path the URL matched, not of
        every rule that could match it (``/engines/{id}/status`` is also a
        valid ``/engines/{id}``)."""
        resp = super().make_default_options_response()
        rule = request.url_rule
        if rule is not None:
            methods = {m for r in self.url_map.iter_rules() if r.rule == rule.rule for m in (r.methods or ())}
            resp.allow.clear()
            resp.allow.update(sorted(methods))
        return resp


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
    app = KolosalFlask("kolosal.server")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    state = ServerState(cfg, server_version())
    app.extensions[EXT] = state

    register_error_handlers(app)
    register_blueprints(app, metrics=cfg.features.metrics, health=cfg.features.health_check)
    install_console(app, cfg.features.console)
    security = install_security(app, cfg)
    install_compression(app, cfg.server)
    Monitoring(state).init_app(app)
    state.registry.load_guard = security.check_load
    app.extensions[REDACT] = lambda text: security.redact(text, [r.model_path for r in state.registry.records()])

    @app.teardown_request
    def _release_model_holds(_exc: Optional[BaseException]) -> None:
        for model_id in g.pop("kolosal_holds", []):
            state.registry.release(model_id)

    @app.get("/openapi.json")
    @app.get("/v1/openapi.json")
    @declare(RouteSpec("This OpenAPI document", "docs", auth="public", limit=None, listed=False,
                       rule="/openapi.json"))
    def openapi():  # type: ignore[no-untyped-def]
        return jsonify(build_openapi(app, state.version))

    startup = []
    for m in cfg.models:
        state.registry.add(m.model_id, m.file, m.engine_kwargs(cfg.inference), m.priority, m.sha256, m.pinned)
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
    app.wsgi_app = RequestLogMiddleware(app.wsgi_app, security.client,  # type: ignore[method-assign]
                                        cfg.logging.access_log, cfg.logging.log_prompts)
    app.wsgi_app = ForwardedMiddleware(app.wsgi_app, security.proxies)  # type: ignore[method-assign]
    return app

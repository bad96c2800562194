"""The web console: a static page at ``/`` (overview, live metrics, chat
playground) whose script calls the ordinary API with the key typed into it.

The page and its files need no key; every data call it makes goes through
the usual policy. ``features.console: false`` leaves all of this out.

``/`` is also where Ollama's apps probe for a server (Ollama answers
``Ollama is running``): a client that asks for HTML by name (a browser)
gets the page, any other (``*/*``, no ``Accept``: curl, HTTP libraries,
Ollama clients) gets that line as text; without the console, everyone does."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request, send_from_directory

from ..openapi import RouteSpec, declare
from ..policy.auth import check_key, current_key
from ..security import security_of
from ..state import get_state

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
ASSETS = ("app.js", "api.js", "overview.js", "metrics.js", "playground.js", "app.css", "favicon.svg")

# The page loads only its own files and talks only to this server.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# What Ollama answers at / and what the apps written for it look for.
OLLAMA_PROBE = "Ollama is running"

bp = Blueprint("console", __name__)
probe_bp = Blueprint("root_probe", __name__)  # / without the console


def _route(rule: str, summary: str, auth: str, limit: object) -> Callable:
    def deco(fn: Callable) -> Callable:
        declare(RouteSpec(summary, "console", auth=auth, limit=limit, listed=False, rule=rule))(fn)  # type: ignore[arg-type]
        bp.add_url_rule(rule, view_func=fn, methods=["GET"])
        return fn
    return deco


def _static(name: str) -> Response:
    resp = send_from_directory(STATIC, name, max_age=60)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _wants_page() -> bool:
    """Browsers name ``text/html`` in ``Accept``; programs send ``*/*`` or nothing."""
    return request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html"


def _probe() -> Response:
    resp = Response(OLLAMA_PROBE, mimetype="text/plain")
    resp.vary.add("Accept")
    return resp


@_route("/", "The web console (browsers), or Ollama's 'is running' line (other clients)", "public", None)
def index():  # type: ignore[no-untyped-def]
    if not _wants_page():
        return _probe()
    resp = _static("index.html")
    resp.cache_control.no_cache = True
    resp.vary.add("Accept")
    return resp


def _root_probe():  # type: ignore[no-untyped-def]
    return _probe()


declare(RouteSpec("Ollama's 'is running' line", "console", auth="public", limit=None, listed=False,
                  rule="/"))(_root_probe)  # type: ignore[arg-type]
probe_bp.add_url_rule("/", view_func=_root_probe, methods=["GET"])


@_route("/console/<name>", "A file of the web console", "public", None)
def asset(name: str):  # type: ignore[no-untyped-def]
    if name not in ASSETS:
        abort(404)
    return _static(name)


@_route("/console/session", "What the console's key may do", "public", "default")
def session():  # type: ignore[no-untyped-def]
    """Whether the page may call the API: without a key where keys are
    required, ``authenticated: false`` (so the page asks for one instead of
    failing every call); a key that is not valid gets the usual 401. With a
    valid key (or no keys configured): whether it is an admin key (the page
    shows the load buttons then), the model memory budget, the version, and
    which of /health and the metrics endpoints are served (the page asks only
    for those)."""
    security = security_of(current_app)
    refused = check_key(security.keys, "user")
    if refused is not None:
        given, _ = current_key(security.keys)
        if given:
            return refused  # a wrong key: 401 invalid_api_key
        return jsonify({"authenticated": False, "keys_required": True, "admin": False})
    state = get_state()
    features = state.config.features
    return jsonify({"authenticated": True, "keys_required": security.keys.required, "admin": security.is_admin(),
                    "memory_budget_bytes": state.registry.policy.budget_bytes, "version": state.version,
                    "features": {"health_check": features.health_check, "metrics": features.metrics}})


def install_console(app: Flask, enabled: bool = True) -> None:
    """The console, or (``features.console: false``) only the probe at ``/``."""
    app.register_blueprint(bp if enabled else probe_bp)

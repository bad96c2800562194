"""The request policy: one ``before_request`` hook that reads the matched
view's declaration (``openapi.RouteSpec``, from ``api_route(...)``) and
applies, in this order:

1. the ``Host`` header names this server (400 ``host_not_allowed``: DNS
   rebinding), and the method is one the URL accepts (405 with ``Allow``),
   whatever the key;
2. the rate limit of the route's ``limit`` class (``None``: not limited),
   before the key check so that refused keys are counted too;
3. the key check at the route's ``auth`` level: ``public``, ``user``,
   ``admin``, or ``health``/``metrics`` (public unless
   ``security.public_health``/``public_metrics`` is false);
4. the token quota of a generation route (``generation=...``).

``OPTIONS`` (CORS preflight, ``Allow``) passes after step 1. A URL that
matches no view is treated as a ``user`` route with the default rate
limit; its 404 comes after the key check."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from flask import Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed

from ..config_schema import SecuritySection
from ..openapi import PUBLIC_EXT, RouteSpec, route_spec
from .auth import check_key
from .quota import TokenQuota
from .rate_limit import RateLimiter

if TYPE_CHECKING:
    from ..security import SecurityState

UNMATCHED = RouteSpec("no route", "none", auth="user", limit="default", listed=False)


def current_route() -> RouteSpec:
    """The declaration of the view the current request matched (``UNMATCHED`` for none)."""
    return route_spec(request.endpoint) or UNMATCHED


def auth_level(spec: RouteSpec, sec: SecuritySection) -> str:
    """``public``, ``user`` or ``admin`` for ``spec`` under the security settings."""
    if spec.auth == "health":
        return "public" if sec.public_health else "user"
    if spec.auth == "metrics":
        return "public" if sec.public_metrics else "user"
    return spec.auth


def install_policy(app: Flask, security: "SecurityState", sec: SecuritySection, limiter: Optional[RateLimiter],
                   quota: Optional[TokenQuota]) -> None:
    """Register the policy hook; it must be the first ``before_request`` hook."""
    if security.keys.required:  # for /openapi.json: which operations need no key
        app.extensions[PUBLIC_EXT] = lambda spec: auth_level(spec, sec) == "public"

    @app.before_request
    def _apply_policy() -> Optional[Response]:
        security.check_host(request.headers.get("Host", ""))
        if isinstance(request.routing_exception, MethodNotAllowed):
            raise request.routing_exception
        if request.method == "OPTIONS":
            return None
        spec = current_route()
        if limiter is not None and spec.limit is not None:
            refused = limiter.check()
            if refused is not None:
                return refused
        refused = check_key(security.keys, auth_level(spec, sec))
        if refused is not None:
            return refused
        if quota is not None and spec.generation and request.method == "POST":
            return quota.admit()
        return None

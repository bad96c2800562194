"""The request policy comes from each route's declaration (``api_route(...,
auth=, limit=, generation=)``), not from its path."""
from __future__ import annotations

from flask import Blueprint, jsonify

from kolosal.server.openapi import AUTH_LEVELS, api_route, build_openapi, route_spec
from procs import free_port

from .security_support import bare_app, bearer, error_code


def _app_with_probe(**sections):
    """A bare app plus a blueprint whose paths look like nothing special."""
    app = bare_app(**sections)
    bp = Blueprint("probe", __name__)

    @api_route(bp, "/probe/admin", ["GET"], summary="admin probe", auth="admin")
    def admin_probe():  # type: ignore[no-untyped-def]
        return jsonify({"ok": True})

    @api_route(bp, "/probe/open", ["GET"], summary="open probe", auth="public", limit=None)
    def open_probe():  # type: ignore[no-untyped-def]
        return jsonify({"ok": True})

    @api_route(bp, "/probe/health-like", ["GET"], summary="health-like probe", auth="health")
    def health_probe():  # type: ignore[no-untyped-def]
        return jsonify({"ok": True})

    app.register_blueprint(bp)
    return app


def test_every_view_is_declared():
    app = bare_app(security={"api_keys": ["k"]})
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static":  # Flask's own; undeclared views get the default policy (user key)
                continue
            spec = route_spec(rule.endpoint)
            assert spec is not None, rule.rule
            assert spec.auth in AUTH_LEVELS and spec.limit in ("default", None), rule.rule


def test_auth_level_follows_the_declaration():
    c = _app_with_probe(security={"api_keys": ["user"], "admin_api_keys": ["admin"],
                                  "public_health": False}).test_client()
    assert c.get("/probe/open").status_code == 200
    r = c.get("/probe/admin")
    assert r.status_code == 401 and error_code(r) == "invalid_api_key"
    r = c.get("/probe/admin", headers=bearer("user"))
    assert r.status_code == 403 and error_code(r) == "admin_key_required"
    assert c.get("/probe/admin", headers=bearer("admin")).status_code == 200
    # "health" level: public unless security.public_health is false, as for /health itself
    assert c.get("/probe/health-like").status_code == 401
    assert c.get("/health").status_code == 401
    assert c.get("/probe/health-like", headers=bearer("user")).status_code == 200


def test_health_level_is_public_by_default():
    c = _app_with_probe(security={"api_keys": ["user"]}).test_client()
    assert c.get("/probe/health-like").status_code == 200
    assert c.get("/health").status_code == 200


def test_rate_limit_class_follows_the_declaration():
    c = _app_with_probe(security={"rate_limiting": {"enabled": True, "requests_per_minute": 60,
                                                    "burst_size": 2}}).test_client()
    assert [c.get("/probe/open").status_code for _ in range(4)] == [200] * 4  # limit=None: not counted
    assert "RateLimit-Limit" not in c.get("/probe/open").headers
    assert [c.get("/probe/admin").status_code for _ in range(3)] == [200, 200, 429]  # no keys: anyone is admin


def test_unmatched_urls_need_a_key_and_405_comes_first():
    c = bare_app(security={"api_keys": ["k"]}).test_client()
    assert c.get("/no/such/path").status_code == 401
    assert c.get("/no/such/path", headers=bearer("k")).status_code == 404
    r = c.put("/v1/chat/completions")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]


def test_openapi_states_security_from_the_declaration():
    app = _app_with_probe(security={"api_keys": ["user"], "admin_api_keys": ["admin"]})
    with app.app_context():
        doc = build_openapi(app, "test")
    paths = doc["paths"]
    assert paths["/probe/open"]["get"]["security"] == []
    assert paths["/health"]["get"]["security"] == []
    admin = paths["/probe/admin"]["get"]
    assert admin["security"] == [{"bearer": []}] and {"401", "403"} <= set(admin["responses"])
    assert paths["/v1/engines"]["post"]["security"] == [{"bearer": []}]
    assert "403" in paths["/v1/engines"]["post"]["responses"]
    assert "403" not in paths["/v1/models"]["get"]["responses"]
    assert "/openapi.json" not in paths


def test_unreachable_rate_limit_storage_falls_back_to_memory():
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    c = bare_app(security={"rate_limiting": {"enabled": True, "requests_per_minute": 60, "burst_size": 2,
                                             "storage_uri": dead}}).test_client()
    assert [c.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]

"""CORS per config: preflight answered for allowed origins, nothing for others,
credentials only when configured, both config shapes."""
from __future__ import annotations

import pytest

from kolosal.server.config import ConfigError

from .security_support import bare_app, bearer

ALLOWED = "https://app.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


def test_preflight_allowed_without_key():
    c = bare_app(security={"cors_enabled": True, "cors_origins": [ALLOWED], "api_keys": ["k"]}).test_client()
    r = c.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in r.headers
    r = c.get("/v1/models", headers={"Origin": ALLOWED, **bearer("k")})
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]


def test_disallowed_origin_gets_no_cors_headers():
    c = bare_app(security={"cors_enabled": True, "cors_origins": [ALLOWED]}).test_client()
    for r in (c.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **PREFLIGHT}),
              c.get("/v1/models", headers={"Origin": "https://evil.example"})):
        assert not [h for h in r.headers.keys() if h.lower().startswith("access-control-")]


def test_cors_off_by_default():
    r = bare_app().test_client().get("/v1/models", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_yaml_cors_block_with_credentials():
    c = bare_app(cors={"enabled": True, "origins": [ALLOWED], "allow_credentials": True}).test_client()
    r = c.options("/v1/embeddings", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert r.headers["Access-Control-Allow-Credentials"] == "true"


def test_credentials_with_any_origin_is_refused():
    with pytest.raises(ConfigError, match="credentials"):
        bare_app(security={"cors_enabled": True, "cors_origins": ["*"], "cors_allow_credentials": True})

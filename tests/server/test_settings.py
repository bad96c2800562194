"""Both configuration vocabularies load into the same settings."""
from __future__ import annotations

import pytest

from kolosal.server.config import ConfigError, load_config

from .security_support import bare_app

FLAT = {
    "server": {"request_timeout_seconds": 120},
    "logging": {"file_path": "logs/server.log"},
    "security": {"api_keys": ["u"], "admin_api_keys": ["a"], "api_key_header": "X-Key",
                 "cors_enabled": True, "cors_origins": ["https://app.example"],
                 "rate_limiting": {"enabled": True, "requests_per_minute": 60, "burst_size": 10,
                                   "tokens_per_minute": 5000}},
}
SECTIONED = {
    "server": {"request_timeout": 120},
    "logging": {"file": "logs/server.log"},
    "auth": {"enabled": True, "require_api_key": True, "api_keys": ["u"], "admin_api_keys": ["a"],
             "api_key_header": "X-Key",
             "rate_limit": {"enabled": True, "requests_per_minute": 60, "burst_size": 10, "tokens_per_minute": 5000}},
    "cors": {"enabled": True, "origins": ["https://app.example"]},
}


def test_both_vocabularies_give_the_same_settings():
    flat, sectioned = load_config(data=FLAT), load_config(data=SECTIONED)
    assert flat.server.request_timeout_seconds == sectioned.server.request_timeout_seconds == 120
    assert flat.logging.file_path == sectioned.logging.file_path and flat.logging.file_path.endswith("server.log")
    a, b = flat.settings, sectioned.settings
    assert a.rate == b.rate and a.rate.limits == ("10 per 10 second", "60 per 1 minute")
    assert a.rate.tokens_per_minute == 5000 and a.rate.storage_uri == "memory://"
    assert a.cors.origins == b.cors.origins == ("https://app.example",)
    assert [(k.text, k.admin) for k in a.keys.entries] == [(k.text, k.admin) for k in b.keys.entries] == [
        ("u", False), ("a", True)]
    assert a.keys.header == b.keys.header == "X-Key"
    assert b.keys.demanded and not a.keys.demanded and not a.keys.optional and not b.keys.optional


def test_two_blocks_both_apply_and_the_lower_token_quota_wins():
    cfg = load_config(data={"security": {"rate_limiting": {"enabled": True, "requests_per_minute": 100,
                                                           "tokens_per_minute": 900}},
                            "auth": {"rate_limit": {"enabled": True, "max_requests": 5, "window_size": 60,
                                                    "tokens_per_minute": 300}}})
    assert cfg.settings.rate.limits == ("100 per 60 second", "5 per 60 second")
    assert cfg.settings.rate.tokens_per_minute == 300


def test_conflicts_are_refused_at_load():
    with pytest.raises(ConfigError, match="different storages"):
        load_config(data={"security": {"rate_limiting": {"enabled": True, "max_requests": 1, "window_size": 1,
                                                         "storage_uri": "memory://"}},
                          "auth": {"rate_limit": {"enabled": True, "max_requests": 1, "window_size": 1,
                                                  "storage_uri": "redis://127.0.0.1:1/0"}}})
    with pytest.raises(ConfigError, match="cors: credentials"):
        load_config(data={"cors": {"enabled": True, "allow_credentials": True}})


def test_health_check_feature_turns_the_endpoint_off():
    assert bare_app().test_client().get("/health").status_code in (200, 503)
    c = bare_app(features={"health_check": False}).test_client()
    assert c.get("/health").status_code == 404 and c.get("/v1/health").status_code == 404

"""Rate limits: burst and refill, the window form, 429 envelope and headers,
per key / per address, trusted proxies, a Redis quota shared by two instances."""
from __future__ import annotations

import logging
import time

import pytest

from kolosal.server.config import load_config
from kolosal.server.policy.rate_limit import client_address, limit_strings, trusted_networks

from procs import start_redis

from .security_support import bare_app, bearer, error_code


def bucket(rpm: int = 60, burst: int = 3, **extra):
    return {"rate_limiting": {"enabled": True, "requests_per_minute": rpm, "burst_size": burst, **extra}}


def test_limit_strings_for_both_forms():
    cfg = load_config(data={"security": bucket(100, 20), "auth": {"rate_limit": {
        "enabled": True, "max_requests": 10000, "window_size": 3600}}})
    assert limit_strings(cfg.security.rate_limiting) == ["20 per 12 second", "100 per 1 minute"]
    assert limit_strings(cfg.auth.rate_limit) == ["10000 per 3600 second"]


def test_burst_then_429_then_refill_after_retry_after():
    c = bare_app(security=bucket(60, 3)).test_client()
    for i in range(3):
        r = c.get("/v1/models")
        assert r.status_code == 200
        assert r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Remaining"] == str(2 - i)
        assert 1 <= int(r.headers["RateLimit-Reset"]) <= 4
    r = c.get("/v1/models")
    assert r.status_code == 429 and error_code(r) == "rate_limit_exceeded"
    assert r.get_json()["error"]["type"] == "rate_limit_error"
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 4 and r.headers["RateLimit-Remaining"] == "0"
    assert c.get("/health").status_code == 200  # health is not limited
    time.sleep(wait)
    assert c.get("/v1/models").status_code == 200


def test_window_form_retry_after_is_window():
    c = bare_app(auth={"rate_limit": {"enabled": True, "max_requests": 2, "window_size": 60}}).test_client()
    assert [c.get("/models").status_code for _ in range(3)] == [200, 200, 429]
    r = c.get("/models")
    assert 55 <= int(r.headers["Retry-After"]) <= 61 and r.headers["RateLimit-Limit"] == "2"


def test_per_key_and_per_address():
    c = bare_app(security={"api_keys": ["a", "b"], **bucket(60, 2)}).test_client()
    assert [c.get("/models", headers=bearer("a")).status_code for _ in range(3)] == [200, 200, 429]
    assert c.get("/models", headers=bearer("b")).status_code == 200
    c = bare_app(security=bucket(60, 1)).test_client()
    assert c.get("/models", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200
    assert c.get("/models", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 429
    assert c.get("/models", environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 200


def test_wrong_keys_are_counted_per_address():
    c = bare_app(security={"api_keys": ["a"], **bucket(60, 2)}).test_client()
    codes = [c.get("/models", headers=bearer(f"guess{i}")).status_code for i in range(3)]
    assert codes == [401, 401, 429]


def test_forwarded_for_only_from_trusted_proxies():
    nets = trusted_networks(["10.0.0.0/8"])
    env = {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert client_address(env, nets) == "203.0.113.5"
    env = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.1, 10.0.0.3"}
    assert client_address(env, nets) == "198.51.100.1"  # the client cannot choose its address by writing hops
    c = bare_app(security={"trusted_proxies": ["10.0.0.0/8"], **bucket(60, 1)}).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    assert c.get("/models", environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    assert c.get("/models", environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    assert c.get("/models", environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    direct = {"REMOTE_ADDR": "203.0.113.9"}
    assert c.get("/models", environ_base=direct, headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    assert c.get("/models", environ_base=direct, headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 429


@pytest.fixture
def redis_uri(tmp_path):
    yield from start_redis(tmp_path)


def test_two_instances_share_one_quota_in_redis(redis_uri):
    cfg = {"security": {"api_keys": ["shared"], **bucket(60, 4, storage_uri=redis_uri)}}
    one, two = bare_app(**cfg).test_client(), bare_app(**cfg).test_client()
    assert [one.get("/models", headers=bearer("shared")).status_code for _ in range(2)] == [200, 200]
    assert [two.get("/models", headers=bearer("shared")).status_code for _ in range(2)] == [200, 200]
    r = one.get("/models", headers=bearer("shared"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert two.get("/models", headers=bearer("shared")).status_code == 429
    local = bare_app(security={"api_keys": ["shared"], **bucket(60, 4)}).test_client()
    assert local.get("/models", headers=bearer("shared")).status_code == 200  # memory storage: its own quota


def test_per_key_token_quota(model_path):
    from kolosal.server import create_app

    from .conftest import MODEL_ID, server_config
    cfg = server_config(model_path)
    cfg["models"][0]["load_params"].update(n_ctx=512, n_parallel=1)
    cfg["security"] = {"api_keys": ["a", "b"], "rate_limiting": {"enabled": True, "tokens_per_minute": 20}}
    app = create_app(cfg)
    try:
        c = app.test_client()
        body = {"model": MODEL_ID, "prompt": "One two three", "max_tokens": 8, "ignore_eos": True}

        def post(key: str):
            r = c.post("/v1/completions", json=body, headers=bearer(key))
            r.close()  # as a WSGI server does once the body is sent: the usage is charged then
            return r

        assert post("a").status_code == 200  # 3 + 8 tokens reserved before it runs, then charged
        r = post("a")  # 11 more would pass 20: refused before it runs
        assert r.status_code == 429 and error_code(r) == "token_quota_exceeded"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert c.get("/v1/models", headers=bearer("a")).status_code == 200  # only generation counts tokens
        assert post("b").status_code == 200
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_redis_going_down_moves_limits_and_quotas_to_memory_with_one_warning(tmp_path, caplog):
    """The rate limiter and the token quota count in the same storage: when
    Redis stops, both go on in memory (from zero, per instance) after one
    warning, rather than failing the requests."""
    redis = start_redis(tmp_path)
    cfg = {"security": {"api_keys": ["k"], **bucket(60, 3, storage_uri=next(redis), tokens_per_minute=1000)}}
    c = bare_app(**cfg).test_client()
    body = {"model": "none", "prompt": "Hi", "max_tokens": 1}  # the quota admits it, then no such model

    def generate() -> int:
        return c.post("/v1/completions", json=body, headers=bearer("k")).status_code

    try:
        assert [generate() for _ in range(2)] == [404, 404]  # two of the burst of 3 used, in Redis
    finally:
        redis.close()  # stops redis-server
    with caplog.at_level(logging.INFO, logger="kolosal.server"):
        assert [generate() for _ in range(4)] == [404, 404, 404, 429]  # memory counts from zero
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "kept in memory" in warnings[0], warnings

"""The security rules through a live server (Waitress, real sockets): keys,
roles, model directories, CORS, body limit, rate limit and revocation."""
from __future__ import annotations

import time

import httpx
import pytest

from .conftest import server_config, start_server
from .security_support import bearer, sha256_line

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def secured(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secured")
    keys = tmp / "keys.txt"
    keys.write_text("\n".join([sha256_line("user-key"), sha256_line("admin-key", "admin"),
                               sha256_line("flood-key"), ""]))
    cfg = server_config(model_path)
    cfg["server"]["max_request_body_mb"] = 1
    cfg["security"] = {"api_keys_file": str(keys), "model_directories": [str(model_path.parent)],
                       "cors_enabled": True, "cors_origins": [ORIGIN],
                       "rate_limiting": {"enabled": True, "requests_per_minute": 60, "burst_size": 6}}
    server = start_server(cfg, tmp)
    yield server, keys
    assert server.stop() == 0, server.log()


def test_keys_are_required_and_both_headers_work(secured):
    server, _ = secured
    r = httpx.get(server.v1 + "/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(server.v1 + "/models", headers=bearer("wrong")).status_code == 401
    assert httpx.get(server.v1 + "/models", headers=bearer("user-key")).status_code == 200
    assert httpx.get(server.v1 + "/models", headers={"X-API-Key": "user-key"}).status_code == 200
    assert httpx.get(server.base_url + "/health").status_code == 200  # open by default


def test_engine_management_needs_admin_and_stays_in_model_directories(secured, model_path):
    server, _ = secured
    body = {"engine_id": "extra", "model_path": str(model_path), "load_immediately": False}
    r = httpx.post(server.base_url + "/engines", json=body, headers=bearer("user-key"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    outside = []
    for path in ("/etc/passwd", str(model_path.parent / ".." / ".." / "etc" / "hostname"), "/nonexistent/x.gguf"):
        r = httpx.post(server.base_url + "/engines", json={**body, "model_path": path}, headers=bearer("admin-key"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_path_not_allowed"
        outside.append(r.json()["error"]["message"])
    assert len(set(outside)) == 1  # the answer does not tell whether the file exists
    r = httpx.post(server.base_url + "/engines", json=body, headers=bearer("admin-key"))
    assert r.status_code == 201
    r = httpx.delete(server.base_url + "/engines/extra", headers=bearer("admin-key"))
    assert r.status_code == 200


def test_cors_preflight_allowed_and_refused(secured):
    server, _ = secured
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(server.v1 + "/chat/completions", headers={"Origin": ORIGIN, **ask})
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    bad = httpx.options(server.v1 + "/chat/completions", headers={"Origin": "https://evil.example", **ask})
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_body_too_large(secured):
    server, _ = secured
    big = b'{"model": "smollm2", "prompt": "' + b"x" * (2 << 20) + b'"}'
    r = httpx.post(server.v1 + "/completions", content=big,
                   headers={**bearer("user-key"), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_entity_too_large"


def test_rate_limit_429_with_retry_after(secured):
    server, _ = secured
    seen = []
    for _ in range(10):
        r = httpx.get(server.v1 + "/models", headers=bearer("flood-key"))
        seen.append(r.status_code)
        if r.status_code == 429:
            break
    assert seen[:6] == [200] * 6 and seen[-1] == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(r.headers["Retry-After"]) > 0
    assert all(h in r.headers for h in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))
    assert r.headers["RateLimit-Remaining"] == "0"
    # Other keys have their own quota.
    assert httpx.get(server.v1 + "/models", headers=bearer("user-key")).status_code == 200


def test_revoked_key_is_refused_without_restart(secured):
    server, keys = secured
    keys.write_text("\n".join([sha256_line("admin-key", "admin"), sha256_line("flood-key"), ""]))
    deadline = time.monotonic() + 10
    status = 200
    while time.monotonic() < deadline and status != 401:
        status = httpx.get(server.v1 + "/models", headers=bearer("user-key")).status_code
        time.sleep(0.2)
    assert status == 401
    assert httpx.get(server.v1 + "/models", headers=bearer("admin-key")).status_code == 200

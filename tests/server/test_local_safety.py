"""Safe by default: the Host check against DNS rebinding, JSON-only bodies
(no preflight-free form posts from web pages), 405 before keys, who may load
models on demand, and file paths for admin keys only."""
from __future__ import annotations

import os

import httpx
import pytest

from procs import free_port

from .conftest import raw_request, start_server
from .security_support import bare_app, bearer, error_code

CHAT = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}


# -- Host -----------------------------------------------------------------------------------

@pytest.mark.parametrize("host, ok", [("localhost", True), ("localhost:8080", True), ("127.0.0.1:8080", True),
                                      ("[::1]:8080", True), ("10.1.2.3", True), ("LOCALHOST.", True),
                                      ("evil.example", False), ("evil.example:8080", False),
                                      ("localhost.evil.example", False), ("127.0.0.1.nip.io", False)])
def test_default_hosts_without_keys_are_loopback_names_and_addresses(host, ok):
    c = bare_app().test_client()
    r = c.get("/v1/models", headers={"Host": host})
    assert (r.status_code == 200) == ok, (host, r.get_json())
    if not ok:
        assert r.status_code == 400 and error_code(r) == "host_not_allowed"


def test_configured_hosts_and_wildcards():
    c = bare_app(server={"allowed_hosts": ["api.example.com", "*.internal.example"]}).test_client()
    for host, ok in [("api.example.com", True), ("API.example.com:443", True), ("a.internal.example", True),
                     ("internal.example", True), ("127.0.0.1", False), ("localhost", False), ("example.com", False)]:
        assert (c.get("/v1/models", headers={"Host": host}).status_code == 200) == ok, host
    c = bare_app(server={"allowed_hosts": ["*"]}).test_client()
    assert c.get("/v1/models", headers={"Host": "anything.example"}).status_code == 200


def test_with_required_keys_any_host_by_default():
    c = bare_app(security={"api_keys": ["k"]}).test_client()
    assert c.get("/v1/models", headers={"Host": "api.example.com", **bearer("k")}).status_code == 200


def test_host_check_through_waitress(tmp_path):
    server = start_server({"server": {"host": "127.0.0.1", "port": free_port()}, "logging": {"level": "WARNING"}},
                          tmp_path)
    try:
        def status(host: bytes) -> bytes:
            answer = raw_request(server.port, b"GET /v1/models HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            return answer.split(b" ", 2)[1]
        assert status(b"rebind.attacker.example") == b"400"
        assert status(b"localhost:%d" % server.port) == b"200"
        assert httpx.get(server.v1 + "/models").status_code == 200  # Host: 127.0.0.1:port
    finally:
        server.stop()


# -- Content-Type ----------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                   "application/jsonp", "text/json"])
def test_bodies_must_be_sent_as_json(ctype):
    import json
    c = bare_app().test_client()
    headers = {"Content-Type": ctype} if ctype else {}
    r = c.post("/v1/chat/completions", data=json.dumps(CHAT), headers=headers)
    assert r.status_code == 415 and error_code(r) == "unsupported_media_type"
    for path in ("/tokenize", "/engines", "/v1/embeddings", "/v1/completions"):
        assert c.post(path, data="{}", headers=headers).status_code == 415, path


def test_json_with_charset_is_fine():
    import json
    c = bare_app().test_client()
    r = c.post("/v1/chat/completions", data=json.dumps(CHAT), headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 404 and error_code(r) == "model_not_found"


# -- 405 before keys ---------------------------------------------------------------------------

def test_undeclared_methods_are_405_with_allow_before_authentication():
    c = bare_app(security={"api_keys": ["user"], "admin_api_keys": ["admin"]}).test_client()
    for method, path, headers in [("PUT", "/v1/chat/completions", {}), ("DELETE", "/v1/models", bearer("user")),
                                  ("POST", "/engines/x/status", bearer("user")), ("PATCH", "/engines", {}),
                                  ("GET", "/v1/completions", bearer("wrong"))]:
        r = c.open(path, method=method, headers=headers)
        assert r.status_code == 405 and error_code(r) == "method_not_allowed", (method, path, r.get_json())
        assert r.headers["Allow"], (method, path)
    assert "DELETE" in c.put("/engines/x").headers["Allow"]
    # declared methods still need the key, and the admin role
    assert c.delete("/engines/x", headers=bearer("user")).status_code == 403
    assert c.delete("/engines/x").status_code == 401


# -- loading on demand, paths ------------------------------------------------------------------

def _app(model_path, tmp_path, policy: str, missing: bool = False):
    models = [{"id": "m", "path": str(model_path), "load_at_startup": False}]
    if missing:
        models.append({"id": "gone", "path": str(tmp_path / "secret-dir" / "gone.gguf"), "load_at_startup": False})
    return bare_app(security={"api_keys": ["user"], "admin_api_keys": ["admin"]},
                    inference={"load_on_demand": policy}, models=models)


@pytest.mark.parametrize("policy, user_loads, admin_loads", [("any", True, True), ("admin", False, True),
                                                              ("off", False, False)])
def test_load_on_demand_policy(model_path, tmp_path, policy, user_loads, admin_loads):
    app = _app(model_path, tmp_path, policy)
    c = app.test_client()
    try:
        tok = {"content": "hi", "model": "m"}
        r = c.post("/tokenize", json=tok, headers=bearer("user"))
        assert (r.status_code == 200) == user_loads, r.get_json()
        if not user_loads:
            assert r.status_code == 403 and error_code(r) == "model_not_loaded"
            r = c.post("/v1/chat/completions", json={**CHAT, "model": "m"}, headers=bearer("user"))
            assert r.status_code == 403 and error_code(r) == "model_not_loaded"
        r = c.post("/tokenize", json=tok, headers=bearer("admin"))
        assert (r.status_code == 200) == admin_loads, r.get_json()
        if policy == "off":  # POST /engines still loads
            r = c.post("/engines", json={"engine_id": "m2", "model_path": str(model_path)}, headers=bearer("admin"))
            assert r.status_code == 201 and r.get_json()["status"] == "loaded"
            assert c.post("/tokenize", json={"content": "hi", "model": "m2"}, headers=bearer("user")).status_code == 200
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_paths_and_load_errors_with_paths_for_admin_keys_only(model_path, tmp_path):
    app = _app(model_path, tmp_path, "any", missing=True)
    c = app.test_client()
    secret_dir = str(tmp_path / "secret-dir")
    r = c.post("/tokenize", json={"content": "hi", "model": "gone"}, headers=bearer("user"))
    assert r.status_code == 503 and "gone.gguf" in r.get_json()["error"]["message"]
    assert secret_dir not in r.get_json()["error"]["message"]
    r = c.post("/tokenize", json={"content": "hi", "model": "gone"}, headers=bearer("admin"))
    assert secret_dir in r.get_json()["error"]["message"]
    for key, shows in (("user", False), ("admin", True)):
        listing = c.get("/engines", headers=bearer(key)).get_json()["engines"]
        paths = {e["engine_id"]: e["model_path"] for e in listing}
        assert (paths["m"] == str(model_path)) == shows and paths["m"].endswith(os.path.basename(model_path))
        status = c.get("/engines/gone/status", headers=bearer(key)).get_json()
        assert (secret_dir in status["model_path"] + status["error"]) == shows, status


def test_a_request_may_wait_for_a_start_up_load_whatever_the_policy(model_path):
    from kolosal.server import create_app
    app = create_app({"logging": {"level": "WARNING"}, "security": {"api_keys": ["user"]},
                      "inference": {"load_on_demand": "off"},
                      "models": [{"id": "m", "path": str(model_path), "load_at_startup": True}]},
                     load_models="background")
    try:
        r = app.test_client().post("/tokenize", json={"content": "hi", "model": "m"}, headers=bearer("user"))
        assert r.status_code == 200, r.get_json()  # sent while the model loads: it waits, nothing new is loaded
    finally:
        app.extensions["kolosal"].registry.close_all()

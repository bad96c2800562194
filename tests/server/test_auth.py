"""API keys: sources (inline, ${ENV}, keys file, SHA-256 hashes), Bearer and
X-API-Key, 401 envelope, admin-only endpoints, model directories of POST /engines."""
from __future__ import annotations

import os

import pytest

from kolosal.server.policy.auth import KeyStore
from kolosal.server.config import ConfigError

from .security_support import bare_app, bearer, error_code, sha256_line


def test_missing_and_wrong_key_get_401_envelope_with_www_authenticate():
    c = bare_app(security={"api_keys": ["k-good"]}).test_client()
    r = c.get("/v1/models")
    assert r.status_code == 401 and error_code(r) == "invalid_api_key"
    assert r.get_json()["error"]["type"] == "authentication_error"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = c.get("/v1/models", headers=bearer("k-bad"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert c.get("/v1/models", headers={"Authorization": "Basic k-good"}).status_code == 401


def test_bearer_and_x_api_key_and_custom_header():
    c = bare_app(security={"api_keys": ["k-good"]}).test_client()
    assert c.get("/v1/models", headers=bearer("k-good")).status_code == 200
    assert c.get("/v1/models", headers={"X-API-Key": "k-good"}).status_code == 200
    c = bare_app(auth={"enabled": True, "api_keys": ["k-good"], "api_key_header": "X-Kolosal-Key"}).test_client()
    assert c.get("/models", headers={"X-Kolosal-Key": "k-good"}).status_code == 200
    assert c.get("/models", headers={"X-API-Key": "k-good"}).status_code == 401


def test_key_from_environment_variable(monkeypatch):
    monkeypatch.setenv("KOLOSAL_TEST_KEY", "from-env")
    c = bare_app(auth={"enabled": True, "require_api_key": True, "api_keys": ["${KOLOSAL_TEST_KEY}"]}).test_client()
    assert c.get("/v1/models", headers=bearer("from-env")).status_code == 200
    assert c.get("/v1/models", headers=bearer("${KOLOSAL_TEST_KEY}")).status_code == 401


def test_hashed_keys_file_and_revocation(tmp_path, monkeypatch):
    monkeypatch.setattr(KeyStore, "RECHECK_SECONDS", 0.0)
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# team keys\n{sha256_line('alpha')}\n\nplain-beta\n{sha256_line('root', 'admin')}  # ops\n")
    c = bare_app(security={"api_keys_file": str(keys)}).test_client()
    assert "alpha" not in keys.read_text()
    for k in ("alpha", "plain-beta", "root"):
        assert c.get("/v1/models", headers=bearer(k)).status_code == 200, k
    assert c.get("/v1/models", headers=bearer(sha256_line("alpha").split(":")[1])).status_code == 401
    keys.write_text(f"{sha256_line('root', 'admin')}\n")  # revoke alpha and plain-beta
    os.utime(keys, ns=(1, 10**18))
    assert c.get("/v1/models", headers=bearer("alpha")).status_code == 401
    assert c.get("/v1/models", headers=bearer("plain-beta")).status_code == 401
    assert c.get("/v1/models", headers=bearer("root")).status_code == 200


def test_bad_keys_file_and_auth_without_keys_are_config_errors(tmp_path):
    bad = tmp_path / "keys.txt"
    bad.write_text("sha256:1234\n")
    with pytest.raises(ConfigError, match="64 hex"):
        bare_app(security={"api_keys_file": str(bad)})
    with pytest.raises(ConfigError, match="cannot read"):
        bare_app(security={"api_keys_file": str(tmp_path / "missing.txt")})
    with pytest.raises(ConfigError, match="no API keys"):
        bare_app(auth={"enabled": True, "require_api_key": True})


def test_optional_key_and_auth_disabled():
    c = bare_app(auth={"enabled": True, "require_api_key": False, "api_keys": ["k1"]}).test_client()
    assert c.get("/v1/models").status_code == 200
    assert c.get("/v1/models", headers=bearer("k1")).status_code == 200
    assert c.get("/v1/models", headers=bearer("wrong")).status_code == 401
    c = bare_app(auth={"enabled": False, "api_keys": ["k1"]}).test_client()
    assert c.get("/v1/models").status_code == 200


def test_admin_only_engine_management():
    c = bare_app(security={"api_keys": ["user"], "admin_api_keys": ["admin"]}).test_client()
    body = {"engine_id": "x", "model_path": "nowhere.gguf", "load_immediately": False}
    r = c.post("/v1/engines", json=body, headers=bearer("user"))
    assert r.status_code == 403 and error_code(r) == "admin_key_required"
    assert c.delete("/engines/x", headers=bearer("user")).status_code == 403
    assert c.get("/engines", headers=bearer("user")).status_code == 200
    r = c.delete("/engines/x", headers=bearer("admin"))
    assert r.status_code == 404 and error_code(r) == "engine_not_found"
    assert c.post("/engines", json=body, headers=bearer("admin")).status_code == 403  # no model directory


def test_health_open_by_default_and_protectable():
    c = bare_app(security={"api_keys": ["k"]}).test_client()
    assert c.get("/health").status_code == 200 and c.get("/v1/openapi.json").status_code == 200
    c = bare_app(security={"api_keys": ["k"], "public_health": False}).test_client()
    assert c.get("/health").status_code == 401
    assert c.get("/health", headers=bearer("k")).status_code == 200


@pytest.fixture
def model_dirs(tmp_path, model_path):
    allowed = tmp_path / "models"
    allowed.mkdir()
    (allowed / "empty.gguf").write_bytes(b"")
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"secret")
    (allowed / "link.gguf").symlink_to(secret)
    (allowed / "sub").symlink_to(tmp_path)
    app = bare_app(security={"admin_api_keys": ["admin"],
                             "model_directories": [str(allowed), str(model_path.parent)]})
    return app.test_client(), allowed, secret


@pytest.mark.parametrize("path", ["../secret.gguf", "{allowed}/../secret.gguf", "{secret}", "link.gguf",
                                  "sub/secret.gguf", "/etc/passwd", "/no/such/file.gguf", "../missing.gguf",
                                  "sub/missing.gguf", "{allowed}/\x00.gguf"])
def test_post_engines_refuses_paths_outside_model_directories(model_dirs, path):
    c, allowed, secret = model_dirs
    path = path.format(allowed=allowed, secret=secret)
    r = c.post("/engines", json={"engine_id": "x", "model_path": path}, headers=bearer("admin"))
    assert r.status_code == 403 and error_code(r) == "model_path_not_allowed"
    # same answer whether or not the file exists: nothing to learn about the file system
    assert r.get_json()["error"]["message"] == "model_path must name a file under one of the server's model directories."


def test_post_engines_inside_model_directories(model_dirs, model_path):
    c, allowed, _ = model_dirs
    r = c.post("/engines", json={"engine_id": "x", "model_path": "missing.gguf"}, headers=bearer("admin"))
    assert r.status_code == 404 and error_code(r) == "model_not_found"
    r = c.post("/engines", json={"engine_id": "x", "model_path": str(model_path), "load_immediately": False},
               headers=bearer("admin"))
    assert r.status_code == 201 and r.get_json()["status"] != "loaded"  # registered, not read
    assert c.delete("/engines/x", headers=bearer("admin")).status_code == 200


def test_with_keys_and_no_model_directories_only_configured_model_folders(tmp_path, model_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"x")
    app = bare_app(security={"admin_api_keys": ["admin"]},
                   models=[{"id": "m", "path": str(model_path), "load_at_startup": False}])
    c = app.test_client()
    r = c.post("/engines", json={"engine_id": "x", "model_path": str(other)}, headers=bearer("admin"))
    assert r.status_code == 403
    r = c.post("/engines", json={"engine_id": "x", "model_path": model_path.name, "load_immediately": False},
               headers=bearer("admin"))
    assert r.status_code == 201


def test_deleting_or_breaking_the_keys_file_revokes_its_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(KeyStore, "RECHECK_SECONDS", 0.0)
    keys = tmp_path / "keys.txt"
    keys.write_text("file-key\n")
    c = bare_app(security={"api_keys": ["inline-key"], "api_keys_file": str(keys)}).test_client()
    assert c.get("/v1/models", headers=bearer("file-key")).status_code == 200
    keys.unlink()
    assert c.get("/v1/models", headers=bearer("file-key")).status_code == 401
    assert c.get("/v1/models", headers=bearer("inline-key")).status_code == 200  # inline keys are not the file's
    assert c.get("/v1/models").status_code == 401  # keys stay required
    keys.write_text("file-key\n")
    assert c.get("/v1/models", headers=bearer("file-key")).status_code == 200  # back once the file is
    keys.write_text("file-key\nsha256:12 admin\n")  # broken: none of its keys, not the old ones
    os.utime(keys, ns=(1, 10**18))
    assert c.get("/v1/models", headers=bearer("file-key")).status_code == 401


def test_only_the_keys_file_and_it_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(KeyStore, "RECHECK_SECONDS", 0.0)
    keys = tmp_path / "keys.txt"
    keys.write_text("file-key\n")
    c = bare_app(security={"api_keys_file": str(keys)}).test_client()
    keys.unlink()
    assert c.get("/v1/models", headers=bearer("file-key")).status_code == 401
    assert c.get("/v1/models").status_code == 401  # not an open server


def test_empty_key_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("KOLOSAL_EMPTY_KEY", "")
    for section in ({"auth": {"api_keys": ["${KOLOSAL_EMPTY_KEY}"]}}, {"auth": {"api_key": ""}},
                    {"security": {"admin_api_keys": ["${KOLOSAL_UNSET_KEY_42:-}"]}}):
        with pytest.raises(ConfigError, match="the API key is empty"):
            bare_app(**section)

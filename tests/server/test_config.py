"""Configuration files (both documented shapes), flags, and their errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kolosal.server import ConfigError, load_config
from kolosal.server.__main__ import main

from procs import free_port

from .conftest import REPO


def _json_config(tmp_path, model_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").symlink_to(model_path)
    (tmp_path / "config" / "models.json").write_text(json.dumps({"models": [
        {"engine_id": "llama-7b-chat", "model_path": "models/m.gguf", "auto_load": True, "n_ctx": 4096,
         "n_gpu_layers": 32, "priority": "high"},
        {"engine_id": "codellama-13b", "model_path": "models/m.gguf", "auto_load": False, "n_ctx": 2048,
         "n_gpu_layers": 40, "priority": "medium"}]}))
    path = tmp_path / "config" / "production.json"
    path.write_text(json.dumps({
        "server": {"port": 8080, "host": "0.0.0.0", "max_connections": 1000, "request_timeout_seconds": 300,
                   "keep_alive_timeout_seconds": 60},
        "logging": {"level": "INFO", "file_path": "logs/kolosal-server.log", "max_file_size_mb": 100, "max_files": 10,
                    "console_output": False},
        "security": {"cors_enabled": True, "cors_origins": ["https://yourdomain.com"],
                     "rate_limiting": {"enabled": True, "requests_per_minute": 100, "burst_size": 20}},
        "inference": {"default_context_size": 4096, "default_gpu_layers": 100, "model_cache_size_gb": 8,
                      "job_timeout_seconds": 600, "models_file": "models.json"}}))
    return path


YAML_SEED = """
server:
  port: "8080"
  host: "0.0.0.0"
  max_connections: 1000
  worker_threads: 16
  request_timeout: 120
logging:
  level: "INFO"
  file: "./logs/kolosal-server.log"
  access_log: true
features:
  health_check: true
  metrics: true
auth:
  enabled: true
  require_api_key: true
  api_key: ${TEST_KOLOSAL_KEY}
  rate_limit: {enabled: true, max_requests: 10000, window_size: 3600}
models:
  - id: "production-model"
    path: "./models/production-model.gguf"
    load_at_startup: true
    main_gpu_id: 0
    load_params: {n_ctx: 8192, n_gpu_layers: 50, use_mlock: true, n_parallel: 2, n_batch: 512}
"""


def test_json_shape_with_models_file_and_relative_paths(tmp_path, model_path):
    cfg = load_config(_json_config(tmp_path, model_path))
    assert cfg.server.max_connections == 1000 and cfg.inference.job_timeout_seconds == 600
    assert [m.model_id for m in cfg.models] == ["llama-7b-chat", "codellama-13b"]
    assert cfg.models[0].file == str(tmp_path / "models" / "m.gguf")
    assert [m.startup for m in cfg.models] == [True, False]
    assert cfg.models[1].engine_kwargs(cfg.inference) == {"n_ctx": 2048, "n_gpu_layers": 40, "n_parallel": 4}
    # the config sits in config/: relative paths resolve against its parent, the install root
    assert cfg.logging.file_path == str(tmp_path / "logs" / "kolosal-server.log")
    assert cfg.server.root_dir == str(tmp_path)


def test_yaml_shape_with_env_substitution(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KOLOSAL_KEY", "s3cret")
    path = tmp_path / "config.yaml"
    path.write_text(YAML_SEED)
    cfg = load_config(path)
    assert cfg.server.port == 8080 and cfg.server.request_timeout_seconds == 120
    assert [k.text for k in cfg.settings.keys.entries] == ["s3cret"]
    m = cfg.models[0]
    assert m.file == str(tmp_path / "models" / "production-model.gguf")
    kw = m.engine_kwargs(cfg.inference)
    assert kw["n_ctx"] == 8192 and kw["main_gpu"] == 0 and kw["use_mlock"] is True and kw["n_batch"] == 512


@pytest.mark.parametrize("text, expected", [
    ("models:\n  - {id: a, path: x}\n  - {id: b, path: x, load_params: {n_ctx: big}}\n",
     "models[1].load_params.n_ctx: expected integer"),
    ("server: {prot: 1}\n", "server.prot: unknown key"),
    ("server: {port: 99999}\n", "server.port: "),
    ("models:\n  - {path: x}\n", "models[0]: missing 'id' (or 'engine_id')"),
    ("logging: {console_output: maybe}\n", "logging.console_output: expected boolean"),
    ("auth: {api_key: '${NOT_SET_ANYWHERE_42}'}\n", "auth.api_key: environment variable NOT_SET_ANYWHERE_42 is not set"),
    ("server: [1, 2\n", "not valid YAML"),
])
def test_errors_name_the_path(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert any(expected in line for line in ei.value.errors), ei.value.errors


def test_check_config_prints_effective_config(tmp_path, model_path, capsys):
    path = _json_config(tmp_path, model_path)
    assert main(["--config", str(path), "--check-config", "--port", "9999", "--api-key", "k"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["server"]["port"] == 9999 and out["auth"]["api_keys"] == ["***"]
    assert len(out["models"]) == 2


def test_flags_add_models(tmp_path, model_path, capsys):
    models = tmp_path / "more.yaml"
    models.write_text(yaml.safe_dump({"models": [{"id": "y", "path": str(model_path)}]}))
    assert main(["--check-config", "--model", "x", str(model_path), "--models", str(models)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in out["models"]] == ["y", "x"]
    assert out["server"]["host"] == "127.0.0.1" and out["server"]["port"] == 8080


def test_missing_model_file_fails_before_binding(tmp_path):
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"server": {"port": port}, "models": [{"id": "a", "path": "nope.gguf"}]}))
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--config", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert f"models[0].path: model file not found: {tmp_path / 'nope.gguf'}" in p.stderr
    assert "listening" not in p.stdout


def test_check_config_exit_1_and_version():
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--check-config", "--model", "a", "/no/such.gguf"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "models[0].path" in p.stderr
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--version"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("kolosal-server ")


@pytest.mark.parametrize("section", [{"auth": {"api_key": "${UNSET_KOLOSAL_KEY_42:-}"}},
                                     {"security": {"api_keys": ["${UNSET_KOLOSAL_KEY_42:-}"]}},
                                     {"auth": {"admin_api_keys": ["  "]}}])
def test_api_key_that_resolves_to_empty_stops_startup(tmp_path, section):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(section))
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--config", str(path), "--port", str(free_port())],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "the API key is empty" in p.stderr, p.stderr
    assert "listening" not in p.stdout


def test_check_config_masks_passwords_inside_uris(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"security": {"rate_limiting": {
        "enabled": True, "requests_per_minute": 10, "storage_uri": "redis://:hunter2@cache.internal:6379/0"}},
        "auth": {"rate_limit": {"enabled": True, "max_requests": 5, "window_size": 60,
                                "storage_uri": "redis://:hunter2@cache.internal:6379/0"}}}))
    assert main(["--config", str(path), "--check-config"]) == 0
    text = capsys.readouterr().out
    assert "hunter2" not in text
    out = json.loads(text)
    assert out["security"]["rate_limiting"]["storage_uri"] == "redis://:***@cache.internal:6379/0"


def test_uri_password_masking():
    from kolosal.server.config import mask_uri_passwords
    assert mask_uri_passwords("redis://user:p%40ss@h:1/0") == "redis://user:***@h:1/0"
    assert mask_uri_passwords("rediss://:s3cret@h") == "rediss://:***@h"
    assert mask_uri_passwords("redis://h:6379/0") == "redis://h:6379/0"
    assert mask_uri_passwords("memory://") == "memory://"


def test_root_dir_key_and_root_flag(tmp_path, model_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "srv" / "models").mkdir(parents=True)
    (tmp_path / "srv" / "models" / "m.gguf").symlink_to(model_path)
    path = tmp_path / "etc" / "kolosal.yaml"
    path.write_text(yaml.safe_dump({"server": {"root_dir": "../srv"}, "logging": {"file": "logs/k.log"},
                                    "models": [{"id": "m", "path": "models/m.gguf"}]}))
    cfg = load_config(path)
    assert cfg.server.root_dir == str(tmp_path / "srv")
    assert cfg.models[0].file == str(tmp_path / "srv" / "models" / "m.gguf")
    assert cfg.logging.file_path == str(tmp_path / "srv" / "logs" / "k.log")
    other = tmp_path / "other"
    other.mkdir()
    assert load_config(path, root=other).logging.file_path == str(other / "logs" / "k.log")  # --root wins
    with pytest.raises(ConfigError, match=f"--root: not a directory: {tmp_path / 'nowhere'}"):
        load_config(path, root=tmp_path / "nowhere")
    path.write_text(yaml.safe_dump({"server": {"root_dir": "../nowhere"}}))
    with pytest.raises(ConfigError, match=f"server.root_dir: not a directory: {tmp_path / 'nowhere'}"):
        load_config(path)


def test_models_file_named_but_missing(tmp_path):
    path = tmp_path / "config" / "production.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"inference": {"models_file": "models.json"}}))
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.errors == [f"inference.models_file: models file not found: {tmp_path / 'models.json'} "
                               f"(nor beside the config file: {path.parent / 'models.json'})"]


@pytest.mark.parametrize("text", ['{"server": {"prot": 1}}', '{"logging": {"level": "LOUD"}}',
                                  '{"models": [{"id": "a", "path": "nowhere.gguf"}]}'])
def test_refusal_names_the_key_and_the_config_files_absolute_path(tmp_path, monkeypatch, capsys, text):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "production.json").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "config/production.json", "--check-config"]) == 1
    err = capsys.readouterr().err
    assert f"configuration error in {tmp_path / 'config' / 'production.json'}:" in err, err
    assert json.loads(text).popitem()[0] in err


def test_models_file_errors_name_the_models_file(tmp_path):
    """A problem inside the models.json read beside the config names that file, not only the config."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "production.json").write_text("{}")
    models = tmp_path / "config" / "models.json"
    models.write_text('{"models": [{"engine_id": "a", "model_path": "${NOT_SET_ANYWHERE_43}"}]}')
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "config" / "production.json")
    assert ei.value.errors == [f"{models}: models[0].model_path: environment variable NOT_SET_ANYWHERE_43 is not set"]


def test_missing_api_keys_file_names_key_and_path(tmp_path, capsys):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "production.json").write_text('{"security": {"api_keys_file": "keys.txt"}}')
    assert main(["--config", str(tmp_path / "config" / "production.json"), "--check-config"]) == 1
    assert f"api_keys_file: cannot read the API keys file {tmp_path / 'keys.txt'}: " in capsys.readouterr().err

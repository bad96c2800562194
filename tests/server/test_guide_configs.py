"""The deployment guide's configuration files, as written (tests/data/guide/),
in the guide's layout: ``config/production.json``, ``config/models.json``,
``models/``, ``logs/`` under one install root. The server is started from
them the way the guide says (``python -m kolosal.server --config
config/production.json``), from another working directory, and with
``--root`` as a service would be; only ``--host``/``--port`` flags keep it
on a free loopback port."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import httpx
import pytest

from procs import free_port

from .conftest import LiveServer, wait_healthy

GUIDE = Path(__file__).resolve().parents[1] / "data" / "guide"
JSON_MODELS = ["models/llama-7b-chat-q4.gguf", "models/codellama-13b-q4.gguf"]
YAML_MODELS = ["models/production-model.gguf"]


def make_root(root: Path, model_path: Path, configs: List[str], models: List[str], folder: str = "config") -> Path:
    """An install root: the guide's files copied unchanged into ``folder``, links named as the guide's models."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in configs:
        shutil.copyfile(GUIDE / name, root / folder / name)
    for rel in models:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(model_path)
    return root


def launch(args: List[str], cwd: Path, out: Path, port: int, key: Optional[str] = None) -> LiveServer:
    with out.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kolosal.server", *args, "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    server = LiveServer(proc, f"http://127.0.0.1:{port}", out.parent / "unused.yaml")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    wait_healthy(server, log=out.read_text, headers=headers)
    return server


def check_config(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kolosal.server", *args, "--check-config"], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def json_lines(path: Path) -> List[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def json_root(tmp_path_factory, model_path) -> Path:
    return make_root(tmp_path_factory.mktemp("install") / "kolosal", model_path, ["production.json", "models.json"],
                     JSON_MODELS)


@pytest.fixture(scope="module")
def json_server(json_root, tmp_path_factory) -> Iterator[LiveServer]:
    out = tmp_path_factory.mktemp("json-out") / "stdout.txt"
    server = launch(["--config", "config/production.json"], json_root, out, free_port())
    yield server
    assert server.stop() == 0, out.read_text()
    server.stop(signal.SIGKILL)


def test_guide_json_serves_the_models_of_models_json(json_server, json_root):
    models = httpx.get(json_server.v1 + "/models", timeout=10).json()
    assert sorted(m["id"] for m in models["data"]) == ["codellama-13b", "llama-7b-chat"]
    health = httpx.get(json_server.base_url + "/v1/health", timeout=10).json()
    states = {e["engine_id"]: e["status"] for e in health["engines"]}
    assert states == {"llama-7b-chat": "loaded", "codellama-13b": "registered"}  # auto_load true / false
    r = httpx.post(json_server.v1 + "/chat/completions", timeout=60, json={
        "model": "llama-7b-chat", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    # the guide's CORS and rate-limit settings are in force
    r = httpx.get(json_server.v1 + "/models", headers={"Origin": "https://yourdomain.com"}, timeout=10)
    assert r.headers["access-control-allow-origin"] == "https://yourdomain.com"
    assert r.headers["ratelimit-limit"] == "20"
    status = httpx.get(json_server.base_url + "/engines/llama-7b-chat/status", timeout=10).json()
    assert status["model_path"] == str(json_root / JSON_MODELS[0])


def test_guide_json_logs_under_the_install_root(json_server, json_root):
    log = json_root / "logs" / "kolosal-server.log"
    assert log.is_file() and not (json_root / "config" / "logs").exists()
    lines = json_lines(log)
    assert any("listening on" in x["message"] for x in lines)
    assert all({"timestamp", "level", "component", "message"} <= set(x) for x in lines)


def test_guide_json_from_another_working_directory_and_with_root(json_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = check_config(["--config", str(json_root / "config" / "production.json")], elsewhere)
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    assert cfg["server"]["root_dir"] == str(json_root)
    assert cfg["inference"]["models_file"] == str(json_root / "config" / "models.json")
    assert [m["model_path"] for m in cfg["models"]] == [str(json_root / m) for m in JSON_MODELS]
    assert cfg["logging"]["file_path"] == str(json_root / "logs" / "kolosal-server.log")
    # a service: the config kept elsewhere (/etc style), the install root named by --root
    etc = make_root(tmp_path / "etc", Path("/nonexistent"), ["production.json", "models.json"], [], folder="kolosal")
    p = check_config(["--config", str(etc / "kolosal" / "production.json"), "--root", str(json_root)], elsewhere)
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    assert cfg["inference"]["models_file"] == str(etc / "kolosal" / "models.json")
    assert [m["model_path"] for m in cfg["models"]] == [str(json_root / m) for m in JSON_MODELS]


def test_guide_json_missing_model_names_the_absolute_path(tmp_path, model_path):
    root = make_root(tmp_path / "kolosal", model_path, ["production.json", "models.json"], JSON_MODELS[1:])
    p = check_config(["--config", "config/production.json"], root)
    assert p.returncode == 1
    missing = root / JSON_MODELS[0]
    assert (f"models[0].model_path: model file not found: {missing} ({root / 'config' / 'models.json'}: "
            f"models[0]); 'models/llama-7b-chat-q4.gguf' is relative to the install root {root}") in p.stderr


@pytest.fixture(scope="module")
def yaml_root(tmp_path_factory, model_path) -> Path:
    return make_root(tmp_path_factory.mktemp("install-yaml") / "kolosal", model_path, ["config.yaml"], YAML_MODELS,
                     folder=".")


def test_guide_yaml_needs_a_key_then_serves(yaml_root, tmp_path):
    # auth.enabled and require_api_key without a key: refused before binding, saying why
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--config", "config.yaml", "--port", str(free_port())],
                       cwd=yaml_root, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "auth.require_api_key: no API keys are configured" in p.stderr
    server = launch(["--config", "config.yaml", "--api-key", "guide-key"], yaml_root, tmp_path / "out.txt",
                    free_port(), key="guide-key")
    try:
        auth = {"Authorization": "Bearer guide-key"}
        assert httpx.get(server.v1 + "/models", timeout=10).status_code == 401
        models = httpx.get(server.v1 + "/models", headers=auth, timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["production-model"]
        r = httpx.post(server.v1 + "/chat/completions", headers={**auth, "X-Request-ID": "guide-yaml"}, timeout=60,
                       json={"model": "production-model", "messages": [{"role": "user", "content": "Hi"}],
                             "max_tokens": 3})
        assert r.status_code == 200 and r.headers["ratelimit-limit"] == "10000"
        assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 200  # features.metrics
        status = httpx.get(server.base_url + "/engines/production-model/status", headers=auth, timeout=10).json()
        assert status["model_path"] == "production-model.gguf"  # ordinary keys see the file name only
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
    access = [x for x in json_lines(yaml_root / "logs" / "kolosal-server.log") if x["component"] == "access"]
    assert [(x["path"], x["status"]) for x in access if x["request_id"] == "guide-yaml"] == [
        ("/v1/chat/completions", 200)]


def test_guide_logging_handlers_block(tmp_path, model_path):
    """The guide's production.json with its logging section replaced by the guide's handlers block."""
    root = make_root(tmp_path / "kolosal", model_path, ["models.json"], JSON_MODELS)
    config = json.loads((GUIDE / "production.json").read_text())
    config["logging"] = json.loads((GUIDE / "logging.json").read_text())
    (root / "config" / "production.json").write_text(json.dumps(config))
    out = tmp_path / "console.txt"
    server = launch(["--config", "config/production.json"], root, out, free_port())
    try:
        r = httpx.post(server.v1 + "/chat/completions", headers={"X-Request-ID": "guide-log"}, timeout=60, json={
            "model": "llama-7b-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert r.status_code == 200
        assert httpx.post(server.v1 + "/chat/completions", timeout=60, json={
            "model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}).status_code == 404
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
    inference = json_lines(root / "logs" / "inference.log")
    assert [(x["component"], x["request_id"], x["output_tokens"]) for x in inference] == [
        ("completion_route", "guide-log", 3)]
    everything = json_lines(root / "logs" / "kolosal-server.log")
    assert any(x["request_id"] == "guide-log" and x["component"] == "completion_route" for x in everything)
    assert any(x["component"] == "kolosal.llama" for x in everything)  # llama.cpp's lines, at INFO
    # the console handler is at ERROR: nothing at INFO reaches it
    console = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
    assert all(x["level"] in ("ERROR", "CRITICAL") for x in console)


def test_guide_handlers_rotate_under_load_without_losing_lines(tmp_path, model_path):
    """The guide's handlers block with its sizes made small: 4 clients at once
    make the files rotate many times; every request has exactly one access
    line across the rotated files."""
    from concurrent.futures import ThreadPoolExecutor

    root = make_root(tmp_path / "kolosal", model_path, ["models.json"], JSON_MODELS)
    config = json.loads((GUIDE / "production.json").read_text())
    config["logging"] = json.loads((GUIDE / "logging.json").read_text())
    config["logging"]["access_log"] = True
    config["logging"]["handlers"]["file"].update(max_size="8KB", backup_count=100)
    config["security"]["rate_limiting"]["enabled"] = False
    (root / "config" / "production.json").write_text(json.dumps(config))
    server = launch(["--config", "config/production.json"], root, tmp_path / "console.txt", free_port())

    def client(n: int) -> List[int]:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            return [c.get("/v1/models", headers={"X-Request-ID": f"load-{n}-{i}"}).status_code for i in range(50)]

    try:
        with ThreadPoolExecutor(4) as pool:
            codes = [code for codes in pool.map(client, range(4)) for code in codes]
        assert codes == [200] * 200
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
    files = sorted((root / "logs").glob("kolosal-server.log*"))
    assert len(files) > 3, files
    ids = [x["request_id"] for f in files for x in json_lines(f)
           if x["component"] == "access" and x["request_id"].startswith("load-")]
    assert sorted(ids) == sorted(f"load-{n}-{i}" for n in range(4) for i in range(50))

"""Operations rules through live servers: two instances sharing one Redis
quota, a full queue, and log rotation."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from procs import start_redis

from .conftest import MODEL_ID, server_config, start_server
from .security_support import bearer


@pytest.fixture
def redis_uri(tmp_path):
    yield from start_redis(tmp_path)


def test_two_live_instances_share_one_redis_quota(model_path, tmp_path, redis_uri):
    servers = []
    try:
        for name in ("one", "two"):
            cfg = server_config(model_path)
            cfg["models"] = []
            cfg["security"] = {"api_keys": ["shared"], "rate_limiting": {
                "enabled": True, "requests_per_minute": 60, "burst_size": 4, "storage_uri": redis_uri}}
            (tmp_path / name).mkdir()
            servers.append(start_server(cfg, tmp_path / name))
        one, two = (s.v1 + "/models" for s in servers)
        statuses = [httpx.get(url, headers=bearer("shared")).status_code for url in (one, two, one, two)]
        assert statuses == [200, 200, 200, 200]
        r = httpx.get(two, headers=bearer("shared"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert httpx.get(one, headers=bearer("shared")).status_code == 429
    finally:
        for s in servers:
            s.stop()


def test_full_queue_gets_503_server_busy(model_path, tmp_path):
    cfg = server_config(model_path, max_queued_requests=1)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=1)
    server = start_server(cfg, tmp_path)
    started = threading.Event()

    def long_stream():
        body = {"model": MODEL_ID, "prompt": "Tell a story.", "max_tokens": 400, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    started.set()

    def queued():
        httpx.post(server.v1 + "/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 2},
                   timeout=120)

    try:
        runner = threading.Thread(target=long_stream)
        runner.start()
        assert started.wait(60)
        waiting = threading.Thread(target=queued)
        waiting.start()
        for _ in range(100):  # until the second request sits in the queue
            st = httpx.get(server.base_url + f"/engines/{MODEL_ID}/status").json()
            if st["stats"]["queued"] >= 1:
                break
            threading.Event().wait(0.05)
        r = httpx.post(server.v1 + "/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
        assert r.headers["Retry-After"] == "1"
        runner.join(120)
        waiting.join(120)
    finally:
        server.stop()


def test_log_file_rotates_with_json_lines(model_path, tmp_path):
    cfg = server_config(model_path)
    log_path = tmp_path / "logs" / "kolosal.log"
    cfg["logging"] = {"level": "INFO", "file_path": str(log_path), "max_file_size_mb": 0.01, "max_files": 3,
                      "console_output": False, "access_log": True}
    server = start_server(cfg, tmp_path)
    try:
        for _ in range(80):
            assert httpx.get(server.v1 + "/models").status_code == 200
    finally:
        assert server.stop() == 0
    files = sorted(p.name for p in log_path.parent.iterdir())
    assert files == ["kolosal.log", "kolosal.log.1", "kolosal.log.2"]  # at most max_files
    for p in log_path.parent.iterdir():
        assert p.stat().st_size <= 0.011 * 1024 * 1024
        for line in p.read_text().splitlines():
            json.loads(line)

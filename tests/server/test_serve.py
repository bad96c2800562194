"""The process: Waitress settings, graceful drain on SIGTERM/SIGINT, exit 0."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from kolosal.server.config import load_config
from kolosal.server.serve import waitress_options

from .conftest import MODEL_ID, REPO, chat_body, server_config, start_server


def test_waitress_options_from_config():
    cfg = load_config(data={"server": {"worker_threads": 3, "max_connections": 7, "keep_alive_timeout_seconds": 9}})
    opts = waitress_options(cfg)
    assert opts["threads"] == 3 and opts["connection_limit"] == 7 and opts["channel_timeout"] == 9
    assert opts["channel_request_lookahead"] > 0
    # forwarding headers are judged by the app against security.trusted_proxies, not cleared by Waitress
    assert opts["clear_untrusted_proxy_headers"] is False and "trusted_proxy" not in opts


def test_sigterm_drains_in_flight_request_then_exits_0(model_path, tmp_path):
    server = start_server(server_config(model_path, shutdown_grace_seconds=60), tmp_path)
    try:
        events = []
        with httpx.stream("POST", server.v1 + "/chat/completions", timeout=60,
                          json=chat_body("Tell a story", max_tokens=128, ignore_eos=True, stream=True)) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    events.append(line[6:])
                    break
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            health = None
            while time.monotonic() < deadline:
                health = httpx.get(server.base_url + "/health", timeout=5)
                if health.json()["status"] == "draining":
                    break
                time.sleep(0.05)
            assert health is not None and health.status_code == 503 and health.json()["status"] == "draining"
            refused = httpx.post(server.v1 + "/chat/completions", json=chat_body(), timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_draining"
            events += [line[6:] for line in lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        reasons = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
        assert reasons[-1] == "length"
        assert server.proc.wait(30) == 0
    finally:
        server.stop(signal.SIGKILL)


def test_sigint_idle_exits_0(model_path, tmp_path):
    server = start_server(server_config(model_path), tmp_path)
    try:
        assert httpx.get(server.v1 + "/models", timeout=10).json()["data"][0]["id"] == MODEL_ID
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
    finally:
        server.stop(signal.SIGKILL)


def test_model_and_api_key_flags_without_model_config(model_path, tmp_path):
    cfg = {"server": {"host": "127.0.0.1", "port": server_config(model_path)["server"]["port"]}}
    server = start_server(cfg, tmp_path, ["--model", "demo", str(model_path), "--api-key", "k1"])
    try:
        assert httpx.get(server.v1 + "/models", timeout=10).status_code == 401
        models = httpx.get(server.v1 + "/models", headers={"Authorization": "Bearer k1"}, timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["demo"]
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)


def test_process_priority_and_cpu_affinity_applied_and_shown(model_path, tmp_path):
    import psutil
    server = start_server(server_config(model_path, process_priority="low", cpu_affinity=[0]), tmp_path)
    try:
        health = httpx.get(server.base_url + "/health", timeout=10).json()
        assert health["process"] == {"pid": server.proc.pid, "priority": "low", "nice": 10, "cpu_affinity": [0]}
        # every thread, Waitress' workers and the engine's included, runs with them
        threads = [psutil.Process(t.id) for t in psutil.Process(server.proc.pid).threads()]
        assert len(threads) > 8
        assert {(t.nice(), tuple(t.cpu_affinity())) for t in threads} == {(10, (0,))}
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("server_section, expected", [
    ({"cpu_affinity": [0, 4096]}, "server.cpu_affinity: no CPU 4096 on this machine (it has CPUs 0-"),
    ({"cpu_affinity": "0x0"}, "server.cpu_affinity: the CPU mask selects no CPU"),
    ({"process_priority": "turbo"}, "server.process_priority: 'turbo' is not a priority (idle, low, below_normal"),
    ({"read_timeout_seconds": 300}, "server.read_timeout_seconds: Waitress has no separate read timeout"),
    ({"write_timeout_seconds": 300}, "server.write_timeout_seconds: Waitress has no separate write timeout"),
])
def test_process_and_timeout_settings_refused_before_start(tmp_path, server_section, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"server": server_section}))
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--config", str(path), "--check-config"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and expected in p.stderr, p.stderr


def test_cpu_mask_spellings():
    assert load_config(data={"server": {"cpu_affinity": "0xFF"}}).server.cpu_affinity == list(range(8))
    assert load_config(data={"server": {"cpu_affinity": 5}}).server.cpu_affinity == [0, 2]
    assert load_config(data={"server": {"process_priority": "High"}}).server.process_priority == "high"
    assert load_config(data={"server": {"process_priority": "BelowNormal"}}).server.process_priority == "below_normal"


def test_keep_alive_timeout_is_waitress_channel_timeout():
    cfg = load_config(data={"server": {"keep_alive_timeout_seconds": 75, "request_timeout_seconds": 300}})
    opts = waitress_options(cfg)
    assert opts["channel_timeout"] == 75 and opts["cleanup_interval"] <= 30

"""One model across hosts: llama.cpp's RPC backend behind the live server.

Two workers (``python -m kolosal.rpc_worker``) on 127.0.0.2 and 127.0.0.3;
the server serves the demo model twice: ``local`` on its own CPU and
``sharded`` with every layer on the workers. The last test kills a worker
while a request runs on it."""
from __future__ import annotations

import json
import signal
import threading
import time
from typing import Iterator, List

import httpx
import pytest

from kolosal.server.config import ConfigError, load_config

from procs import free_port

from .conftest import LiveServer, start_server
from .rpc_workers import Worker, closed_endpoint, start_worker

THREADS = 1
LOAD = {"n_ctx": 1024, "n_parallel": 2, "seed": 42, "n_threads": THREADS}


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[List[Worker]]:
    tmp = tmp_path_factory.mktemp("rpc-workers")
    started: List[Worker] = []
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            started.append(start_worker(host, tmp))
        yield started
    finally:
        for w in started:
            w.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server(model_path, workers, tmp_path_factory) -> Iterator[LiveServer]:
    config = {
        "server": {"host": "127.0.0.1", "port": free_port(), "worker_threads": 8},
        "logging": {"level": "WARNING"},
        "inference": {"job_timeout_seconds": 120},
        "models": [
            {"id": "local", "path": str(model_path), "load_at_startup": True, "load_params": dict(LOAD)},
            {"id": "sharded", "path": str(model_path), "load_at_startup": True,
             "load_params": {**LOAD, "rpc_servers": [w.endpoint for w in workers]}},
        ],
    }
    srv = start_server(config, tmp_path_factory.mktemp("rpc-live"))
    for model in ("local", "sharded"):
        wait_loaded(srv, model)
    yield srv
    srv.stop(signal.SIGKILL if srv.proc.poll() is None else signal.SIGTERM)


def wait_loaded(srv: LiveServer, model: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(f"{srv.base_url}/engines/{model}/status", timeout=10).json()
        if status["status"] in ("loaded", "error"):
            break
        time.sleep(0.1)
    assert status and status["status"] == "loaded", (status, srv.log())


def complete(srv: LiveServer, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "prompt": "The three primary colours are", "max_tokens": 24, "temperature": 0,
            "seed": 1, **extra}
    return httpx.post(f"{srv.v1}/completions", json=body, timeout=120)


def test_status_lists_the_local_cpu_and_each_remote_device(server, workers):
    info = httpx.get(f"{server.base_url}/engines/sharded/status", timeout=10).json()
    assert info["status"] == "loaded"
    devices = info["devices"]
    assert devices[0]["kind"] == "cpu"
    remote = [d for d in devices if d["kind"] == "rpc"]
    assert [d["endpoint"] for d in remote] == [w.endpoint for w in workers]
    assert all(d["memory_total_bytes"] > 0 for d in remote)
    local = httpx.get(f"{server.base_url}/engines/local/status", timeout=10).json()
    assert [d["kind"] for d in local["devices"]] == ["cpu"]


def test_greedy_output_on_the_workers_is_identical_to_the_local_engine(server):
    local = complete(server, "local")
    sharded = complete(server, "sharded")
    assert local.status_code == 200, local.text
    assert sharded.status_code == 200, sharded.text
    text = local.json()["choices"][0]["text"]
    assert text
    assert sharded.json()["choices"][0]["text"] == text
    assert sharded.json()["usage"] == local.json()["usage"]


def test_a_public_worker_address_is_a_config_error_unless_allowed(model_path):
    entry = {"id": "m", "path": str(model_path), "load_at_startup": False,
             "load_params": {"rpc_servers": ["8.8.8.8:50052"]}}
    with pytest.raises(ConfigError) as err:
        load_config(data={"models": [entry]})
    assert "rpc_servers" in str(err.value) and "8.8.8.8:50052" in str(err.value)
    entry["load_params"]["allow_public_rpc"] = True
    load_config(data={"models": [entry]})


def test_a_public_worker_address_is_refused_by_post_engines(server, model_path):
    r = httpx.post(f"{server.base_url}/engines", timeout=30, json={
        "engine_id": "public", "model_path": str(model_path),
        "loading_parameters": {"rpc_servers": ["8.8.8.8:50052"]}})
    assert r.status_code == 400, r.text
    assert "rpc_servers" in r.json()["error"]["param"]


def test_an_unreachable_worker_is_a_load_error_naming_it(server, model_path):
    endpoint = closed_endpoint("127.0.0.3")
    r = httpx.post(f"{server.base_url}/engines", timeout=30, json={
        "engine_id": "unreachable", "model_path": str(model_path),
        "loading_parameters": {**LOAD, "rpc_servers": [endpoint]}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "worker_unreachable"
    assert endpoint in err["message"]
    assert server.proc.poll() is None


def test_a_killed_worker_fails_its_request_and_engine_but_not_other_models(server, workers):
    """Runs last in this module: it kills a worker."""
    events: List[str] = []
    first = threading.Event()

    def stream() -> None:
        body = {"model": "sharded", "prompt": "Count from one to one hundred:", "max_tokens": 400,
                "temperature": 0, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{server.v1}/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first.set()
        first.set()

    t = threading.Thread(target=stream)
    t.start()
    assert first.wait(60), "no streamed token"
    workers[0].proc.send_signal(signal.SIGKILL)
    t.join(60)
    assert not t.is_alive(), "the stream did not end after the worker was killed"
    errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    assert errors, events[-3:]
    assert errors[0]["code"] == "worker_unreachable"
    assert workers[0].endpoint in errors[0]["message"]

    health = httpx.get(f"{server.base_url}/health", timeout=10)
    assert health.status_code == 200  # the other model is loaded
    assert {e["engine_id"]: e["status"] for e in health.json()["engines"]} == {"local": "loaded", "sharded": "error"}
    info = httpx.get(f"{server.base_url}/engines/sharded/status", timeout=10).json()
    assert info["status"] == "error"
    assert info["error_code"] == "worker_unreachable"

    # The other model keeps serving, and the server process lives.
    r = complete(server, "local", max_tokens=4)
    assert r.status_code == 200, r.text
    assert server.proc.poll() is None

    # The failed model is refused with the same code while its worker is gone.
    r = complete(server, "sharded", max_tokens=4)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "worker_unreachable"

    # A graceful stop does not wait for the parked thread.
    assert server.stop(signal.SIGTERM, timeout=60) == 0, server.log()

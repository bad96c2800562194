"""Multi-model serving through a live server: lazy loads, the memory budget,
integrity errors and hot reload, with the real SmolLM2 file under several ids."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from procs import free_port

from .conftest import start_server

LOAD = {"n_ctx": 512, "n_parallel": 1, "n_threads": 1}
FOOTPRINT_MIB = 110  # weights + KV of one copy at n_ctx 512 (measured ~108 MiB)


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    models = [
        {"id": "a", "path": str(model_path), "load_at_startup": False, "priority": "low", "load_params": LOAD},
        {"id": "b", "path": str(model_path), "load_at_startup": False, "priority": "high", "pinned": True,
         "load_params": LOAD},
        {"id": "c", "path": str(model_path), "load_at_startup": False, "priority": "medium", "load_params": LOAD},
        {"id": "tampered", "path": str(model_path), "load_at_startup": False, "sha256": "ab" * 32,
         "load_params": LOAD},
    ]
    config = {
        "server": {"host": "127.0.0.1", "port": free_port(), "worker_threads": 8},
        "logging": {"level": "INFO"},
        # Room for two copies, not three.
        "inference": {"model_cache_size_gb": 2.5 * FOOTPRINT_MIB / 1024, "job_timeout_seconds": 120},
        "models": models,
    }
    srv = start_server(config, tmp_path_factory.mktemp("memory"))
    with httpx.Client(base_url=srv.base_url, timeout=120) as http:
        yield srv, http
    srv.stop()


def states(http):
    return {e["engine_id"]: e["status"] for e in http.get("/engines").json()["engines"]}


def chat(http, model, **extra):
    return http.post("/v1/chat/completions", json={"model": model, "max_tokens": 4, "messages": [
        {"role": "user", "content": "Hi"}], **extra})


def stream_in_background(http, model, max_tokens, started, result):
    def run():
        body = {"model": model, "prompt": "Tell a long story.", "max_tokens": max_tokens, "ignore_eos": True,
                "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    result.append(json.loads(line[6:]))
                    started.set()
                elif line == "data: [DONE]":
                    result.append("DONE")
    t = threading.Thread(target=run)
    t.start()
    return t


def test_models_load_lazily_and_the_budget_evicts_low_priority_first(server):
    _, http = server
    assert states(http)["a"] == "registered"
    assert chat(http, "a").status_code == 200
    assert chat(http, "b").status_code == 200
    assert states(http)["a"] == "loaded" and states(http)["b"] == "loaded"
    assert chat(http, "c").status_code == 200  # no room for three: a (low, idle) goes
    s = states(http)
    assert (s["a"], s["b"], s["c"]) == ("registered", "loaded", "loaded")
    status = http.get("/engines/c/status").json()
    assert status["memory"]["measured_bytes"] > 0
    assert abs(status["memory"]["estimated_bytes"] - status["memory"]["measured_bytes"]) < 0.03 * status["memory"]["measured_bytes"]


def test_busy_and_pinned_models_are_kept_and_the_request_gets_503(server):
    _, http = server
    chat(http, "c")  # c loaded, b pinned
    started, result = threading.Event(), []
    t = stream_in_background(http, "c", 300, started, result)
    assert started.wait(60)
    r = chat(http, "a")  # would need c (busy) or b (pinned) to go
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "insufficient_memory" and "busy" in err["message"] and "pinned" in err["message"]
    t.join(120)
    assert result[-1] == "DONE" and result[-2]["choices"][0]["finish_reason"] == "length"
    assert chat(http, "a").status_code == 200  # c is idle now and makes room


def test_checksum_mismatch_is_its_own_error_and_others_keep_serving(server):
    _, http = server
    r = chat(http, "tampered")
    assert r.status_code == 503 and r.json()["error"]["code"] == "sha256_mismatch"
    status = http.get("/engines/tampered/status").json()
    assert status["status"] == "error" and status["error_code"] == "sha256_mismatch"
    assert chat(http, "b").status_code == 200


def test_hot_reload_during_a_stream(server, model_path):
    _, http = server
    chat(http, "b")
    started, result = threading.Event(), []
    t = stream_in_background(http, "b", 120, started, result)
    assert started.wait(60)
    r = http.post("/engines", json={"engine_id": "b", "model_path": str(model_path), "replace": True,
                                    "loading_parameters": {**LOAD, "n_ctx": 1024}})
    assert r.status_code == 200, r.text
    assert r.json()["loading_parameters"]["n_ctx"] == 1024
    t.join(120)
    assert result[-1] == "DONE" and result[-2]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in result[:-1] if c.get("choices") and c["choices"][0].get("text")) > 50
    assert http.get("/v1/models/b").json()["context_length"] == 1024
    assert chat(http, "b").status_code == 200


def test_load_and_eviction_counters_are_exported(server):
    from prometheus_client.parser import text_string_to_metric_families
    _, http = server
    text = http.get("/metrics/prometheus").text
    values = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert values["kolosal_model_loads_total"] >= 3
    assert values["kolosal_model_evictions_total"] >= 1
    assert values["kolosal_model_load_failures_total"] >= 2  # insufficient_memory and sha256_mismatch
    assert values["kolosal_model_load_seconds_total"] > 0

"""The host-memory prompt cache through a live server: conversations that lose
their slot come back cached, the cache counts in the model's memory, and
log-probability bytes are the tokens' raw bytes."""
from __future__ import annotations

import httpx
import pytest

from procs import free_port

from .conftest import start_server

LOAD = {"n_ctx": 1024, "n_parallel": 1, "n_threads": 1, "seed": 1, "cache_ram_mib": 64}


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    config = {
        "server": {"host": "127.0.0.1", "port": free_port(), "worker_threads": 4},
        "logging": {"level": "WARNING"},
        "inference": {"job_timeout_seconds": 120},
        "models": [{"id": "m", "path": str(model_path), "load_at_startup": True, "load_params": LOAD}],
    }
    srv = start_server(config, tmp_path_factory.mktemp("prompt-cache"))
    with httpx.Client(base_url=srv.base_url, timeout=120) as http:
        yield srv, http
    srv.stop()


def chat(http, messages, **extra):
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 4,
                                                 "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def conversation(i):
    rules = " ".join(f"Rule {k}: answer about topic {i * 5 + k}." for k in range(10))
    return [{"role": "system", "content": f"You are helper {i}. {rules}"}, {"role": "user", "content": "Hello?"}]


def test_conversation_that_lost_its_slot_comes_back_cached(server):
    _, http = server
    a, b = conversation(1), conversation(2)
    first = chat(http, a)
    a += [first["choices"][0]["message"], {"role": "user", "content": "More?"}]
    chat(http, b)  # takes the only slot: A's state goes to host memory
    status = http.get("/engines/m/status").json()
    assert status["memory"]["prompt_cache_bytes"] > 0
    assert status["memory"]["prompt_cache_bytes"] == status["stats"]["prompt_cache_bytes"]
    assert status["stats"]["prompt_cache_entries"] == 1
    held = status["memory"]["prompt_cache_bytes"]
    per_engine = {e["engine_id"]: e for e in
                  http.get("/completion-metrics").json()["completion_metrics"]["per_engine"]}
    assert per_engine["m"]["prompt_cache_bytes"] == held
    prom = [line.split() for line in http.get("/metrics/prometheus").text.splitlines()
            if line.startswith('kolosal_prompt_cache_bytes{engine="m"}')]
    assert len(prom) == 1 and float(prom[0][1]) == held
    again = chat(http, a)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"]


def test_logprob_bytes_are_the_raw_token_bytes(server):
    _, http = server
    # "¡" is two bytes, c2 a1, and two tokens of the byte-level vocabulary: force the second.
    tokens = http.post("/tokenize", json={"model": "m", "content": "¡"}).json()["tokens"]
    assert len(tokens) == 2
    body = chat(http, [{"role": "user", "content": "Hi"}], max_tokens=1, logprobs=True, top_logprobs=2,
                logit_bias={str(tokens[1]): 100})
    lp = body["choices"][0]["logprobs"]["content"][0]
    assert lp["bytes"] == [0xA1]
    assert lp["token"] == "\ufffd"

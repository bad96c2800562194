"""Request limits: body size (413), max_tokens, embedding inputs, queue full
(503 server_busy with Retry-After)."""
from __future__ import annotations

import threading
import time

import pytest

from kolosal.server import create_app

from .conftest import MODEL_ID, chat_body, server_config
from .security_support import bare_app


@pytest.fixture(scope="module")
def limited(model_path):
    cfg = server_config(model_path, max_queued_requests=1, max_tokens_limit=300, max_embedding_inputs=2,
                        max_request_body_mb=0.01)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=1)
    app = create_app(cfg)
    yield app
    app.extensions["kolosal"].registry.close_all()


def test_body_too_large_is_413_envelope():
    c = bare_app(server={"max_request_body_mb": 0.001}).test_client()
    r = c.post("/v1/chat/completions", data=b"{" + b" " * 4096 + b"}", content_type="application/json")
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "request_entity_too_large"


def test_max_tokens_above_server_limit(limited):
    c = limited.test_client()
    r = c.post("/v1/chat/completions", json=chat_body(max_tokens=301))
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "max_tokens"
    r = c.post("/v1/completions", json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 500})
    assert r.status_code == 400 and "at most 300" in r.get_json()["error"]["message"]
    assert c.post("/v1/chat/completions", json=chat_body(max_tokens=2)).status_code == 200


def test_too_many_embedding_inputs(limited):
    r = limited.test_client().post("/v1/embeddings", json={"model": MODEL_ID, "input": ["a", "b", "c"]})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "input"


def test_queue_full_is_503_server_busy_with_retry_after(limited):
    c = limited.test_client()
    engine = limited.extensions["kolosal"].registry.engine(MODEL_ID)
    running = c.post("/v1/chat/completions", buffered=False,
                     json=chat_body("Tell a long story", max_tokens=300, ignore_eos=True, stream=True))
    next(iter(running.response))
    deadline = time.monotonic() + 30
    while not (engine.stats()["slots_busy"] == 1 and engine.stats()["queued"] == 0) and time.monotonic() < deadline:
        time.sleep(0.02)  # the long generation holds the only slot, nothing waits yet
    queued: list = []
    t = threading.Thread(target=lambda: queued.append(c.post("/v1/chat/completions", json=chat_body(max_tokens=2))))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while engine.stats().get("queued", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.stats()["queued"] >= 1
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
        assert r.status_code == 503 and r.get_json()["error"]["code"] == "server_busy"
        assert r.headers["Retry-After"] == "1"
    finally:
        running.close()  # cancels the long generation; the queued one runs
        t.join(60)
    assert queued and queued[0].status_code == 200

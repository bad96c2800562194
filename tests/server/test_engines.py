"""Engine management: GET/POST /engines, status, DELETE (and /v1 aliases)."""
from __future__ import annotations

import threading

from .conftest import MODEL_ID, chat_body


def test_list_and_status(http):
    engines = http.get("/engines").json()["engines"]
    assert [e["engine_id"] for e in engines] == [MODEL_ID] and engines[0]["status"] == "loaded"
    st = http.get(f"/v1/engines/{MODEL_ID}/status").json()
    assert st["status"] == "loaded" and st["stats"]["n_slots"] == 4 and st["context_length"] == 512
    r = http.get("/engines/nope/status")
    assert r.status_code == 404 and r.json()["error"]["code"] == "engine_not_found"


def test_create_use_and_delete_engine(http, model_path):
    body = {"engine_id": "second", "model_path": str(model_path),
            "loading_parameters": {"n_ctx": 512, "n_parallel": 1, "n_threads": 1}}
    r = http.post("/v1/engines", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "loaded" and r.json()["context_length"] == 512
    assert http.post("/engines", json=body).status_code == 409
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == [MODEL_ID, "second"]
    r = http.post("/v1/chat/completions", json={**chat_body(), "model": "second"})
    assert r.status_code == 200 and r.json()["model"] == "second"
    assert http.delete("/engines/second").json() == {"engine_id": "second", "status": "removed"}
    assert http.delete("/engines/second").status_code == 404
    assert http.post("/v1/chat/completions", json={**chat_body(), "model": "second"}).status_code == 404


def test_lazy_engine_loads_on_first_use(http, model_path):
    r = http.post("/engines", json={"engine_id": "lazy", "model_path": str(model_path), "load_immediately": False,
                                    "loading_parameters": {"n_ctx": 256, "n_parallel": 1, "n_threads": 1}})
    assert r.status_code == 201 and r.json()["status"] == "registered"
    try:
        assert http.post("/v1/chat/completions", json={**chat_body(max_tokens=2), "model": "lazy"}).status_code == 200
        assert http.get("/engines/lazy/status").json()["status"] == "loaded"
    finally:
        http.delete("/engines/lazy")


def test_create_errors(http, tmp_path):
    r = http.post("/engines", json={"engine_id": "x", "model_path": str(tmp_path / "missing.gguf")})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model_path"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    r = http.post("/engines", json={"engine_id": "x", "model_path": str(bad)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_model_file"
    assert "x" not in [e["engine_id"] for e in http.get("/engines").json()["engines"]]
    r = http.post("/engines", json={"engine_id": "x", "model_path": "m", "loading_parameters": {"n_ctx": "big"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "loading_parameters.n_ctx"


def test_delete_mid_stream_ends_stream_with_error_event(http, model_path):
    http.post("/engines", json={"engine_id": "doomed", "model_path": str(model_path),
                                "loading_parameters": {"n_ctx": 1024, "n_parallel": 1, "n_threads": 1}})
    events = []
    started = threading.Event()

    def consume() -> None:
        with http.stream("POST", "/v1/chat/completions",
                         json={**chat_body("Tell a long story", max_tokens=400, ignore_eos=True, stream=True),
                               "model": "doomed"}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        started.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(30)
    assert http.delete("/engines/doomed").status_code == 200
    t.join(30)
    assert '"error"' in events[-1] and "engine_closed" in events[-1]

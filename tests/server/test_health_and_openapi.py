"""GET /health and GET /openapi.json."""
from __future__ import annotations

import jsonschema

from kolosal.server import create_app

from .conftest import MODEL_ID


def test_health_ok(http):
    for path in ("/health", "/v1/health"):
        body = http.get(path).json()
        assert body["status"] == "ok" and body["version"] and body["uptime_seconds"] > 0
        assert {"engine_id": MODEL_ID, "status": "loaded"} in body["engines"]


def test_health_error_when_model_failed(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"junk")
    app = create_app({"models": [{"id": "bad", "path": str(bad)}]})
    r = app.test_client().get("/health")
    assert r.status_code == 503 and r.json["status"] == "error"
    assert r.json["engines"][0]["status"] == "error"


def test_health_draining_and_new_work_refused(app, client):
    state = app.extensions["kolosal"]
    state.draining = True
    try:
        r = client.get("/health")
        assert r.status_code == 503 and r.json["status"] == "draining"
        r = client.post("/v1/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 1})
        assert r.status_code == 503 and r.json["error"]["code"] == "server_draining"
    finally:
        state.draining = False


def test_openapi_covers_every_endpoint_and_validates(http):
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for p, m in [("/v1/chat/completions", "post"), ("/v1/completions", "post"), ("/v1/embeddings", "post"),
                 ("/v1/models", "get"), ("/v1/models/{model_id}", "get"), ("/tokenize", "post"),
                 ("/detokenize", "post"), ("/engines", "get"), ("/engines", "post"),
                 ("/engines/{engine_id}/status", "get"), ("/engines/{engine_id}", "delete"), ("/v1/health", "get"),
                 ("/health", "get"), ("/v1/engines", "post")]:
        assert m in paths[p], (p, m)
    chat = paths["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert "messages" in schema["properties"] and schema["additionalProperties"] is False
    # a real response validates against the published response schema
    resp_ref = chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    body = http.post("/v1/chat/completions", json={"model": MODEL_ID, "max_tokens": 2,
                                                   "messages": [{"role": "user", "content": "hi"}]}).json()
    full = {**spec["components"]["schemas"][resp_ref.rsplit("/", 1)[1]], "components": spec["components"]}
    jsonschema.validate(body, full)

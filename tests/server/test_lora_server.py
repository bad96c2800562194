"""LoRA adapters through the live server: per-model ``load_params.lora``,
per-request ``lora: [{id, scale}]`` (llama-server's shape) on chat and text
completions, ``GET``/``POST /lora-adapters``, and bad input."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.test_lora import write_lora

from .conftest import MODEL_ID, server_config, start_server

BODY = {"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 10, "temperature": 0}


@pytest.fixture(scope="module")
def lora_server(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-server")
    adapter = write_lora(tmp / "adapter.gguf", model_path)
    config = server_config(model_path)
    config["models"][0]["load_params"]["lora"] = [{"path": str(adapter), "scale": 0.0}]
    server = start_server(config, tmp)
    server.adapter = adapter
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def http(lora_server):
    with httpx.Client(base_url=lora_server.base_url, timeout=120) as c:
        yield c


def text(http, **extra):
    r = http.post("/v1/completions", json={**BODY, **extra})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_lists_the_adapters(http, lora_server):
    r = http.get("/lora-adapters")
    assert r.status_code == 200, r.text
    assert r.json() == [{"id": 0, "path": str(lora_server.adapter), "scale": 0.0, "task_name": "", "prompt_prefix": ""}]
    assert http.get("/v1/lora-adapters", params={"model": MODEL_ID}).json() == r.json()
    missing = http.get("/lora-adapters", params={"model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


def test_per_request_scales_and_no_bleeding(http):
    base = text(http)
    assert text(http, lora=[{"id": 0, "scale": 0.0}]) == base
    adapted = text(http, lora=[{"id": 0, "scale": 1.0}])
    assert adapted != base
    scales = [1.0, 0.0, 1.0, 0.0]
    with ThreadPoolExecutor(len(scales)) as pool:
        got = list(pool.map(lambda s: text(http, lora=[{"id": 0, "scale": s}]), scales))
    assert got == [adapted if s else base for s in scales]
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
    plain = http.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    tuned = http.post("/v1/chat/completions", json={**chat, "lora": [{"id": 0, "scale": 1.0}]})
    assert tuned.status_code == 200 and tuned.json()["choices"][0]["message"]["content"] != plain


def test_global_scales(http):
    base = text(http)
    adapted = text(http, lora=[{"id": 0, "scale": 1.0}])
    try:
        r = http.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}])
        assert r.status_code == 200 and r.json() == {"success": True}
        assert http.get("/lora-adapters").json()[0]["scale"] == 1.0
        assert text(http) == adapted
        assert text(http, lora=[]) == base  # a request's own list wins: every adapter off
    finally:
        assert http.post("/lora-adapters", json=[]).status_code == 200
    assert http.get("/lora-adapters").json()[0]["scale"] == 0.0 and text(http) == base


@pytest.mark.parametrize("lora", [[{"id": 5, "scale": 1.0}], [{"id": -1, "scale": 1.0}], [{"scale": 1.0}],
                                  {"id": 0, "scale": 1.0}, [{"id": 0, "scale": "high"}]])
def test_bad_request_lora_is_400(http, lora):
    r = http.post("/v1/completions", json={**BODY, "lora": lora})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"] or "").startswith("lora")


@pytest.mark.parametrize("body", [[{"id": 3, "scale": 1.0}], {"id": 0, "scale": 1.0}, [{"id": 0}]])
def test_bad_global_scales_are_400(http, body):
    r = http.post("/lora-adapters", json=body)
    assert r.status_code == 400, r.text
    assert http.get("/lora-adapters").json()[0]["scale"] == 0.0


def test_engine_with_a_missing_adapter_is_refused(http, tmp_path, model_path):
    r = http.post("/engines", json={"engine_id": "lora-broken", "model_path": str(model_path),
                                    "loading_parameters": {"n_ctx": 256, "n_parallel": 1,
                                                           "lora": [{"path": str(tmp_path / "gone.gguf")}]}})
    assert r.status_code == 422, r.text
    assert "gone.gguf" in r.json()["error"]["message"] and "not found" in r.json()["error"]["message"]
    assert http.get("/engines/lora-broken/status").status_code == 404


def test_setting_global_scales_needs_an_admin_key(model_path, lora_server):
    from kolosal.server import create_app
    config = server_config(model_path)
    config["models"][0]["load_params"].update(n_ctx=256, n_parallel=1,
                                              lora=[{"path": str(lora_server.adapter), "scale": 0.5}])
    config["security"] = {"api_keys": ["user-key"], "admin_api_keys": ["admin-key"]}
    app = create_app(config)
    try:
        c = app.test_client()
        user, admin = {"Authorization": "Bearer user-key"}, {"Authorization": "Bearer admin-key"}
        listed = c.get("/lora-adapters", headers=user)
        assert listed.status_code == 200 and listed.json[0]["path"] == "adapter.gguf"  # file name only for users
        assert c.get("/lora-adapters", headers=admin).json[0]["path"] == str(lora_server.adapter)
        assert c.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}], headers=user).status_code == 403
        assert c.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}]).status_code == 401
        assert c.get("/lora-adapters", headers=user).json[0]["scale"] == 0.5
        assert c.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}], headers=admin).status_code == 200
        assert c.get("/lora-adapters", headers=user).json[0]["scale"] == 1.0
    finally:
        app.extensions["kolosal"].registry.close_all()

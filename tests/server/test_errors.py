"""Every error uses the OpenAI envelope with the right status."""
from __future__ import annotations

import json

import openai
import pytest

from .conftest import MODEL_ID, chat_body, raw_request


def envelope(body: dict) -> dict:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def _split(resp: bytes):
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, head.decode("latin-1").lower(), json.loads(body)


def test_malformed_json_raw_socket(live_server):
    body = b'{"model": "smollm2", "messages": [ {"role": '
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, head, data = _split(raw_request(live_server.port, req))
    assert status == 400 and "application/json" in head
    assert envelope(data)["code"] == "invalid_json"


def test_non_object_json_and_empty_body(live_server):
    for body in (b"[1, 2]", b""):
        req = (b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
        status, _, data = _split(raw_request(live_server.port, req))
        assert status == 400 and envelope(data)["type"] == "invalid_request_error"


def test_unknown_route_404_and_wrong_method_405(http):
    r = http.get("/v1/nope")
    assert r.status_code == 404 and envelope(r.json())["code"] == "not_found"
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405 and envelope(r.json())["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


def test_schema_violation_names_the_field(http):
    r = http.post("/v1/chat/completions", json=chat_body(temperature="hot"))
    assert r.status_code == 400 and envelope(r.json())["param"] == "temperature"
    r = http.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"
    r = http.post("/v1/chat/completions", json={"model": MODEL_ID})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert r.json()["error"]["code"] == "missing_required_parameter"


def test_unsupported_field_rejected_naming_it(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}],
                                    extra_body={"audio": {"voice": "alloy"}})
    assert ei.value.body["param"] == "audio" and ei.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as ei:
        oai.completions.create(model=MODEL_ID, prompt="x", suffix="y")
    assert ei.value.body["param"] == "suffix"


def test_unknown_model_404(oai):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["code"] == "model_not_found" and ei.value.body["param"] == "model"


def test_context_length_exceeded_states_slot_context(oai, http):
    slot = http.get(f"/v1/models/{MODEL_ID}").json()["context_length"]
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=slot)
    assert ei.value.body["code"] == "context_length_exceeded"
    assert f"{slot} tokens per request" in ei.value.body["message"]
    with pytest.raises(openai.BadRequestError) as ei:
        oai.completions.create(model=MODEL_ID, prompt="word " * (slot + 10), max_tokens=4)
    assert ei.value.body["code"] == "context_length_exceeded" and ei.value.body["param"] == "prompt"


def test_bad_sampling_values_are_400_not_500(http):
    cases = [{"logit_bias": {"abc": 1}}, {"logit_bias": {"99999999": 1}}, {"n": 0}, {"top_logprobs": 3},
             {"grammar": "root ::= (("}, {"response_format": {"type": "json_schema"}},
             {"tool_choice": "required"}, {"stop": ["x"] * 20}]
    for extra in cases:
        r = http.post("/v1/chat/completions", json=chat_body(**extra))
        assert r.status_code == 400, (extra, r.text)
        envelope(r.json())


def test_api_key_required_when_configured(model_path, tmp_path):
    from kolosal.server import create_app
    from .conftest import server_config
    cfg = server_config(model_path)
    cfg["models"] = []
    cfg["auth"] = {"enabled": True, "api_keys": ["s3cret"]}
    client = create_app(cfg).test_client()
    r = client.get("/v1/models")
    assert r.status_code == 401 and envelope(r.json)["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_server_busy_503_when_queue_is_full(model_path):
    import threading
    import time

    from kolosal.server import create_app

    from .conftest import server_config
    cfg = server_config(model_path, max_queued_requests=1)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=1)
    app = create_app(cfg)
    engine = app.extensions["kolosal"].registry.engine(MODEL_ID)
    try:
        hog = app.test_client().post("/v1/chat/completions", buffered=False,
                                     json=chat_body("Tell a story", stream=True, max_tokens=400, ignore_eos=True))
        next(iter(hog.response))  # the first chunk is sent once submitted: the slot may not be taken yet
        deadline = time.monotonic() + 10
        while engine.stats()["slots_busy"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.stats()["slots_busy"] == 1
        waiter = threading.Thread(target=lambda: app.test_client().post("/v1/completions", json={
            "model": MODEL_ID, "prompt": "x", "max_tokens": 1}))
        waiter.start()
        deadline = time.monotonic() + 10
        while engine.stats()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = app.test_client().post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and envelope(r.json)["code"] == "server_busy"
        hog.close()  # cancels the hog; the queued request then runs
        waiter.join(30)
        assert not waiter.is_alive()
    finally:
        app.extensions["kolosal"].registry.close_all()

"""Server-sent events through Waitress: shape, token-by-token delivery,
cancellation on disconnect, errors mid-stream."""
from __future__ import annotations

import json
import socket
import time

import httpx

from kolosal.server import create_app

from .conftest import MODEL_ID, chat_body, server_config, sse_events

LONG = "Write a long story about a dragon who learns to bake bread."


def test_sdk_stream_role_first_then_content_then_finish_and_usage(oai):
    stream = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}],
                                         max_tokens=6, stream=True, stream_options={"include_usage": True},
                                         extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 6
    assert usage.prompt_tokens_details.cached_tokens >= 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_stream_headers_and_done(http):
    with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])  # no usage unless asked


def test_stream_n_choices_each_finish(oai):
    chunks = list(oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], n=2,
                                              max_tokens=4, stream=True, seed=3))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    roles = {c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role}
    assert finished == roles == {0, 1}


def test_stream_logprobs(oai):
    chunks = list(oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=4, stream=True, logprobs=True, top_logprobs=2,
                                              extra_body={"ignore_eos": True}))
    lps = [lp for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert len(lps) == 4 and all(len(lp.top_logprobs) == 2 for lp in lps)


def test_chunks_arrive_token_by_token(live_server):
    """The first content chunk reaches the client long before the stream ends."""
    body = chat_body(LONG, max_tokens=32, ignore_eos=True, stream=True)
    t0 = time.monotonic()
    arrivals = []
    with httpx.stream("POST", live_server.v1 + "/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic() - t0)
    total = time.monotonic() - t0
    assert len(arrivals) >= 16  # one event per token (pieces may merge for multi-token characters)
    assert arrivals[0] < total * 0.5
    assert len({round(a, 3) for a in arrivals}) > len(arrivals) // 2  # spread over time, not one burst


def test_client_disconnect_cancels_generation(live_server):
    """A streaming client that goes away frees its slot at once."""
    assert live_server.slots_busy() == 0
    body = json.dumps(chat_body(LONG, max_tokens=400, ignore_eos=True, stream=True)).encode()
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", live_server.port), timeout=30)
    s.sendall(req)
    received = b""
    while received.count(b"data: ") < 4:
        received += s.recv(4096)
    assert live_server.slots_busy() == 1
    s.close()
    assert live_server.wait_slots_busy(0) == 0
    # 400 tokens at this model's speed take far longer than the 10 s allowed
    # above; the slot being free proves the generation was cancelled.


def test_completions_stream(oai):
    chunks = list(oai.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=5, stream=True,
                                         stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 5


def test_job_timeout_mid_stream_sends_error_event_and_ends(model_path):
    cfg = server_config(model_path)
    cfg["inference"] = {"job_timeout_seconds": 0.05}
    app = create_app(cfg)
    try:
        client = app.test_client()
        long_prompt = " ".join(["word"] * 300)
        r = client.post("/v1/chat/completions", json=chat_body(long_prompt, stream=True, max_tokens=32),
                        buffered=True)
        events = sse_events(r.get_data(as_text=True).splitlines())
        assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
        err = json.loads(events[-1])["error"]
        assert err["code"] == "job_timeout" and "inference.job_timeout_seconds (0.05 s)" in err["message"]
        assert "[DONE]" not in events
        r = client.post("/v1/chat/completions", json=chat_body(long_prompt, max_tokens=32))
        assert r.status_code == 504 and r.json["error"]["code"] == "job_timeout"
        engine = app.extensions["kolosal"].registry.engine(MODEL_ID)
        deadline = time.monotonic() + 60  # a prompt being prefilled is not interrupted; a loaded machine is slow
        while engine.stats()["slots_busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.stats()["slots_busy"] == 0
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_request_timeout_names_its_own_key(model_path):
    """server.request_timeout_seconds (the guide's request_timeout) shorter than
    the job timeout: the 504 names the key the operator set."""
    cfg = server_config(model_path, request_timeout=1)
    cfg["models"][0]["load_params"].update(n_ctx=8192, n_parallel=1)  # a generation far longer than 1 s anywhere
    app = create_app(cfg)
    try:
        r = app.test_client().post("/v1/chat/completions", json=chat_body(max_tokens=8000, ignore_eos=True))
        assert r.status_code == 504 and r.json["error"]["code"] == "job_timeout"
        assert "server.request_timeout_seconds (1 s)" in r.json["error"]["message"], r.json
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_sse_comment_pings_while_prompt_is_prefilled(model_path):
    cfg = server_config(model_path, sse_ping_seconds=0.001)
    app = create_app(cfg)
    try:
        r = app.test_client().post("/v1/chat/completions", buffered=True,
                                   json=chat_body(" ".join(["word"] * 400), stream=True, max_tokens=2))
        lines = r.get_data(as_text=True).splitlines()
        first_content = next(i for i, line in enumerate(lines) if line.startswith("data: ") and i > 0)
        assert ": ping" in lines[:first_content + 1]
        assert sse_events(lines)[-1] == "[DONE]"
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_client_disconnect_cancels_non_streaming_generation(live_server):
    assert live_server.slots_busy() == 0
    body = json.dumps(chat_body(LONG, max_tokens=400, ignore_eos=True)).encode()
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", live_server.port), timeout=30)
    s.sendall(req)
    assert live_server.wait_slots_busy(1) == 1
    s.close()
    assert live_server.wait_slots_busy(0) == 0


def test_streamed_json_answer_equals_the_complete_answer(oai):
    # A JSON answer ends in whitespace the grammar allows; the complete answer
    # drops it, and the stream must not send it either.
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]}}}
    body = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Invent a person."}], max_tokens=96,
                temperature=0, response_format=fmt)
    stream = oai.chat.completions.create(stream=True, **body)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == streamed.strip()
    assert json.loads(streamed)
    whole = oai.chat.completions.create(**body).choices[0].message.content
    assert whole == whole.strip() and json.loads(whole)


def test_streamed_text_keeps_inner_whitespace(oai):
    stream = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "List three colours, one per line."}],
                                         max_tokens=24, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    whole = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "List three colours, one per line."}],
                                        max_tokens=24, temperature=0).choices[0].message.content
    # Same request, same greedy tokens: the stream joins to the complete answer.
    assert "".join(pieces) == whole


def test_streamed_chunks_are_exactly_their_models_serialization(http):
    """Text deltas are spliced into a chunk serialized once per stream: each
    event must still be byte for byte what the chunk model serializes to
    (keys, order, nulls), for every choice, with and without usage."""
    from kolosal.server.protocol.openai.chat import ChatCompletionChunk

    for extra in ({"n": 2, "seed": 5}, {"stream_options": {"include_usage": True}}):
        body = chat_body('Reply with "quotes", a back\\slash and ünïcödé: ✓.', stream=True, max_tokens=12,
                         ignore_eos=True, **extra)
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            events = sse_events(r.iter_lines())
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert content, events
        if "n" in extra:
            assert {c["choices"][0]["index"] for c in content} == {0, 1}
        else:
            assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["completion_tokens"] == 12
        for e, c in zip(events, chunks):
            again = json.dumps(ChatCompletionChunk.model_validate(c).wire(), ensure_ascii=False, separators=(",", ":"))
            assert e == again

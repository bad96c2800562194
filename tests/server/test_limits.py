"""Request limits: body size (413, from Waitress itself on a live server),
JSON nesting, prompts x n, stop strings, grammars, JSON schemas, max_tokens,
embedding inputs, the queue (503 server_busy with Retry-After, counting all
generations of a request) and token quota reservations."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from kolosal.server import create_app
from kolosal.server.limits import grammar_depth, json_depth

from procs import free_port

from .conftest import MODEL_ID, chat_body, raw_request, server_config, start_server
from .security_support import bare_app, bearer, error_code


@pytest.fixture(scope="module")
def limited(model_path):
    cfg = server_config(model_path, max_queued_requests=1, max_tokens_limit=300, max_embedding_inputs=2,
                        max_request_body_mb=0.01)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=1)
    app = create_app(cfg)
    yield app
    app.extensions["kolosal"].registry.close_all()


def nested(depth: int, leaf: object = 1) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def post(c, path, body, **kw):
    return c.post(path, data=json.dumps(body), content_type="application/json", **kw)


# -- bodies ---------------------------------------------------------------------

def test_body_too_large_is_413_envelope():
    c = bare_app(server={"max_request_body_mb": 0.001}).test_client()
    r = c.post("/v1/chat/completions", data=b"{" + b" " * 4096 + b"}", content_type="application/json")
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "request_entity_too_large"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b'{"model": "m", "prompt": ' + b"[" * 5000])
def test_hostile_nesting_is_400_invalid_json_not_500(body):
    c = bare_app().test_client()
    r = c.post("/v1/completions", data=body, content_type="application/json")
    assert r.status_code == 400 and error_code(r) == "invalid_json"


def test_json_depth_limit_is_configurable():
    c = bare_app(server={"max_json_depth": 5}).test_client()
    ok = {"model": "nope", "prompt": [[1, 2]]}  # depth 3: passes, then the unknown model
    assert post(c, "/v1/completions", ok).status_code == 404
    r = post(c, "/v1/completions", {"model": "nope", "prompt": "x", "logit_bias": {}, "stop": nested(5, "x")})
    assert r.status_code == 400 and error_code(r) == "invalid_json" and "5 levels" in r.get_json()["error"]["message"]
    assert json_depth(nested(10_000), 50) == 51  # measuring stops past the limit, and never recurses


# -- prompts x n, stop, grammar, schemas (checked before the model is looked up: 404 means "passed") --------

def test_prompt_array_and_generations_per_request():
    c = bare_app(server={"max_prompts": 4, "max_generations_per_request": 6}).test_client()
    assert post(c, "/v1/completions", {"model": "nope", "prompt": ["a"] * 4}).status_code == 404
    r = post(c, "/v1/completions", {"model": "nope", "prompt": ["a"] * 5})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "prompt"
    assert error_code(r) == "array_above_max_length"
    r = post(c, "/v1/completions", {"model": "nope", "prompt": ["a"] * 4, "n": 2})  # 8 generations
    assert r.status_code == 400 and error_code(r) == "too_many_generations" and r.get_json()["error"]["param"] == "n"
    assert "4 prompts x n=2" in r.get_json()["error"]["message"]
    assert post(c, "/v1/completions", {"model": "nope", "prompt": [[1, 2], [3]], "n": 3}).status_code == 404
    assert post(c, "/v1/completions", {"model": "nope", "prompt": [1, 2, 3, 4, 5, 6, 7], "n": 6}).status_code == 404
    r = post(c, "/v1/chat/completions", {"model": "nope", "n": 7, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and error_code(r) == "too_many_generations"


def test_5000_prompts_x_16_is_refused_before_any_work():
    c = bare_app().test_client()
    r = post(c, "/v1/completions", {"model": "nope", "prompt": ["hi"] * 5000, "n": 16})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "prompt"


def test_stop_sequences_count_and_length():
    c = bare_app(server={"max_stop_sequences": 2, "max_stop_chars": 8}).test_client()
    base = {"model": "nope", "prompt": "x"}
    assert post(c, "/v1/completions", {**base, "stop": ["a", "12345678"]}).status_code == 404
    r = post(c, "/v1/completions", {**base, "stop": ["a", "b", "c"]})
    assert r.status_code == 400 and error_code(r) == "array_above_max_length" and r.get_json()["error"]["param"] == "stop"
    r = post(c, "/v1/completions", {**base, "stop": ["a", "123456789"]})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "stop[1]"
    r = post(c, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}],
                                         "stop": "123456789"})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "stop"


def test_grammar_depth_counts_groups_only():
    assert grammar_depth('root ::= ("a" ("b" | "c"))*') == 2
    assert grammar_depth('root ::= "((((" [(((] x # (((((\nx ::= "\\"(("') == 0
    assert grammar_depth("root ::= " + "(" * 500 + '"a"' + ")" * 500) == 500


def test_grammar_size_and_nesting():
    c = bare_app(server={"max_grammar_chars": 200, "max_grammar_depth": 4}).test_client()
    base = {"model": "nope", "prompt": "x"}
    assert post(c, "/v1/completions", {**base, "grammar": 'root ::= ((("a")))'}).status_code == 404
    r = post(c, "/v1/completions", {**base, "grammar": "root ::= " + "(" * 5 + '"a"' + ")" * 5})
    assert r.status_code == 400 and error_code(r) == "nesting_above_max_depth"
    assert r.get_json()["error"]["param"] == "grammar"
    r = post(c, "/v1/completions", {**base, "grammar": 'root ::= "' + "a" * 200 + '"'})
    assert r.status_code == 400 and error_code(r) == "string_above_max_length"


def test_default_grammar_limit_stops_the_recursive_parser(limited):
    """100,000 nested groups would overflow llama.cpp's recursive parser: refused first. A grammar at the
    default depth limit still works with the real model."""
    c = bare_app().test_client()
    r = post(c, "/v1/completions", {"model": "nope", "prompt": "x",
                                    "grammar": "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "grammar"
    r = post(c, "/v1/completions", {"model": "nope", "prompt": "x",
                                    "grammar": "root ::= " + "(" * 33 + '"a"' + ")" * 33})
    assert r.status_code == 400 and error_code(r) == "nesting_above_max_depth"
    r = post(limited.test_client(), "/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 4,
                                                        "grammar": "root ::= " + "(" * 32 + '"ok"' + ")" * 32})
    assert r.status_code == 200 and r.get_json()["choices"][0]["text"] == "ok"


def test_json_schema_size_and_depth():
    c = bare_app(server={"max_json_schema_chars": 300, "max_json_schema_depth": 6}).test_client()
    msgs = [{"role": "user", "content": "x"}]

    def schema(depth: int) -> dict:
        s: dict = {"type": "string"}
        for _ in range(depth):
            s = {"type": "object", "properties": {"a": s}}
        return s

    def rf(s: dict) -> dict:
        return {"model": "nope", "messages": msgs, "response_format": {"type": "json_schema",
                                                                     "json_schema": {"name": "x", "schema": s}}}

    assert post(c, "/v1/chat/completions", rf(schema(2))).status_code == 404  # 5 levels of objects
    r = post(c, "/v1/chat/completions", rf(schema(3)))
    assert r.status_code == 400 and error_code(r) == "nesting_above_max_depth"
    assert r.get_json()["error"]["param"] == "response_format.json_schema.schema"
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20)}}
    r = post(c, "/v1/chat/completions", rf(big))
    assert r.status_code == 400 and error_code(r) == "string_above_max_length"
    tool = {"type": "function", "function": {"name": "f", "parameters": schema(3)}}
    r = post(c, "/v1/chat/completions", {"model": "nope", "messages": msgs, "tools": [tool, tool]})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "tools[0].function.parameters"


# -- max_tokens, embeddings, the queue ---------------------------------------------------------

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
    # n=2 can never fit a queue of 1: a clear 400, not a 503 to retry forever
    r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2, n=2))
    assert r.status_code == 400 and error_code(r) == "too_many_generations"


def test_queue_limit_counts_every_generation_of_a_request(model_path):
    cfg = server_config(model_path, max_queued_requests=3)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=1)
    app = create_app(cfg)
    try:
        c = app.test_client()
        engine = app.extensions["kolosal"].registry.engine(MODEL_ID)
        running = c.post("/v1/chat/completions", buffered=False,
                         json=chat_body("Tell a long story", max_tokens=400, ignore_eos=True, stream=True))
        next(iter(running.response))
        done: list = []
        t = threading.Thread(target=lambda: done.append(c.post(
            "/v1/completions", json={"model": MODEL_ID, "prompt": ["a", "b"], "max_tokens": 2})))
        try:
            deadline = time.monotonic() + 30
            while not (engine.stats()["slots_busy"] == 1) and time.monotonic() < deadline:
                time.sleep(0.02)
            t.start()
            while engine.stats()["queued"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert engine.stats()["queued"] == 2
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2, n=2))  # 2 + 2 > 3
            assert r.status_code == 503 and error_code(r) == "server_busy" and "adds 2" in r.get_json()["error"]["message"]
        finally:
            running.close()
            t.join(60)
        assert done and done[0].status_code == 200 and len(done[0].get_json()["choices"]) == 2
    finally:
        app.extensions["kolosal"].registry.close_all()


# -- token quota reservations ---------------------------------------------------------------

@pytest.fixture
def quota_app(model_path):
    def make(tokens_per_minute: int, n_parallel: int = 4):
        cfg = server_config(model_path)
        cfg["models"][0]["load_params"].update(n_ctx=2048, n_parallel=n_parallel)
        cfg["security"] = {"api_keys": ["a", "b"], "rate_limiting": {"enabled": True,
                                                                    "tokens_per_minute": tokens_per_minute}}
        made.append(create_app(cfg))
        return made[-1]
    made: list = []
    yield make
    for app in made:
        app.extensions["kolosal"].registry.close_all()


def prompt_tokens(app, text: str) -> int:
    return len(app.extensions["kolosal"].registry.engine(MODEL_ID).tokenize(text))


def test_concurrent_requests_cannot_overrun_the_token_quota(quota_app):
    app = quota_app(300)
    c = app.test_client()
    body = {"model": MODEL_ID, "prompt": "One two three", "max_tokens": 60, "ignore_eos": True}
    each = prompt_tokens(app, body["prompt"]) + 60
    results: list = []
    barrier = threading.Barrier(6)

    def run():
        barrier.wait()
        r = c.post("/v1/completions", json=body, headers=bearer("a"))
        results.append((r.status_code, r.get_json()))
        r.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ok = [b for s, b in results if s == 200]
    refused = [b for s, b in results if s == 429]
    assert len(ok) + len(refused) == 6
    assert len(ok) == 300 // each  # every admitted request had its tokens reserved before it ran
    assert sum(b["usage"]["total_tokens"] for b in ok) <= 300
    assert all(b["error"]["code"] == "token_quota_exceeded" for b in refused)


def test_unused_reservation_is_given_back(quota_app):
    app = quota_app(300)
    c = app.test_client()
    # reserves prompt + 250 tokens, but the grammar ends the answer after a token or two
    r = c.post("/v1/completions", json={"model": MODEL_ID, "prompt": "Say it", "max_tokens": 250,
                                        "grammar": 'root ::= "ok"'}, headers=bearer("a"))
    assert r.status_code == 200 and r.get_json()["usage"]["completion_tokens"] <= 3
    r.close()
    # fits only if the first request's unused 247 tokens came back
    r = c.post("/v1/completions", json={"model": MODEL_ID, "prompt": "Say it", "max_tokens": 200,
                                        "grammar": 'root ::= "ok"'}, headers=bearer("a"))
    assert r.status_code == 200, r.get_json()
    r.close()


def test_quota_caps_unset_max_tokens_and_refuses_what_never_fits(quota_app):
    app = quota_app(100, n_parallel=1)
    c = app.test_client()
    r = c.post("/v1/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 150}, headers=bearer("a"))
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "max_tokens"
    r = c.post("/v1/chat/completions", json={"model": MODEL_ID, "ignore_eos": True,
                                             "messages": [{"role": "user", "content": "Count to a thousand."}]},
               headers=bearer("b"))
    assert r.status_code == 200 and r.get_json()["usage"]["total_tokens"] <= 100  # capped by the quota left
    r.close()
    r = c.post("/v1/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 5}, headers=bearer("b"))
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60


# -- Waitress: the body limit is enforced before the body is read ----------------------------

@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory):
    cfg = {"server": {"host": "127.0.0.1", "port": free_port(), "max_request_body_mb": 0.01},
           "logging": {"level": "WARNING"}}
    server = start_server(cfg, tmp_path_factory.mktemp("body"))
    yield server
    server.stop()


def _status_and_body(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode("latin-1"), body


def test_waitress_refuses_a_declared_huge_body_without_reading_it(small_body_server):
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 10000000000\r\n\r\n")  # 10 GB announced, none sent
    status, head, body = _status_and_body(raw_request(small_body_server.port, req))
    assert status == 413 and "application/json" in head
    err = json.loads(body)["error"]
    assert err["code"] == "request_entity_too_large" and err["type"] == "invalid_request_error"


def test_waitress_stops_a_chunked_body_at_the_limit(small_body_server):
    limit = int(0.01 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", small_body_server.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 4096
        for _ in range(limit // len(chunk) + 1):  # past the limit, and the body never ends
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            more = s.recv(65536)
            if not more:
                break
            answer += more
    status, head, body = _status_and_body(answer)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_entity_too_large"


def test_body_at_the_limit_is_read(small_body_server):
    limit = int(0.01 * 1024 * 1024)
    body = json.dumps({"model": "nope", "prompt": "x" * (limit - 100)}).encode()
    body += b" " * (limit - len(body))
    r = httpx.post(small_body_server.v1 + "/completions", content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(small_body_server.v1 + "/completions", content=body + b" ",
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_entity_too_large"


def test_waitress_own_refusals_use_the_error_envelope(small_body_server):
    big_header = b"X-Filler: " + b"a" * (300 * 1024) + b"\r\n"  # over Waitress' 256 KiB of headers
    req = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + big_header + b"Connection: close\r\n\r\n"
    status, head, body = _status_and_body(raw_request(small_body_server.port, req))
    assert status == 431 and "application/json" in head
    assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\nnot-hex\r\n")
    status, head, body = _status_and_body(raw_request(small_body_server.port, req))
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"

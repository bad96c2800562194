"""Fuzzing every endpoint with auth, rate limits and request limits on
(hypothesis): random keys, request ids, paths and bodies, valid-looking and
not. No response may be a 5xx, every error must be the OpenAI envelope."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kolosal.server import create_app

from .conftest import MODEL_ID, server_config

KEYS = {"user": "fuzz-user-key", "admin": "fuzz-admin-key"}
EXAMPLES = 400


@pytest.fixture(scope="module")
def fuzz_client(model_path, tmp_path_factory):
    cfg = server_config(model_path, max_tokens_limit=4, max_request_body_mb=0.05, max_embedding_inputs=4)
    cfg["models"][0]["load_params"].update(n_ctx=1024, n_parallel=2)
    cfg["security"] = {"api_keys": [KEYS["user"]], "admin_api_keys": [KEYS["admin"]],
                       "model_directories": [str(tmp_path_factory.mktemp("models"))],
                       "rate_limiting": {"enabled": True, "requests_per_minute": 100000, "burst_size": 100000,
                                         "tokens_per_minute": 10 ** 9}}
    app = create_app(cfg)
    yield app.test_client()
    app.extensions["kolosal"].registry.close_all()


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                          max_leaves=12)
small_text = st.text(max_size=24)
message = st.fixed_dictionaries({"role": st.sampled_from(["user"] * 4 + ["system", "assistant", "tool", "bogus"]),
                                 "content": st.one_of(small_text, small_text, st.just([{"type": "text", "text": "hi"}]),
                                                      json_value)})
sampling = {"model": st.one_of(st.just(MODEL_ID), small_text), "max_tokens": st.one_of(st.none(), st.integers(-3, 8)),
            "temperature": st.one_of(st.none(), st.floats(-1, 3), st.just(float("nan"))), "n": st.integers(0, 3),
            "stream": st.booleans(), "seed": st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 64)),
            "top_k": st.one_of(st.none(), st.integers(-5, 50)), "stop": st.one_of(st.none(), small_text),
            "logprobs": st.one_of(st.none(), st.booleans(), st.integers(-1, 25))}
# requests that should succeed, with a few parameters varied
good = {"max_tokens": st.integers(1, 4), "stream": st.booleans(), "temperature": st.floats(0, 2),
        "n": st.integers(1, 2), "seed": st.integers(0, 2 ** 31), "stop": small_text}
good_chat = st.fixed_dictionaries({"model": st.just(MODEL_ID), "messages": st.lists(
    st.fixed_dictionaries({"role": st.just("user"), "content": small_text}), min_size=1, max_size=2)}, optional=good)
good_completion = st.fixed_dictionaries({"model": st.just(MODEL_ID), "prompt": small_text,  # default max_tokens 16 > 4
                                         "max_tokens": st.integers(1, 4)},
                                        optional={k: v for k, v in good.items() if k != "max_tokens"})
good_embedding = st.fixed_dictionaries({"model": st.just(MODEL_ID),
                                        "input": st.one_of(small_text, st.lists(small_text, min_size=1, max_size=3))})
ROUTES = {
    ("POST", "/v1/chat/completions"): st.one_of(good_chat, st.fixed_dictionaries(
        {"messages": st.lists(message, max_size=3)}, optional=sampling)),
    ("POST", "/v1/completions"): st.one_of(good_completion, st.fixed_dictionaries(
        {"prompt": st.one_of(small_text, st.lists(st.integers(-10, 60000), max_size=5), json_value)},
        optional=sampling)),
    ("POST", "/v1/embeddings"): st.one_of(good_embedding, st.fixed_dictionaries(
        {"model": st.one_of(st.just(MODEL_ID), small_text),
         "input": st.one_of(small_text, st.lists(small_text, max_size=6), st.lists(st.integers(-5, 60000), max_size=5),
                            json_value)},
        optional={"encoding_format": st.sampled_from(["float", "base64", "hex"]),
                  "dimensions": st.integers(-1, 1000)})),
    ("POST", "/tokenize"): st.fixed_dictionaries({"content": small_text},
                                                 optional={"model": small_text, "with_pieces": st.booleans()}),
    ("POST", "/detokenize"): st.fixed_dictionaries({"tokens": st.lists(st.integers(-10, 10 ** 6), max_size=5)}),
    ("POST", "/engines"): st.fixed_dictionaries(
        {"engine_id": small_text, "model_path": st.one_of(small_text, st.sampled_from(
            ["../../etc/passwd", "/etc/passwd", "x.gguf", "", "\x00", "~/x.gguf"]))},
        optional={"load_immediately": st.booleans(), "loading_parameters": json_value}),
    ("GET", "/v1/models"): st.none(), ("GET", "/v1/models/" + MODEL_ID): st.none(), ("GET", "/engines"): st.none(),
    ("GET", "/engines/" + MODEL_ID + "/status"): st.none(), ("GET", "/health"): st.none(),
    ("GET", "/openapi.json"): st.none(),
}
# mostly valid keys, so that the requests get past authentication
key_header = st.one_of(
    st.fixed_dictionaries({"Authorization": st.sampled_from([f"Bearer {KEYS['user']}", f"Bearer {KEYS['admin']}"])}),
    st.fixed_dictionaries({"X-API-Key": st.sampled_from(list(KEYS.values()))}),
    st.fixed_dictionaries({}, optional={
        "Authorization": st.one_of(st.sampled_from(["Bearer ", "Basic eA==", "bearer x"]),
                                   st.text(max_size=30).map(str.strip)),
        "X-API-Key": st.text(max_size=30).map(str.strip)}))
headers = st.tuples(key_header, st.fixed_dictionaries({}, optional={
    "X-Request-ID": st.text(max_size=200).map(str.strip),
    "X-Forwarded-For": st.text(max_size=40).map(str.strip)})).map(lambda t: {**t[0], **t[1]})


def _headers(h):
    # header values must be latin-1 without line breaks to be sent at all
    return {k: v for k, v in h.items() if all(32 <= ord(c) < 256 for c in v)}


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(sorted(ROUTES)), data=st.data(), hdrs=headers,
       raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=64)))
def test_fuzz_no_5xx_and_error_envelopes(fuzz_client, route, data, hdrs, raw):
    method, path = route
    body = data.draw(ROUTES[route]) if ROUTES[route] is not None else None
    kwargs = {"headers": _headers(hdrs)}
    if raw is not None and method == "POST":
        kwargs.update(data=raw, content_type="application/json")
    elif body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    r = fuzz_client.open(path, method=method, **kwargs)
    event(f"{method} {path} -> {r.status_code}")
    assert r.status_code < 500, (route, body, r.get_data(as_text=True)[:500])
    if r.status_code >= 400:
        err = r.get_json()["error"]
        assert err["message"] and err["type"] and err["code"], r.get_json()
    if r.status_code == 201:  # never loaded: nothing under the empty model directory
        raise AssertionError(f"POST /engines created an engine from {body}")
    r.close()


def test_fuzz_unknown_paths_and_methods(fuzz_client):
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
           method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    def run(path, method):
        if method == "DELETE" and MODEL_ID in path:
            return
        r = fuzz_client.open("/" + path.lstrip("/"), method=method, headers={"X-API-Key": KEYS["admin"]})
        assert r.status_code < 500, (method, path, r.get_data(as_text=True)[:300])
        r.close()
    run()


def test_fuzz_hostile_bodies_are_clean_4xx(fuzz_client):
    """Deep nesting, huge prompt arrays, stop lists and grammars: a 4xx envelope every time, before any work."""
    key = {"X-API-Key": KEYS["admin"]}  # past every key check, POST /engines included

    def nest(depth: int, obj: bool) -> str:
        return ('{"a":' * depth + "1" + "}" * depth) if obj else ("[" * depth + "]" * depth)

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize",
                                 "/engines", "/v1/responses"]),
           depth=st.integers(60, 20_000), obj=st.booleans(), where=st.sampled_from(["top", "field", "unclosed"]))
    def deep(path, depth, obj, where):
        inner = nest(depth, obj)
        body = {"top": inner, "field": '{"model": "smollm2", "prompt": ' + inner + "}",
                "unclosed": "[" * depth}[where]
        r = fuzz_client.post(path, data=body, content_type="application/json", headers=key)
        assert 400 <= r.status_code < 500, (path, depth, r.status_code)
        if depth > 64 or where == "unclosed":
            assert r.get_json()["error"]["code"] in ("invalid_json", "request_entity_too_large"), r.get_json()
        r.close()

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(prompts=st.integers(65, 5000), n=st.integers(1, 16), stops=st.integers(0, 40),
           grammar_depth=st.integers(0, 2000))
    def costly(prompts, n, stops, grammar_depth):
        body = {"model": MODEL_ID, "prompt": ["hi"] * prompts, "n": n, "max_tokens": 2,
                "stop": ["x"] * stops or None,
                "grammar": "root ::= " + "(" * grammar_depth + '"a"' + ")" * grammar_depth}
        r = fuzz_client.post("/v1/completions", data=json.dumps(body), content_type="application/json", headers=key)
        assert r.status_code in (400, 413), r.get_json()
        r.close()

    deep()
    costly()

"""llama-server's own endpoints on a live server with the real model:
``/completion`` (answer, stream, log-probabilities, tokens, settings and
timings), ``/props``, ``/slots`` (admin keys only), ``/apply-template``,
and 400s naming the field for what the server cannot honour."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import MODEL_ID, server_config, sse_events, start_server

USER, ADMIN = "user-key", "admin-key"
PROMPT = "The capital of France is"
DEEP_SCHEMA: dict = {"type": "string"}
for _ in range(10):  # deeper than max_json_schema_depth
    DEEP_SCHEMA = {"type": "array", "items": DEEP_SCHEMA}


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    # small limits: a mixed prompt of three pieces is still one prompt; schemas are held to the depth limit
    config = server_config(model_path, max_prompts=2, max_json_schema_depth=6)
    config["security"] = {"api_keys": [USER], "admin_api_keys": [ADMIN]}
    srv = start_server(config, tmp_path_factory.mktemp("llama-server-api"))
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=120, headers={"Authorization": f"Bearer {USER}"}) as c:
        yield c


def completion(http, **body):
    r = http.post("/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_openai_endpoints_carry_timings_as_llama_server_sends_them(http):
    """Chat and text completions carry llama-server's ``timings`` (tools that show a speed read them): in the
    answer, and in a stream's last chunk only (the usage chunk when one is asked for)."""
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0,
            "ignore_eos": True}
    text = {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", text)):
        out = http.post(path, json=body).json()
        t = out["timings"]
        assert t["predicted_n"] == out["usage"]["completion_tokens"] == 6
        assert t["prompt_n"] + t["cache_n"] == out["usage"]["prompt_tokens"]
        assert t["cache_n"] == out["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert t["predicted_ms"] > 0 and t["predicted_per_second"] > 0 and "draft_n" not in t
        for usage in (False, True):
            with http.stream("POST", path, json={**body, "stream": True,
                                                 "stream_options": {"include_usage": usage}}) as r:
                chunks = [json.loads(e) for e in sse_events(r.iter_lines()) if e != "[DONE]"]
            assert [i for i, c in enumerate(chunks) if "timings" in c] == [len(chunks) - 1], path
            last = chunks[-1]
            assert last["timings"]["predicted_n"] == 6
            assert (last["choices"] == []) is usage and ("usage" in last and last["usage"] is not None) is usage


def test_completion_shape_and_same_text_as_openai(http):
    out = completion(http)
    oai = http.post("/v1/completions", json={"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    assert oai.status_code == 200, oai.text
    assert out["content"] == oai.json()["choices"][0]["text"] and out["content"]
    assert out["stop"] is True and out["model"] == MODEL_ID and out["prompt"] == PROMPT
    assert out["stop_type"] == "limit" and out["stopping_word"] == "" and out["truncated"] is False
    assert out["tokens_predicted"] == 8
    assert out["tokens_evaluated"] == len(http.post("/tokenize", json={"content": PROMPT, "add_special": True})
                                         .json()["tokens"])
    assert out["tokens"] == []  # only with return_tokens
    assert 0 <= out["id_slot"] < 4
    t = out["timings"]
    assert t["predicted_n"] == 8 and t["prompt_n"] + t["cache_n"] == out["tokens_evaluated"]
    assert t["prompt_ms"] > 0 and t["predicted_ms"] > 0 and t["predicted_per_second"] > 0
    s = out["generation_settings"]
    assert s["n_predict"] == 8 and s["temperature"] == 0 and s["top_k"] == 40 and isinstance(s["samplers"], list)


def test_tokens_logprobs_stop_word_and_seed(http):
    out = completion(http, return_tokens=True, n_probs=3)
    assert len(out["tokens"]) == 8
    assert http.post("/detokenize", json={"tokens": out["tokens"]}).json()["content"] == out["content"]
    probs = out["completion_probabilities"]
    assert [p["id"] for p in probs] == out["tokens"]
    assert "".join(p["token"] for p in probs) == out["content"]
    for p in probs:
        assert p["logprob"] <= 0 and len(p["top_logprobs"]) == 3 and bytes(p["bytes"]).decode() == p["token"]
        assert p["top_logprobs"][0]["id"] == p["id"]  # greedy: the chosen token is the most likely one
    word = out["content"].split()[1]
    stopped = completion(http, stop=[word])
    assert stopped["stop_type"] == "word" and stopped["stopping_word"] == word
    assert word not in stopped["content"] and out["content"].startswith(stopped["content"])
    eos = completion(http, prompt="<|im_start|>user\nSay OK.<|im_end|>\n<|im_start|>assistant\n", n_predict=64)
    assert eos["stop_type"] == "eos" and eos["tokens_predicted"] < 64
    sampled = [completion(http, temperature=1.0, seed=7, n_predict=12)["content"] for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_token_prompt_and_slot_choice(http):
    ids = http.post("/tokenize", json={"content": PROMPT, "add_special": True}).json()["tokens"]
    assert completion(http, prompt=ids)["content"] == completion(http)["content"]
    pinned = completion(http, id_slot=2, cache_prompt=False)
    assert pinned["id_slot"] == 2 and pinned["timings"]["cache_n"] == 0
    assert pinned["generation_settings"]["id_slot"] == 2 and pinned["generation_settings"]["cache_prompt"] is False
    again = completion(http, id_slot=2)
    assert again["timings"]["cache_n"] > 0 and again["content"] == pinned["content"]


def test_mixed_prompt_schema_and_time_limit(http):
    ids = http.post("/tokenize", json={"content": " France is", "add_special": False}).json()["tokens"]
    assert len(ids) >= 2
    mixed = completion(http, prompt=["The capital of", *ids])
    assert mixed["content"] == completion(http)["content"] and mixed["prompt"].endswith("The capital of France is")
    answer = completion(http, prompt="Is Paris in France? Answer:", n_predict=6,
                        json_schema={"type": "string", "enum": ["yes", "no"]})
    assert json.loads(answer["content"]) in ("yes", "no") and answer["stop_type"] == "eos"
    limited = completion(http, n_predict=400, ignore_eos=True, t_max_predict_ms=1)
    assert limited["stop_type"] == "limit" and limited["tokens_predicted"] < 400
    assert limited["generation_settings"]["t_max_predict_ms"] == 1


def test_other_samplers_reach_the_engine(http):
    out = completion(http, temperature=0.7, seed=3, dry_multiplier=0.8, xtc_probability=0.5, top_n_sigma=1.5,
                     samplers="edkypmxt")
    s = out["generation_settings"]
    assert s["dry_multiplier"] == 0.8 and s["xtc_probability"] == 0.5 and s["samplers"] == "edkypmxt"
    assert completion(http, temperature=0.7, seed=3, mirostat=2, mirostat_tau=4.0)["tokens_predicted"] == 8
    for body, param in (({"samplers": "edz"}, "samplers"), ({"mirostat": 3}, "mirostat"),
                        ({"dry_sequence_breakers": "x"}, "dry_sequence_breakers")):
        r = http.post("/completion", json={"prompt": PROMPT, "n_predict": 2, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_stream(http):
    with http.stream("POST", "/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0,
                                                 "stream": True, "return_tokens": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(e) for e in sse_events(r.iter_lines())]
    *parts, last = events
    assert parts and all(p["stop"] is False and "timings" not in p for p in parts)
    assert "".join(p["content"] for p in parts) == completion(http)["content"]
    assert sum(len(p["tokens"]) for p in parts) == 8
    assert last["stop"] is True and last["content"] == "" and last["stop_type"] == "limit"
    assert last["timings"]["predicted_n"] == 8 and last["generation_settings"]["stream"] is True
    with http.stream("POST", "/completion", json={"prompt": PROMPT, "n_predict": 4, "temperature": 0,
                                                 "stream": True, "n_probs": 2}) as r:
        chunks = [json.loads(e) for e in sse_events(r.iter_lines())]
    probs = [p for c in chunks[:-1] for p in c["completion_probabilities"]]
    assert len(probs) == 4 and all(len(p["top_logprobs"]) == 2 for p in probs)
    assert "".join(p["token"] for p in probs) == "".join(c["content"] for c in chunks)
    assert "completion_probabilities" not in chunks[-1]


def test_props(http, server):
    r = http.get("/props")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["total_slots"] == 4 and p["model_alias"] == MODEL_ID
    assert p["default_generation_settings"]["n_ctx"] == 512
    assert p["default_generation_settings"]["params"]["temperature"] == 0.8
    assert p["model_path"] == "SmolLM2-135M-Instruct.Q4_1.gguf" or "/" not in p["model_path"]
    assert "im_start" in p["chat_template"] and p["modalities"] == {"vision": False, "audio": False, "video": False}
    assert "llama.cpp" in p["build_info"] and p["endpoint_slots"] is True
    assert http.get("/props", params={"model": MODEL_ID}).json()["model_alias"] == MODEL_ID
    missing = http.get("/props", params={"model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    admin = httpx.get(server.base_url + "/props", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    assert admin["model_path"].endswith(".gguf") and "/" in admin["model_path"]
    assert httpx.get(server.base_url + "/props", timeout=30).status_code == 401


def test_slots_admin_only_and_busy_slot(http, server):
    refused = http.get("/slots")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    idle = httpx.get(server.base_url + "/slots", headers=admin, timeout=30)
    assert idle.status_code == 200, idle.text
    assert [s["id"] for s in idle.json()] == [0, 1, 2, 3]
    assert all(s["n_ctx"] == 512 and s["is_processing"] is False and "id_task" not in s and "params" not in s
               for s in idle.json())
    with ThreadPoolExecutor(1) as pool:  # a long generation in slot 1, seen while it runs
        running = pool.submit(completion, http, id_slot=1, n_predict=200, ignore_eos=True)
        seen = None
        for _ in range(600):
            busy = [s for s in httpx.get(server.base_url + "/slots", headers=admin, timeout=30).json()
                    if s["is_processing"]]
            if busy and busy[0]["next_token"][0]["n_decoded"] > 0:
                seen = busy[0]
                break
        out = running.result()
    assert seen is not None and seen["id"] == 1 and seen["id_task"] > 0 and seen["generating"] is True
    assert seen["n_prompt_tokens"] == out["tokens_evaluated"] and seen["next_token"][0]["has_next_token"] is True
    params = seen["params"]
    assert params["n_predict"] == 200 and params["temperature"] == 0 and params["ignore_eos"] is True
    assert params["id_slot"] == 1 and params["top_k"] == 40 and params["seed"] == 4294967295
    assert out["id_slot"] == 1 and out["tokens_predicted"] == 200


def test_apply_template(http):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = http.post("/apply-template", json={"messages": msgs})
    assert r.status_code == 200, r.text
    prompt = r.json()["prompt"]
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    no_gen = http.post("/apply-template", json={"messages": msgs, "add_generation_prompt": False}).json()["prompt"]
    assert prompt.startswith(no_gen) and not no_gen.endswith("assistant\n")
    # the rendered prompt through /completion answers as the chat endpoint does
    chat = http.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": msgs, "max_tokens": 8,
                                                   "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert completion(http, prompt=prompt)["content"].startswith(chat.strip()[:8])
    bad = http.post("/apply-template", json={"messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


@pytest.mark.parametrize("body,param", [
    ({"n_indent": 2}, "n_indent"),
    ({"input_suffix": "x"}, "input_suffix"),
    ({"dynatemp_range": 0.5}, "dynatemp_range"),
    ({"post_sampling_probs": True}, "post_sampling_probs"),
    ({"timings_per_token": True}, "timings_per_token"),
    ({"n_probs": 21}, "n_probs"),
    ({"id_slot": 4}, "id_slot"),
    ({"n_predict": 0}, "n_predict"),
    ({"n_predict": 100000}, "prompt"),
    ({"prompt": [10 ** 7]}, "prompt"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"temperature": "hot"}, "temperature"),
    ({"logit_bias": [[1, 2, 3]]}, "logit_bias"),
    ({"grammar": "root ::= \"a\"", "json_schema": {"type": "object"}}, ""),
    ({"grammar": "root ::= nope"}, "grammar"),
    ({"model": "nope"}, "model"),
    ({"json_schema": DEEP_SCHEMA}, "json_schema"),
])
def test_bad_fields_name_the_param(http, body, param):
    r = http.post("/completion", json={"prompt": PROMPT, "n_predict": 4, **body})
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert err["param"] == (param or None) and err["message"]
    if r.status_code == 404:
        assert param == "model"


def test_logit_bias_forms(http):
    base = completion(http, n_predict=1)
    first = http.post("/tokenize", json={"content": base["content"]}).json()["tokens"][0]
    for bias in ([[first, False]], {str(first): -100}, [[base["content"], False]]):
        out = completion(http, n_predict=1, logit_bias=bias)
        assert out["content"] != base["content"], bias

"""Ollama's API, driven by the official ``ollama`` Python client against the
live Waitress server with the real model: chat (streamed and not), generate
(templated and raw), embed, list, show, ps, structured output with a JSON
schema, a tool call and its result, the refused model management calls,
``keep_alive``, and the same greedy answer through the OpenAI, Anthropic and
Ollama APIs, counted alike in the metrics."""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone

import anthropic
import httpx
import ollama
import pytest

from kolosal.server.protocol.ollama.api import GenerateResponse
from kolosal.server.serving.common import dumps

from .conftest import MODEL_ID, REPO, server_config, start_server

GREEDY = {"temperature": 0, "num_predict": 10}
THINKING_TEMPLATE = REPO / "vendor/llama.cpp/models/templates/Qwen3.5-4B.jinja"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def llama(live_server):
    with ollama.Client(host=live_server.base_url, timeout=60) as c:
        yield c


def test_chat(llama):
    r = llama.chat(model=MODEL_ID, messages=[{"role": "system", "content": "You are terse."},
                                             {"role": "user", "content": "Say hello."}], options=GREEDY,
                   logprobs=True, top_logprobs=2)
    assert isinstance(r, ollama.ChatResponse) and r.model == MODEL_ID and r.done
    assert r.message.role == "assistant" and r.message.content and not r.message.tool_calls
    assert r.done_reason in ("stop", "length") and 0 < r.eval_count <= 10 and r.prompt_eval_count > 5
    assert r.total_duration > 0 and r.eval_duration > 0 and r.created_at.endswith("Z")
    assert len(r.logprobs) == r.eval_count and all(len(lp.top_logprobs) == 2 for lp in r.logprobs)
    assert "".join(lp.token for lp in r.logprobs).strip() == r.message.content


def test_chat_stream_matches_whole_answer(llama):
    messages = [{"role": "user", "content": "Name three colours."}]
    parts = list(llama.chat(model=MODEL_ID, messages=messages, options=GREEDY, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    last = parts[-1]
    assert last.message.content == "" and last.eval_count == len(parts) - 1 == 10 and last.done_reason == "length"
    whole = llama.chat(model=MODEL_ID, messages=messages, options=GREEDY)
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_generate(llama):
    r = llama.generate(model=MODEL_ID, prompt="Say hello.", system="You are terse.", options=GREEDY)
    assert r.done and r.response and r.eval_count <= 10
    streamed = list(llama.generate(model=MODEL_ID, prompt="Say hello.", system="You are terse.", options=GREEDY,
                                   stream=True))
    assert streamed[-1].done and "".join(p.response for p in streamed) == r.response
    raw = llama.generate(model=MODEL_ID, prompt="The capital of France is", raw=True,
                         options={"temperature": 0, "num_predict": 4})
    assert raw.response and raw.prompt_eval_count < r.prompt_eval_count  # no chat template around it
    assert raw.eval_count == 4 and raw.done_reason == "length"


def test_raw_generate_stream_lines(llama, http):
    """A raw ``/api/generate`` stream: one line per piece of text, exactly as Ollama's object serializes
    (``model``, ``created_at``, ``done``, ``response``), whose text is the unstreamed answer, then the counts."""
    body = {"model": MODEL_ID, "prompt": "The capital of France is", "raw": True,
            "options": {"temperature": 0, "num_predict": 4}}
    with http.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [line for line in r.iter_lines() if line]
    parts = [json.loads(line) for line in lines]
    assert len(parts) >= 2 and parts[-1]["done"] and not any(p["done"] for p in parts[:-1])
    for line, part in zip(lines[:-1], parts[:-1]):
        assert list(part) == ["model", "created_at", "done", "response"] and part["model"] == MODEL_ID
        assert part["response"] and datetime.fromisoformat(part["created_at"].replace("Z", "+00:00")).tzinfo
        assert line == dumps(GenerateResponse(**part).wire())  # the bytes the object itself writes
    last = parts[-1]
    assert last["response"] == "" and last["eval_count"] == 4 and last["done_reason"] == "length"
    whole = llama.generate(model=MODEL_ID, prompt=body["prompt"], raw=True, options=body["options"])
    assert "".join(p["response"] for p in parts) == whole.response


def test_raw_generate_logprobs(llama):
    """A raw ``/api/generate`` asking for log-probabilities gets them, streamed and not, as the templated one does."""
    kw = dict(model=MODEL_ID, prompt="The capital of France is", raw=True,
              options={"temperature": 0, "num_predict": 4}, logprobs=True, top_logprobs=2)
    whole = llama.generate(**kw)
    assert len(whole.logprobs) == whole.eval_count == 4 and all(len(lp.top_logprobs) == 2 for lp in whole.logprobs)
    assert "".join(lp.token for lp in whole.logprobs) == whole.response
    assert all(lp.logprob <= 0 and lp.top_logprobs[0].logprob >= lp.top_logprobs[1].logprob for lp in whole.logprobs)
    parts = list(llama.generate(stream=True, **kw))
    streamed = [lp for p in parts for lp in p.logprobs or []]
    assert [(lp.token, lp.logprob) for lp in streamed] == [(lp.token, lp.logprob) for lp in whole.logprobs]


def test_embed(llama):
    r = llama.embed(model=MODEL_ID, input=["The cat sat.", "A dog ran."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576 and r.prompt_eval_count > 4
    assert math.isclose(sum(x * x for x in r.embeddings[0]), 1.0, rel_tol=1e-3)  # normalised, as Ollama's
    one = llama.embeddings(model=MODEL_ID, prompt="The cat sat.")  # the older endpoint
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(one.embedding, r.embeddings[0]))
    long = llama.embed(model=MODEL_ID, input="word " * 2000)  # truncated to the context by default
    assert len(long.embeddings) == 1
    with pytest.raises(ollama.ResponseError) as e:
        llama.embed(model=MODEL_ID, input="word " * 2000, truncate=False)
    assert e.value.status_code == 400 and "truncate" in e.value.error


def test_list_show_ps_version(llama, live_server):
    listed = llama.list().models
    mine = next(m for m in listed if m.model == MODEL_ID)
    assert mine.size > 1_000_000 and len(mine.digest) == 64 and mine.details.format == "gguf"
    assert mine.details.family == "llama" and mine.details.quantization_level == "Q4_1"
    shown = llama.show(MODEL_ID + ":latest")  # Ollama's tag names the configured model
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llama.context_length"] == 8192
    assert "completion" in shown.capabilities and "im_start" in shown.template
    running = llama.ps().models
    assert [m.model for m in running] == [MODEL_ID] and running[0].context_length == 512
    assert running[0].size > 0 and running[0].expires_at is not None
    version = httpx.get(live_server.base_url + "/api/version").json()
    # Ollama's API level: apps refuse servers older than the Ollama they need (VS Code's Copilot: 0.6.4)
    assert tuple(int(x) for x in version["version"].split(".")) >= (0, 6, 4)
    assert version["server"].startswith("kolosal ")  # and which server speaks it


def test_structured_output_with_a_json_schema(llama):
    schema = {"type": "object", "properties": {"capital": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]},
                                               "is_big": {"type": "boolean"}},
              "required": ["capital", "is_big"]}
    r = llama.chat(model=MODEL_ID, messages=[{"role": "user", "content": "What is the capital of France?"}],
                   format=schema, options={"temperature": 0, "num_predict": 40})
    data = json.loads(r.message.content)
    assert data["capital"] in ("Paris", "Lyon", "Nice") and isinstance(data["is_big"], bool)
    r = llama.generate(model=MODEL_ID, prompt="Describe Paris as JSON.", format="json",
                       options={"temperature": 0, "num_predict": 60})
    assert r.response.lstrip().startswith("{")


def test_structured_output_streams_as_it_answers(llama):
    """The chat format lets the model wrap the object in a ```json fence, which the
    answer leaves out: so must the stream (this seed opens one)."""
    kw = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Describe a cat as a JSON object."}],
              format="json", options={"temperature": 0.7, "seed": 1, "num_predict": 24})
    whole = llama.chat(**kw).message.content
    streamed = "".join(p.message.content for p in llama.chat(**kw, stream=True))
    assert whole.startswith("{") and streamed == whole, (streamed, whole)


def test_tool_call_and_result(llama):
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    r = llama.chat(model=MODEL_ID, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 80})
    assert r.message.tool_calls, r.message
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(call.function.arguments.get("city"), str)
    streamed = list(llama.chat(model=MODEL_ID, messages=messages, tools=[WEATHER], stream=True,
                               options={"temperature": 0, "num_predict": 80}))
    calls = [c for p in streamed for c in p.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert calls[0].function.arguments == call.function.arguments
    # cut off by num_predict: no text made of the server's own JSON answer form, whole as streamed
    cut = dict(model=MODEL_ID, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 8})
    whole = llama.chat(**cut)
    parts = list(llama.chat(**cut, stream=True))
    assert whole.done_reason == "length" and "tool_calls" not in whole.message.content, whole.message
    assert whole.message.content == "".join(p.message.content for p in parts)
    messages += [r.message, {"role": "tool", "content": "Sunny, 24 C", "tool_name": "get_weather"}]
    answer = llama.chat(model=MODEL_ID, messages=messages, options={"temperature": 0, "num_predict": 12})
    assert answer.message.content and not answer.message.tool_calls


def test_errors_in_ollamas_shape(llama, live_server):
    with pytest.raises(ollama.ResponseError) as e:
        llama.pull("llama3.2")
    assert e.value.status_code == 501 and "configuration" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        llama.delete(MODEL_ID)
    assert e.value.status_code == 501
    with pytest.raises(ollama.ResponseError) as e:
        llama.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        llama.chat(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], options={"mirostat": 3})
    assert e.value.status_code == 400 and "mirostat" in e.value.error
    # Mirostat (1 and 2.0) as Ollama's options name it, as ChatOllama(mirostat=...) sends them
    for version in (1, 2):
        r = llama.chat(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}],
                       options={"mirostat": version, "mirostat_tau": 3.0, "mirostat_eta": 0.2, "num_predict": 4})
        assert r.done and r.eval_count == 4
    with httpx.Client(base_url=live_server.base_url, timeout=30) as http:
        r = http.post("/api/chat", json={"model": MODEL_ID, "messages": [], "options": {"no_such_option": 1}})
        assert r.status_code == 400 and r.json() == {"error": r.json()["error"]} and "no_such_option" in r.text
        r = http.post("/api/chat", json={"model": MODEL_ID, "keep_alive": "soon", "messages": []})
        assert r.status_code == 400 and "keep_alive" in r.json()["error"]
        r = http.post("/api/generate", json={"model": MODEL_ID, "prompt": "hi", "raw": True, "format": "json"})
        assert r.status_code == 400 and "'format'" in r.json()["error"] and "raw" in r.json()["error"]
        r = http.post("/api/generate", json={"model": MODEL_ID, "prompt": "hi", "raw": True,
                                             "options": {"temperature": -1}})
        assert r.status_code == 400 and "'options.temperature'" in r.json()["error"]
        r = http.post("/api/generate", json={"model": MODEL_ID, "prompt": "hi", "template": "{{ .Prompt }}"})
        assert r.status_code == 400 and "'template'" in r.json()["error"]
        assert http.get("/api/nothing").json() == {"error": "Unknown endpoint: no route matches this URL."}
        assert http.get("/api/chat").status_code == 405


def test_curl_bodies_and_the_root_probe(live_server):
    """Ollama's own curl examples post JSON without a JSON content type (``curl -d``):
    taken on /api/ when no web page sent it (no ``Origin``), refused (415) when one
    did. ``GET /`` answers Ollama's probe to programs and the console to browsers."""
    body = json.dumps({"model": MODEL_ID, "prompt": "Why is the sky blue?", "stream": False, "options": GREEDY})
    with httpx.Client(base_url=live_server.base_url, timeout=60) as http:
        r = http.post("/api/generate", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and r.json()["done"] is True and r.json()["response"], r.text
        assert http.post("/api/show", content=json.dumps({"model": MODEL_ID})).json()["details"]["family"] == "llama"
        page = http.post("/api/generate", content=body, headers={"Content-Type": "text/plain",
                                                                 "Origin": "http://example.com"})
        assert page.status_code == 415 and "application/json" in page.json()["error"]
        for headers in ({}, {"User-Agent": "ollama-python/0.6"}, {"Accept": "*/*"}):
            probe = http.get("/", headers=headers)
            assert probe.status_code == 200 and probe.text == "Ollama is running", headers
            assert probe.headers["content-type"].startswith("text/plain")
        assert http.head("/").status_code == 200
        browser = http.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert browser.status_code == 200 and browser.headers["content-type"].startswith("text/html")
        assert "<title>Kolosal console</title>" in browser.text


def test_same_greedy_answer_through_three_apis(llama, live_server, oai):
    """One engine behind the three dialects: the same conversation at
    temperature 0 gives the same text, and the metrics count each request."""
    prompt = "Write one sentence about the sea."
    openai_text = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                              max_tokens=12, temperature=0).choices[0].message.content
    with anthropic.Anthropic(base_url=live_server.base_url, api_key="unused", max_retries=0) as claude:
        msg = claude.messages.create(model=MODEL_ID, max_tokens=12, messages=[{"role": "user", "content": prompt}],
                                     extra_body={"temperature": 0})
    ollama_text = llama.chat(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                             options={"temperature": 0, "num_predict": 12}).message.content
    assert openai_text and openai_text == msg.content[0].text == ollama_text
    metrics = httpx.get(live_server.base_url + "/metrics/prometheus").text
    for endpoint in ("/chat/completions", "/messages", "/api/chat"):
        assert f'kolosal_requests_total{{endpoint="{endpoint}",engine="{MODEL_ID}",status="200"}}' in metrics


KEY = "ollama-test-key"
ADMIN = "ollama-test-admin-key"


@pytest.fixture(scope="module")
def own_server(model_path, tmp_path_factory):
    """A server of this module's own (keep_alive unloads its model), with API keys and idle models unloaded
    after a second."""
    cfg = server_config(model_path)
    cfg["security"] = {"api_keys": [KEY], "admin_api_keys": [ADMIN]}
    cfg["inference"]["keep_alive_seconds"] = 1
    server = start_server(cfg, tmp_path_factory.mktemp("ollama-own"))
    yield server
    assert server.stop() == 0, server.log()


def _loaded(client: ollama.Client) -> list:
    return [m.model for m in client.ps().models]


def _wait_until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_keys_and_keep_alive(own_server):
    with ollama.Client(host=own_server.base_url) as anonymous, pytest.raises(ollama.ResponseError) as e:
        anonymous.list()
    assert e.value.status_code == 401 and "API key" in e.value.error
    with ollama.Client(host=own_server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        _keep_alive(client)
        _failure_mid_stream(client, own_server.base_url)


def _keep_alive(client: ollama.Client) -> None:
    r = client.chat(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2},
                    keep_alive=0)
    assert r.done
    assert _wait_until(lambda: _loaded(client) == [])  # unloaded once answered
    r = client.chat(model=MODEL_ID, keep_alive=-1)  # no messages: load the model, and keep it
    assert r.done_reason == "load" and r.load_duration > 0 and _loaded(client) == [MODEL_ID]
    expires = client.ps().models[0].expires_at
    assert expires > datetime.now(timezone.utc) + timedelta(days=300)
    time.sleep(2.5)  # past the server's keep_alive_seconds (1 s), which this model is exempt from
    assert _loaded(client) == [MODEL_ID]
    client.generate(model=MODEL_ID, prompt="hi", options={"num_predict": 2})  # back to the server's policy
    assert _wait_until(lambda: _loaded(client) == [])
    r = client.generate(model=MODEL_ID, prompt="hi", options={"num_predict": 2}, keep_alive="1h")
    assert r.done and r.load_duration > 0 and _loaded(client) == [MODEL_ID]
    expires = client.ps().models[0].expires_at - datetime.now(timezone.utc)
    assert timedelta(minutes=50) < expires < timedelta(minutes=70)


@pytest.fixture(scope="module")
def thinker(model_path, tmp_path_factory):
    """The demo model with a template whose answer opens with a think block (Qwen3.5's, same ChatML tokens)."""
    cfg = server_config(model_path)
    cfg["models"][0]["load_params"].update(chat_template=THINKING_TEMPLATE.read_text(), n_parallel=2, n_ctx=1024)
    server = start_server(cfg, tmp_path_factory.mktemp("ollama-thinking"))
    with ollama.Client(host=server.base_url, timeout=60) as c:
        yield c
    assert server.stop() == 0, server.log()


def test_think(thinker):
    messages = [{"role": "user", "content": "Say hello."}]
    on = thinker.chat(model=MODEL_ID, messages=messages, think=True, options=GREEDY)
    assert on.message.thinking and on.message.thinking.strip()
    parts = list(thinker.chat(model=MODEL_ID, messages=messages, think=True, options=GREEDY, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == on.message.thinking
    off = thinker.chat(model=MODEL_ID, messages=messages, think=False, options=GREEDY)
    assert not off.message.thinking and off.message.content
    assert off.prompt_eval_count > on.prompt_eval_count  # the template closed an empty think block
    gen = thinker.generate(model=MODEL_ID, prompt="Say hello.", think=True, options=GREEDY)
    assert gen.thinking == on.message.thinking


def test_keep_alive_duration_alone_unloads_the_model(thinker):
    """This server has no ``inference.keep_alive_seconds``: a request's
    ``keep_alive`` of "1s" is what unloads the model, once it has been idle
    that long; the next request loads it again."""
    r = thinker.generate(model=MODEL_ID, prompt="hi", options={"num_predict": 2}, keep_alive="1s")
    assert r.done and _loaded(thinker) == [MODEL_ID]
    assert _wait_until(lambda: _loaded(thinker) == [])
    r = thinker.generate(model=MODEL_ID, prompt="hi", options={"num_predict": 2})
    assert r.done and r.load_duration > 0 and _loaded(thinker) == [MODEL_ID]


def _failure_mid_stream(client: ollama.Client, base_url: str) -> None:
    """The model removed while it streams: the last line is {"error": ...}, which the client raises."""
    deleted = False
    with pytest.raises(ollama.ResponseError) as e:
        for part in client.chat(model=MODEL_ID, messages=[{"role": "user", "content": "Write a long story."}],
                                options={"temperature": 0, "num_predict": 300}, stream=True):
            if part.message.content and not deleted:
                r = httpx.delete(f"{base_url}/engines/{MODEL_ID}", headers={"Authorization": f"Bearer {ADMIN}"})
                assert r.status_code == 200, r.text
                deleted = True
    assert deleted and "unloaded" in e.value.error

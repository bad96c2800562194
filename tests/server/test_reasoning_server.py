"""Reasoning through the live server: ``reasoning_content`` in the answer
and as stream deltas, ``reasoning_format`` per model and per request,
``chat_template_kwargs`` and ``reasoning_effort``; also through the openai SDK.

The demo model gets a thinking chat template (Qwen3's) and a grammar that
makes it write a think block before its answer."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.test_reasoning import THINK_GRAMMAR, THINKING_TEMPLATE

from .conftest import MODEL_ID, server_config, sse_events, start_server

BODY = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 40,
        "temperature": 0, "grammar": THINK_GRAMMAR}


@pytest.fixture(scope="module")
def thinking_server(model_path, tmp_path_factory):
    config = server_config(model_path)
    config["models"][0]["load_params"].update(
        {"n_ctx": 1024, "n_parallel": 2, "chat_template": THINKING_TEMPLATE.read_text(), "reasoning_format": "auto"})
    server = start_server(config, tmp_path_factory.mktemp("reasoning"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def http(thinking_server):
    with httpx.Client(base_url=thinking_server.base_url, timeout=120) as c:
        yield c


def test_answer_has_reasoning_content(http):
    r = http.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg["reasoning_content"].strip() and msg["content"]
    assert "<think>" not in msg["content"] and "</think>" not in msg["content"]
    assert msg["content"][0].isupper()


def test_stream_sends_reasoning_deltas_then_content(http):
    whole = http.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]
    with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
        assert r.status_code == 200
        events = [json.loads(e) for e in sse_events(r.iter_lines()) if e != "[DONE]"]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    kinds = [k for d in deltas for k in ("reasoning_content", "content") if d.get(k)]
    assert kinds and kinds[0] == "reasoning_content"
    first_content = kinds.index("content")
    assert set(kinds[:first_content]) == {"reasoning_content"} and set(kinds[first_content:]) == {"content"}
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning == whole["reasoning_content"] and content == whole["content"]


def test_reasoning_format_none_per_request(http):
    r = http.post("/v1/chat/completions", json={**BODY, "reasoning_format": "none"})
    msg = r.json()["choices"][0]["message"]
    assert "reasoning_content" not in msg and msg["content"].startswith("<think>\n")
    with http.stream("POST", "/v1/chat/completions", json={**BODY, "reasoning_format": "none", "stream": True}) as r:
        events = [json.loads(e) for e in sse_events(r.iter_lines()) if e != "[DONE]"]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert not any(d.get("reasoning_content") for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == msg["content"]


def test_enable_thinking_and_reasoning_effort_reach_the_template(http):
    def prompt_tokens(**extra):
        r = http.post("/v1/chat/completions", json={**BODY, "max_tokens": 1, **extra})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    on = prompt_tokens()
    off = prompt_tokens(chat_template_kwargs={"enable_thinking": False})
    assert off > on  # the template closes an empty think block in the prompt
    assert prompt_tokens(reasoning_effort="none") == off
    assert prompt_tokens(reasoning_effort="high") == on  # this template has no effort variable: ignored


@pytest.mark.parametrize("extra, param", [
    ({"reasoning_format": "deep"}, "reasoning_format"),
    ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "chat_template_kwargs"),
    ({"chat_template_kwargs": "enable_thinking"}, "chat_template_kwargs"),
])
def test_bad_reasoning_fields_are_400(http, extra, param):
    r = http.post("/v1/chat/completions", json={**BODY, **extra})
    assert r.status_code == 400, r.text
    assert param in (r.json()["error"]["param"] or "")


def test_openai_sdk_sees_reasoning_content(thinking_server):
    import openai
    with openai.OpenAI(base_url=thinking_server.v1, api_key="unused", max_retries=0, timeout=120) as client:
        extra = {"grammar": THINK_GRAMMAR}
        out = client.chat.completions.create(model=MODEL_ID, messages=BODY["messages"], max_tokens=40, temperature=0,
                                             extra_body=extra)
        msg = out.choices[0].message
        assert msg.model_extra["reasoning_content"].strip() and msg.content and "<think>" not in msg.content
        stream = client.chat.completions.create(model=MODEL_ID, messages=BODY["messages"], max_tokens=40,
                                                temperature=0, stream=True, extra_body=extra)
        reasoning, content = "", ""
        for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                content += delta.content or ""
        assert reasoning == msg.model_extra["reasoning_content"] and content == msg.content

"""The official openai SDK, sync and async, used as applications use it,
against the live Waitress server: agent loops that send the SDK's own
message objects and ``model_dump()`` dicts back, streamed tool calls,
structured output with a pydantic model, explicit nulls and the fields
OpenAI accepts. The demo model is tiny: answers are constrained (forced
tool calls, JSON schemas) and the tests check the protocol, not wit."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import httpx
import openai
import pytest
from pydantic import BaseModel

from .conftest import MODEL_ID, REPO, chat_body, server_config, start_server

QWEN_TEMPLATE = REPO / "vendor/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


def sse_json(r: httpx.Response) -> List[Dict[str, Any]]:
    out = []
    for line in r.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: "):]))
    return out


# -- explicit nulls and the fields OpenAI accepts ------------------------------


def test_explicit_null_means_default(http):
    body = chat_body(n=None, stream=None, logprobs=None, top_logprobs=None, stream_options=None, temperature=None,
                     top_p=None, stop=None, seed=None, tools=None, tool_choice=None, response_format=None,
                     max_completion_tokens=None, user=None, parallel_tool_calls=None)
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "chat.completion" and len(data["choices"]) == 1
    assert data["choices"][0]["logprobs"] is None
    fmt = {"type": "json_schema", "json_schema": {"name": None, "schema": None, "strict": None, "description": None}}
    r = http.post("/v1/chat/completions", json=chat_body(response_format=fmt, max_tokens=24))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].lstrip().startswith("{")
    r = http.post("/v1/completions", json={"model": MODEL_ID, "prompt": "Hello", "max_tokens": 3, "n": None,
                                           "stream": None, "echo": None, "logprobs": None, "best_of": None,
                                           "suffix": None, "stream_options": None})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion" and len(r.json()["choices"]) == 1
    r = http.post("/v1/embeddings", json={"model": MODEL_ID, "input": "Hello", "encoding_format": None,
                                          "dimensions": None, "user": None})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["data"][0]["embedding"], list)  # the default, float
    r = http.post("/tokenize", json={"content": "Hello", "model": None, "add_special": None, "parse_special": None,
                                     "with_pieces": None})
    assert r.status_code == 200 and r.json()["tokens"], r.text


def test_fields_without_local_meaning_are_accepted(oai):
    r = oai.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=4,
        store=True, metadata={"team": "a"}, service_tier="auto", user="u-1", safety_identifier="s-1",
        prompt_cache_key="k", reasoning_effort="low", verbosity="low", modalities=["text"], parallel_tool_calls=False,
        prediction={"type": "content", "content": "Hello"}, stream_options=None)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens <= 4


@pytest.mark.parametrize("field, value", [
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("web_search_options", {}),
    ("functions", [WEATHER["function"]]),
    ("function_call", "auto"),
])
def test_fields_that_would_change_the_answer_are_400(oai, field, value):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                    extra_body={field: value})
    err = ei.value.body
    assert err["param"] == field and err["code"] == "unsupported_parameter"
    assert field in err["message"]


def test_model_header_must_name_the_body_model(live_server, http):
    """A client that names the model in X-Kolosal-Model for a load balancer (the SDK's default_headers) is
    answered when the header and the body agree, and refused when they do not, whatever the dialect."""
    with openai.OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60,
                       default_headers={"X-Kolosal-Model": MODEL_ID}) as same:
        r = same.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert r.model == MODEL_ID and r.choices[0].message.role == "assistant"
    with openai.OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60,
                       default_headers={"X-Kolosal-Model": "another-model"}) as other:
        with pytest.raises(openai.BadRequestError) as ei:
            other.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        err = ei.value.body
        assert err["code"] == "model_mismatch" and err["param"] == "model"
        assert "another-model" in err["message"] and MODEL_ID in err["message"]
        with pytest.raises(openai.BadRequestError):
            other.embeddings.create(model=MODEL_ID, input="Hi")
    r = http.post("/v1/messages", headers={"X-Kolosal-Model": "another-model"},
                  json={"model": MODEL_ID, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 400 and "another-model" in r.text, r.text
    r = http.post("/api/chat", headers={"X-Kolosal-Model": "another-model"},
                  json={"model": MODEL_ID, "stream": False, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 400 and "another-model" in r.text, r.text


def test_content_parts_in_every_role(oai):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}], "refusal": None},
        {"role": "user", "content": "Again."},
    ]
    r = oai.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=4)
    assert r.choices[0].message.content


# -- agent loops ---------------------------------------------------------------


def _tool_result(call: Any) -> Dict[str, Any]:
    city = json.loads(call.function.arguments).get("city", "?")
    return {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": city, "sky": "sunny"})}


@pytest.mark.parametrize("as_dict", [False, True], ids=["message-object", "model_dump"])
def test_multi_step_tool_loop_sends_sdk_messages_back(oai, as_dict):
    messages: List[Any] = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]
    for step in range(2):
        r = oai.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="required",
                                        max_tokens=64, temperature=0, seed=step)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and msg.tool_calls
        if as_dict:
            dumped = msg.model_dump()
            # What the SDK writes for an assistant turn: the nulls the server must accept.
            assert {"refusal", "annotations", "audio", "function_call"} <= set(dumped)
            messages.append(dumped)
        else:
            messages.append(msg)
        messages.extend(_tool_result(c) for c in msg.tool_calls)
    final = oai.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="none",
                                        max_tokens=16)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert isinstance(final.choices[0].message.content, str) and not final.choices[0].message.tool_calls
    # A plain answer sent back as model_dump() (content, no tool calls) is accepted too.
    messages.append(final.choices[0].message.model_dump())
    messages.append({"role": "user", "content": "Thanks."})
    again = oai.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=4)
    assert again.choices[0].message.role == "assistant"


def test_deprecated_function_call_in_history_is_read_as_a_tool_call(http):
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None,
                 "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                {"role": "function", "name": "get_weather", "content": "snow"}]
    r = http.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "max_tokens": 4})
    assert r.status_code == 200, r.text


# -- streaming -----------------------------------------------------------------


def test_tool_call_streams_as_openai_streams_it(http):
    body = chat_body("Weather in Paris?", tools=[WEATHER], tool_choice=FORCE_WEATHER, max_tokens=64,
                     temperature=0, stream=True)
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        chunks = sse_json(r)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["id"] and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert rest and all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest)
    # The arguments arrive in fragments as they are generated, not in one piece at the end.
    assert len(rest) >= 3
    assert json.loads("".join(tc["function"]["arguments"] for tc in rest))["city"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("max_tokens", [8, 20])
def test_tool_call_cut_short_by_max_tokens_answers_as_its_stream(http, max_tokens):
    """A forced call cut off by the token limit (before its name, or inside its
    arguments): the whole answer holds what the stream gave, never text made of
    the server's own JSON answer form."""
    body = chat_body("Weather in Paris?", tools=[WEATHER], tool_choice=FORCE_WEATHER, max_tokens=max_tokens,
                     temperature=0)
    whole = http.post("/v1/chat/completions", json=body).json()["choices"][0]
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        chunks = sse_json(r)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    streamed: List[Dict[str, str]] = []
    for tc in [tc for d in deltas for tc in d.get("tool_calls") or []]:
        if tc.get("id"):
            streamed.append({"name": tc["function"]["name"], "arguments": ""})
        streamed[-1]["arguments"] += tc["function"].get("arguments") or ""
    assert whole["finish_reason"] == chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "tool_calls" not in (whole["message"]["content"] or ""), whole
    assert (whole["message"]["content"] or "") == text
    assert [c["function"] for c in whole["message"].get("tool_calls") or []] == streamed


def test_tool_choice_auto_streams_an_answer_or_a_call(http):
    body = chat_body("Write a haiku about the sea.", tools=[WEATHER], tool_choice="auto", max_tokens=48,
                     stream=True, temperature=0.7, seed=0)
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = sse_json(r)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:]
    reason = chunks[-1]["choices"][0]["finish_reason"]
    if reason == "tool_calls":
        assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    else:
        # The answer's text streams as it is generated, never the JSON it is wrapped in.
        text = [d["content"] for d in deltas if d.get("content")]
        assert text and not "".join(text).lstrip().startswith("{")
        if reason == "stop":
            assert len(text) > 1


def test_streamed_tool_call_keeps_logprobs(oai):
    stream = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Rome?"}],
                                         tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0,
                                         stream=True, logprobs=True, top_logprobs=2)
    tokens, args = [], ""
    for chunk in stream:
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                tokens.extend(c.logprobs.content)
            for tc in c.delta.tool_calls or []:
                args += tc.function.arguments or ""
    assert json.loads(args)["city"]
    assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) <= 2 for t in tokens)


def test_sdk_accumulates_a_streamed_tool_call(oai):
    with oai.chat.completions.stream(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Lima?"}],
                                     tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0) as s:
        kinds = {e.type for e in s}
        final = s.get_final_completion()
    assert {"tool_calls.function.arguments.delta", "tool_calls.function.arguments.done"} <= kinds
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]


def test_parallel_calls_stream_the_arguments_the_answer_holds(oai):
    """Two parallel calls: the argument fragments a stream sends add up to the
    arguments of the answer not streamed (the text the model wrote, which it may
    lay out over several lines), call by call."""
    kw: Dict[str, Any] = dict(model=MODEL_ID, messages=[{"role": "user", "content": "What is the weather in Paris "
                                                          "and in London?"}],
                              tools=[WEATHER], tool_choice="required", parallel_tool_calls=True, max_tokens=120,
                              temperature=0)
    whole = oai.chat.completions.create(**kw).choices[0].message.tool_calls
    streamed: Dict[int, str] = {}
    for c in oai.chat.completions.create(**kw, stream=True):
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            streamed[tc.index] = streamed.get(tc.index, "") + (tc.function.arguments or "")
    assert len(whole) == 2
    assert [call.function.arguments for call in whole] == [streamed[0], streamed[1]]
    assert [json.loads(call.function.arguments)["city"] for call in whole] == ["Paris", "London"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": True})),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "Once", "max_tokens": 6, "stream": True,
                         "stream_options": {"include_usage": True}}),
])
def test_include_usage_sends_null_usage_until_the_last_chunk(http, path, body):
    with http.stream("POST", path, json=body) as r:
        chunks = sse_json(r)
    *others, last = chunks
    assert others and all("usage" in c and c["usage"] is None for c in others)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0


def test_without_include_usage_chunks_carry_no_usage(http):
    with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as r:
        chunks = sse_json(r)
    assert chunks and all("usage" not in c for c in chunks)


# -- structured output ---------------------------------------------------------


class City(BaseModel):
    name: str
    country: str
    population: int


def test_parse_with_a_pydantic_response_format(oai):
    r = oai.chat.completions.parse(model=MODEL_ID, messages=[{"role": "user", "content": "Describe Paris."}],
                                   response_format=City, max_tokens=80, temperature=0)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(msg.parsed, City)
    assert City.model_validate_json(msg.content) == msg.parsed


# -- async client --------------------------------------------------------------


def test_async_client_create_stream_and_concurrency(live_server):
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60) as c:
            one = await c.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4)
            assert one.choices[0].message.content
            stream = await c.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}],
                                                     max_tokens=6, stream=True,
                                                     stream_options={"include_usage": True})
            pieces, usage = [], None
            async for chunk in stream:
                pieces.extend(ch.delta.content or "" for ch in chunk.choices)
                usage = chunk.usage or usage
            assert "".join(pieces) and usage is not None and usage.completion_tokens > 0
            calls = await asyncio.gather(*[
                c.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": f"Weather in {city}?"}],
                                          tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0)
                for city in ("Paris", "Rome", "Oslo")])
            assert all(r.choices[0].message.tool_calls[0].function.name == "get_weather" for r in calls)
            parsed = await c.chat.completions.parse(model=MODEL_ID, response_format=City, max_tokens=120,
                                                    temperature=0, messages=[{"role": "user",
                                                                              "content": "Describe Rome."}])
            assert isinstance(parsed.choices[0].message.parsed, City)

    asyncio.run(main())


# -- model names -----------------------------------------------------------------


@pytest.fixture(scope="module")
def named_server(model_path, tmp_path_factory):
    """``smollm2`` with the alias ``gpt-4o-mini``; ``fallback`` (the same file,
    loaded on first use) answers any other name as ``server.default_model``;
    ``native-tools`` is the same model with a template that has its own
    tool-call format (``<tool_call>`` tags, read by llama.cpp's parser)."""
    cfg = server_config(model_path, default_model="fallback")
    main = cfg["models"][0]  # type: ignore[index]
    main["aliases"] = ["gpt-4o-mini"]
    cfg["models"].append({"id": "fallback", "path": str(model_path), "load_at_startup": False,  # type: ignore[union-attr]
                          "load_params": dict(main["load_params"], n_parallel=1, n_ctx=512)})
    cfg["models"].append({"id": "native-tools", "path": str(model_path), "load_at_startup": False,  # type: ignore[union-attr]
                          "load_params": dict(main["load_params"], n_parallel=1, n_ctx=1024,
                                              chat_template=QWEN_TEMPLATE.read_text())})
    server = start_server(cfg, tmp_path_factory.mktemp("named"))
    yield server
    assert server.stop() == 0, server.log()


def test_alias_clashes_and_unknown_default_model_stop_startup(model_path):
    from kolosal.server.config import ConfigError, check_model_files, load_config
    cfg = server_config(model_path, default_model="nope")
    cfg["models"].append({"id": "other", "path": str(model_path), "aliases": ["smollm2"]})  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as ei:
        check_model_files(load_config(data=cfg))
    assert "models[1].aliases: 'smollm2' already names a model" in ei.value.errors
    assert "server.default_model: 'nope' is not a model id or alias" in ei.value.errors


def _states(server) -> Dict[str, str]:
    return {m["id"]: m["status"] for m in httpx.get(server.v1 + "/models", timeout=10).json()["data"]}


def test_aliases_and_default_model(named_server):
    with openai.OpenAI(base_url=named_server.v1, api_key="unused", max_retries=0, timeout=60) as c:
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert r.model == "gpt-4o-mini" and r.choices[0].message.content is not None
        assert _states(named_server)["fallback"] != "loaded"  # the alias was served by smollm2
        r = c.chat.completions.create(model="gpt-5-turbo-whatever", messages=[{"role": "user", "content": "Hi"}],
                                      max_tokens=2)
        assert r.choices[0].message.content is not None
        assert _states(named_server)["fallback"] == "loaded"
        assert c.models.retrieve("gpt-4o-mini").id == MODEL_ID
        listed = {m.id: m for m in c.models.list()}
        assert listed[MODEL_ID].model_extra["aliases"] == ["gpt-4o-mini"]
        assert listed["fallback"].model_extra["aliases"] == []


def test_native_tool_format_streams_text_as_it_is_written(named_server):
    """With a template's own tool format the answer is read as it grows: text
    streams token by token (it used to arrive in one piece at the end), a
    call would follow as a name delta and argument fragments."""
    with httpx.Client(base_url=named_server.base_url, timeout=120) as http:
        body = {"model": "native-tools", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [WEATHER], "max_tokens": 24, "temperature": 0, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            chunks = sse_json(r)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:]
    texts = [d["content"] for d in deltas if d.get("content")]
    assert len(texts) > 3, deltas
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    if calls:  # the model chose to call after its text
        assert calls[0]["function"]["name"] == "get_weather" and calls[0]["function"]["arguments"] == ""
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")

"""Anthropic's Messages API, driven by the official ``anthropic`` SDK against
the live Waitress server with the real model: create, streams (text and tool
use, event by event in Anthropic's order), a two-step tool loop with the
SDK's own content blocks sent back, count_tokens, typed errors in
Anthropic's shape, and keys as ``x-api-key`` with rate limits and the token
quota applied to this dialect as to the others. The demo model is tiny:
tool calls are forced and the tests check the protocol, not wit."""
from __future__ import annotations

from typing import Any, Dict, List

import anthropic
import httpx
import pytest

from .conftest import MODEL_ID, REPO, server_config, start_server

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HELLO = [{"role": "user", "content": "Say hello to Paris."}]
# This SDK no longer takes sampling arguments: they go in the body as older clients send them.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def claude(live_server):
    with anthropic.Anthropic(base_url=live_server.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def _prompt(usage: Any) -> int:
    """The whole prompt: Anthropic's ``input_tokens`` leave out those read from the cache."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)


def _text(msg: Any) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def test_create(claude):
    msg = claude.messages.create(model=MODEL_ID, max_tokens=8, system="You are terse.", messages=HELLO,
                                 extra_body=GREEDY)
    assert isinstance(msg, anthropic.types.Message)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL_ID and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens") and msg.stop_sequence is None
    assert msg.usage.input_tokens > 5 and 0 < msg.usage.output_tokens <= 8


def test_system_blocks_turns_and_stop_sequences(claude):
    """A system prompt as blocks, several turns; a stop sequence taken from the
    greedy answer cuts it there and is reported as the reason."""
    messages = [{"role": "user", "content": "My name is Ada."},
                {"role": "assistant", "content": [{"type": "text", "text": "Nice to meet you, Ada."}]},
                {"role": "user", "content": [{"type": "text", "text": "Tell me a short story about a cat."}]}]
    kw: Dict[str, Any] = dict(model=MODEL_ID, max_tokens=24, messages=messages,
                              extra_body={"temperature": 0, "top_k": 1, "top_p": 1.0},
                              system=[{"type": "text", "text": "You are a storyteller."}])
    full = claude.messages.create(**kw)
    text = _text(full)
    words = text.split()
    assert len(words) > 4, text
    stop = " " + words[3]
    cut = claude.messages.create(**kw, stop_sequences=[stop, "never-generated-zzz"])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert _text(cut) == text[:text.index(stop)].rstrip()
    assert _prompt(cut.usage) == _prompt(full.usage)


def _stream(claude, **kw: Any) -> tuple:
    events: List[Any] = []
    with claude.messages.stream(**kw) as s:
        for e in s:
            if e.type in ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
                          "message_delta", "message_stop"):  # the raw events (the SDK adds "text"/"input_json")
                events.append(e)
        final = s.get_final_message()
    return events, final


def _check_order(events: List[Any]) -> List[int]:
    """Anthropic's grammar: message_start, then per block start, deltas, stop (indexes 0, 1, ...),
    then one message_delta and message_stop. Returns the block indexes."""
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], kinds
    blocks, open_index = [], None
    for e in events[1:-2]:
        if e.type == "content_block_start":
            assert open_index is None
            open_index = e.index
            blocks.append(e.index)
        elif e.type == "content_block_delta":
            assert e.index == open_index
        else:
            assert e.type == "content_block_stop" and e.index == open_index
            open_index = None
    assert open_index is None and blocks == list(range(len(blocks)))
    return blocks


def test_stream_text_matches_create(claude):
    kw: Dict[str, Any] = dict(model=MODEL_ID, max_tokens=10, messages=HELLO, extra_body=GREEDY)
    events, final = _stream(claude, **kw)
    assert _check_order(events) == [0]
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.input_tokens > 5
    assert events[1].content_block.type == "text"
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert all(e.delta.type == "text_delta" for e in events if e.type == "content_block_delta")
    assert len(deltas) > 1  # token by token
    whole = claude.messages.create(**kw)
    assert "".join(deltas) == _text(final) == _text(whole)
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[-2].usage.output_tokens == whole.usage.output_tokens == final.usage.output_tokens
    assert _prompt(events[-2].usage) == _prompt(whole.usage) == _prompt(final.usage) == start.usage.input_tokens


def test_stream_tool_use(claude):
    events, final = _stream(claude, model=MODEL_ID, max_tokens=60, tools=[WEATHER], tool_choice={"type": "any"},
                            messages=[{"role": "user", "content": "What is the weather in Paris?"}], extra_body=GREEDY)
    blocks = _check_order(events)
    starts = [e for e in events if e.type == "content_block_start"]
    tool_start = starts[-1]
    assert tool_start.content_block.type == "tool_use" and tool_start.content_block.name == "get_weather"
    assert tool_start.content_block.input == {} and tool_start.content_block.id.startswith("toolu_")
    fragments = [e.delta.partial_json for e in events
                 if e.type == "content_block_delta" and e.index == tool_start.index]
    assert len(fragments) > 1 and all(isinstance(f, str) for f in fragments)
    assert events[-2].delta.stop_reason == "tool_use" and final.stop_reason == "tool_use"
    call = final.content[blocks[-1]]
    assert call.type == "tool_use" and isinstance(call.input, dict) and isinstance(call.input.get("city"), str)


def test_tool_call_cut_short_by_max_tokens(claude):
    """A forced call cut off before its name: no text made of the server's own JSON
    answer form, and the whole message as the stream gave it."""
    kw: Dict[str, Any] = dict(model=MODEL_ID, max_tokens=8, tools=[WEATHER], tool_choice={"type": "any"},
                              messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                              extra_body=GREEDY)
    whole = claude.messages.create(**kw)
    _, final = _stream(claude, **kw)
    assert whole.stop_reason == final.stop_reason == "max_tokens"
    assert not any("tool_calls" in b.text for b in whole.content if b.type == "text"), whole.content
    assert [b.type for b in whole.content] == [b.type for b in final.content]


def test_tool_loop(claude):
    """Step 1 forces the named tool; step 2 sends the SDK's own blocks back with
    a tool_result and gets the answer as text."""
    messages: List[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = claude.messages.create(model=MODEL_ID, max_tokens=60, tools=[WEATHER], messages=messages,
                                   tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and "city" in call.input
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": [{"type": "text", "text": "Sunny, 24 C"}]}]}]
    second = claude.messages.create(model=MODEL_ID, max_tokens=16, tools=[WEATHER], messages=messages,
                                    tool_choice={"type": "none"}, extra_body=GREEDY)
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in second.content] == ["text"] and _text(second)
    alone = claude.messages.count_tokens(model=MODEL_ID, tools=[WEATHER], messages=messages[:1],
                                         tool_choice={"type": "none"})
    assert _prompt(second.usage) > alone.input_tokens  # the call and its result are in the prompt


def test_count_tokens(claude):
    counted = claude.messages.count_tokens(model=MODEL_ID, messages=HELLO, system="You are terse.")
    used = claude.messages.create(model=MODEL_ID, max_tokens=1, messages=HELLO, system="You are terse.")
    assert counted.input_tokens == _prompt(used.usage)
    with_tools = claude.messages.count_tokens(model=MODEL_ID, messages=HELLO, system="You are terse.", tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens


def test_errors_are_typed_and_in_anthropics_shape(claude, live_server):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=HELLO)
    assert e.value.status_code == 404 and e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error" and "no-such-model" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=MODEL_ID, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error" and "image" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:  # a server tool: this server runs no tools itself
        claude.messages.create(model=MODEL_ID, max_tokens=4, messages=HELLO,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "tools[0]" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:  # as Anthropic: tool_choice only with tools
        claude.messages.create(model=MODEL_ID, max_tokens=4, messages=HELLO, tool_choice={"type": "any"})
    assert e.value.body["error"]["message"] == "'tool_choice' may only be given with 'tools'."
    with httpx.Client(base_url=live_server.base_url, timeout=30) as http:
        r = http.post("/v1/messages", json={"model": MODEL_ID, "messages": HELLO})  # no max_tokens
        assert r.status_code == 400
        assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "Missing required parameter: 'max_tokens'."}}
        r = http.get("/v1/messages")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        r = http.post("/v1/messages/nothing-here", json={})
        assert r.status_code == 404 and r.json()["type"] == "error"
        r = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": HELLO})
        assert r.status_code == 404 and "param" in r.json()["error"]  # the OpenAI routes keep OpenAI's shape


KEY = "anthropic-test-key"
ADMIN = "anthropic-test-admin-key"


@pytest.fixture(scope="module")
def keyed(model_path, tmp_path_factory):
    """A server with an API key, a request rate limit and a token quota."""
    cfg = server_config(model_path)
    cfg["security"] = {"api_keys": [KEY], "admin_api_keys": [ADMIN],
                       "rate_limiting": {"enabled": True, "requests_per_minute": 1000,
                                                            "tokens_per_minute": 300}}
    server = start_server(cfg, tmp_path_factory.mktemp("anthropic-keyed"))
    yield server
    assert server.stop() == 0, server.log()


def test_keys_rate_limits_and_quota_apply(keyed):
    with anthropic.Anthropic(base_url=keyed.base_url, api_key=KEY, max_retries=0, timeout=60) as c:
        raw = c.messages.with_raw_response.create(model=MODEL_ID, max_tokens=4, messages=HELLO)  # x-api-key
        assert raw.parse().content[0].type == "text"
        remaining = int(raw.headers["RateLimit-Remaining"])
        assert c.messages.count_tokens(model=MODEL_ID, messages=HELLO).input_tokens > 0
        with pytest.raises(anthropic.BadRequestError) as e:  # more than the quota could ever give
            c.messages.create(model=MODEL_ID, max_tokens=400, messages=HELLO)
        assert "quota" in e.value.body["error"]["message"]
    with anthropic.Anthropic(base_url=keyed.base_url, auth_token=KEY, api_key=None, max_retries=0) as c:
        raw = c.messages.with_raw_response.count_tokens(model=MODEL_ID, messages=HELLO)  # Authorization: Bearer
        assert int(raw.headers["RateLimit-Remaining"]) < remaining  # one limit across the calls
        remaining = int(raw.headers["RateLimit-Remaining"])
    r = httpx.get(keyed.base_url + "/api/tags", headers={"Authorization": f"Bearer {KEY}"})  # Ollama's API
    assert r.status_code == 200 and int(r.headers["RateLimit-Remaining"]) < remaining  # the same budget
    r = httpx.post(keyed.base_url + "/api/chat", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": MODEL_ID, "messages": HELLO, "options": {"num_predict": 400}})
    assert r.status_code == 400 and "quota" in r.json()["error"]  # the token quota, in Ollama's shape
    with anthropic.Anthropic(base_url=keyed.base_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as e:
            c.messages.create(model=MODEL_ID, max_tokens=4, messages=HELLO)
        assert e.value.body["error"]["type"] == "authentication_error"
    r = httpx.post(keyed.base_url + "/v1/messages", json={"model": MODEL_ID, "max_tokens": 4, "messages": HELLO})
    assert r.status_code == 401 and r.json()["type"] == "error"
    r = httpx.post(keyed.base_url + "/v1/chat/completions", headers={"x-api-key": KEY},
                   json={"model": MODEL_ID, "max_tokens": 2, "messages": HELLO})  # x-api-key on every route
    assert r.status_code == 200, r.text


def test_failure_mid_stream_is_an_error_event(keyed):
    """The model removed while it streams: the stream ends with Anthropic's
    error event, which the SDK raises. (Removes the keyed server's model.)"""
    with anthropic.Anthropic(base_url=keyed.base_url, api_key=KEY, max_retries=0, timeout=60) as c:
        with pytest.raises(anthropic.APIStatusError) as e:
            with c.messages.stream(model=MODEL_ID, max_tokens=150, extra_body=GREEDY,  # within the quota
                                   messages=[{"role": "user", "content": "Write a long story about a dragon."}]) as s:
                deleted = False
                for event in s:
                    if event.type == "content_block_delta" and not deleted:
                        r = httpx.delete(f"{keyed.base_url}/engines/{MODEL_ID}", headers={"x-api-key": ADMIN})
                        assert r.status_code == 200, r.text
                        deleted = True
    assert deleted
    assert e.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": e.value.body["error"][
        "message"]}} and "unloaded" in e.value.body["error"]["message"]


# A template whose answer opens with a think block (Qwen3.5's: same ChatML tokens as the demo model's).
THINKING_TEMPLATE = REPO / "vendor/llama.cpp/models/templates/Qwen3.5-4B.jinja"


@pytest.fixture(scope="module")
def thinking(model_path, tmp_path_factory):
    cfg = server_config(model_path)
    cfg["models"][0]["load_params"].update(chat_template=THINKING_TEMPLATE.read_text(), n_parallel=2, n_ctx=1024)
    server = start_server(cfg, tmp_path_factory.mktemp("anthropic-thinking"))
    with anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c
    assert server.stop() == 0, server.log()


def test_thinking_blocks(thinking):
    """With ``thinking`` enabled the think block comes back as a thinking block
    (streamed as thinking_delta, closed by a signature_delta); without it the
    template is asked not to think, as Anthropic's models do not unless asked."""
    kw: Dict[str, Any] = dict(model=MODEL_ID, max_tokens=12, messages=HELLO, extra_body=GREEDY)
    on = thinking.messages.create(**kw, thinking={"type": "enabled", "budget_tokens": 1024})
    assert on.content[0].type == "thinking" and on.content[0].thinking.strip()
    events, final = _stream(thinking, **kw, thinking={"type": "enabled", "budget_tokens": 1024})
    _check_order(events)
    assert events[1].content_block.type == "thinking"
    deltas = [e.delta for e in events if e.type == "content_block_delta" and e.index == 0]
    assert [d.type for d in deltas[:-1]] == ["thinking_delta"] * (len(deltas) - 1)
    assert deltas[-1].type == "signature_delta"
    assert "".join(d.thinking for d in deltas[:-1]) == on.content[0].thinking == final.content[0].thinking
    off = thinking.messages.create(**kw)
    assert [b.type for b in off.content] == ["text"] and off.content[0].text
    assert _prompt(off.usage) > _prompt(on.usage)  # the template closed an empty think block
    history = [*HELLO, {"role": "assistant", "content": on.content}, {"role": "user", "content": "And again."}]
    again = thinking.messages.create(**{**kw, "messages": history})  # thinking blocks sent back are left out
    assert again.content

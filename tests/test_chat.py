"""Chat templates, structured output and tool calls through Engine.chat."""
from __future__ import annotations

import json

import jsonschema
import pytest

from kolosal.errors import InvalidParameterError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a time zone",
                 "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}},
}


def test_template_renders_the_models_chat_format(engine):
    cp = engine.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert cp.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert cp.prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_chat_prompt_tokens_include_the_template(engine):
    r = engine.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    rendered = engine.apply_chat_template([{"role": "user", "content": "Hi"}]).prompt
    assert r.usage["prompt_tokens"] == len(engine.tokenize(rendered))
    assert r.message["role"] == "assistant"
    assert r.message["content"] == r.text


def test_streaming_chat_yields_the_same_text(engine):
    msgs = [{"role": "user", "content": "Name three colours."}]
    full = engine.chat(msgs, max_tokens=24, temperature=0)
    g = engine.chat(msgs, max_tokens=24, temperature=0, stream=True)
    assert "".join(g) == full.text
    assert g.message == full.message


def test_json_schema_output_validates(engine):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = engine.chat([{"role": "user", "content": "Describe a person as JSON."}], json_schema=schema,
                    max_tokens=80, temperature=0)
    data = json.loads(r.message["content"])
    jsonschema.validate(data, schema)


def test_tool_call_required_is_parsed(engine):
    r = engine.chat([{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
                    tool_choice="required", max_tokens=80, temperature=0)
    assert r.finish_reason == "tool_calls"
    assert r.message["content"] is None
    (call,) = r.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    jsonschema.validate(args, WEATHER["function"]["parameters"])


def test_named_tool_choice_forces_that_tool(engine):
    r = engine.chat([{"role": "user", "content": "What time is it in Tokyo?"}], tools=[WEATHER, TIME],
                    tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=80, temperature=0)
    assert [c["function"]["name"] for c in r.tool_calls] == ["get_time"]


def test_tool_choice_none_answers_in_text(engine):
    r = engine.chat([{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
                    tool_choice="none", max_tokens=16, temperature=0)
    assert r.tool_calls == []
    assert r.message["content"]
    assert r.finish_reason in ("stop", "length")


def test_tool_results_can_follow_a_call(engine):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = engine.chat(msgs, tools=[WEATHER], max_tokens=60, temperature=0)
    assert r.finish_reason in ("stop", "length", "tool_calls")
    assert r.tool_calls or r.message["content"]


def test_unknown_named_tool_is_rejected(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.chat([{"role": "user", "content": "x"}], tools=[WEATHER],
                    tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.param == "tool_choice"


def test_malformed_messages_are_rejected(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.chat([{"content": "no role"}], max_tokens=4)
    assert e.value.param == "messages"
    with pytest.raises(InvalidParameterError) as e:
        engine.chat([], max_tokens=4)
    assert e.value.param == "messages"


def test_gbnf_grammar_in_chat(engine):
    for seed in range(3):
        r = engine.chat([{"role": "user", "content": "Pick a colour."}], grammar='root ::= "red" | "blue"',
                        max_tokens=5, temperature=1.0, seed=seed)
        assert r.message["content"] in ("red", "blue")

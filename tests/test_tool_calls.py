"""The JSON tool-call fallback for templates without tool support."""
from __future__ import annotations

import json

import jsonschema

from kolosal import tool_calls

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}},
    {"type": "function", "function": {"name": "b", "description": "second"}},
]


def test_schema_accepts_calls_and_rejects_unknown_tools():
    schema = tool_calls.answer_schema(TOOLS, required=True, parallel=False)
    jsonschema.validate({"tool_calls": [{"name": "a", "arguments": {"x": 1}}]}, schema)
    for bad in ({"tool_calls": [{"name": "zzz", "arguments": {}}]}, {"content": "hi"},
                {"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]}):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_auto_schema_also_accepts_a_text_answer():
    schema = tool_calls.answer_schema(TOOLS, required=False, parallel=True)
    jsonschema.validate({"content": "plain answer"}, schema)
    jsonschema.validate({"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]}, schema)


def test_parse_answer():
    content, calls = tool_calls.parse_answer('{"tool_calls": [{"name": "a", "arguments": {"x": 2}}]}')
    assert content is None
    assert calls[0]["function"] == {"name": "a", "arguments": json.dumps({"x": 2})}
    assert tool_calls.parse_answer('{"content": "hello"}') == ("hello", [])
    assert tool_calls.parse_answer("not json") == ("not json", [])


def test_history_is_rendered_as_plain_messages():
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "a", "arguments": '{"x": 3}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"},
    ]
    out = tool_calls.render_messages(msgs, TOOLS, required=False)
    assert out[0]["role"] == "system" and "- a:" in out[0]["content"] and "- b: second" in out[0]["content"]
    assert json.loads(out[2]["content"]) == {"tool_calls": [{"name": "a", "arguments": {"x": 3}}]}
    assert out[3] == {"role": "user", "content": "Result of 1: 42"}

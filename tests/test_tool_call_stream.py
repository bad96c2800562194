"""Streamed tool calls: the constrained JSON answer (``AnswerStream``) and a
template's own tool-call format (the native parser in partial mode) turned
into OpenAI's streaming deltas, whatever pieces the text arrives in."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kolosal
from kolosal.tool_calls import AnswerStream, parse_answer

ANSWERS = [
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "n": 3, "x": [1, {"a": "b\\"}"}]}}, '
    '{"name": "f2", "arguments": {}}]}',
    '```json\n{"tool_calls": [{"name": "get_weather", "arguments": {\n  "city": "New York"\n}}]}```',
    '\n{"tool_calls": [\n{"arguments": {"q": -1.5e3, "ok": true, "none": null}, "name": "late"}\n]}\n\n',
    '{"content": "Hello \\u00e9\\n \\"world\\" \\ud83d\\ude00 \\\\ ok"}',
    '{ "content" : "" }',
]


def replay(text: str, cuts: List[int]) -> Tuple[str, Dict[int, Dict[str, Any]], List[Dict[str, Any]]]:
    stream, deltas, start = AnswerStream(), [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        deltas += stream.feed(text[start:cut])
        start = cut
    content = "".join(d.get("content", "") for d in deltas)
    calls: Dict[int, Dict[str, Any]] = {}
    for d in deltas:
        for tc in d.get("tool_calls", []):
            if "id" in tc:
                assert tc["index"] not in calls and tc["type"] == "function"
                assert tc["function"]["arguments"] == "" and tc["id"].startswith("call_")
                calls[tc["index"]] = {"name": tc["function"]["name"], "arguments": ""}
            else:
                assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
                calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    return content, calls, deltas


@pytest.mark.parametrize("text", ANSWERS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_gives_what_the_finished_answer_holds(text, data):
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))
    content, calls, _ = replay(text, cuts)
    expected_content, expected_calls = parse_answer(text.strip().strip("`").removeprefix("json"))
    assert content == (expected_content or "")
    # The same arguments text, as the model wrote it, streamed or not.
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in expected_calls]


def test_name_first_then_arguments_fragment_by_fragment():
    text = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    _, calls, deltas = replay(text, list(range(len(text))))  # one character at a time
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert len(deltas) > 10  # the arguments came as they were "generated"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_content_never_splits_an_escape():
    text = '{"content": "a\\u00e9\\ud83d\\ude00\\n"}'
    content, _, deltas = replay(text, list(range(len(text))))
    assert content == "a\u00e9\U0001F600\n"
    assert all("\ud800" > d["content"][-1] or d["content"][-1] > "\udfff" for d in deltas)


def test_truncated_call_streams_as_far_as_it_went():
    stream = AnswerStream()
    deltas = stream.feed('{"tool_calls": [{"name": "f", "arguments": {"a": "b')
    assert [d["tool_calls"][0]["function"].get("name") for d in deltas] == ["f", None]
    assert deltas[1]["tool_calls"][0]["function"]["arguments"] == '{"a": "b'
    assert not stream.broken


@pytest.mark.parametrize("text", ["Sorry, I cannot.", '"just a string"', "[1, 2]", '{"content" "x"}'])
def test_text_that_is_not_the_json_answer_is_reported(text):
    stream = AnswerStream()
    assert stream.feed(text) == [] and stream.broken


# -- a template's own tool-call format, read by the native parser as it grows --

QWEN_TEMPLATE = Path(__file__).resolve().parents[1] / "vendor/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def tool_template_engine(model_path):
    """The demo model with a chat template that has its own tool-call format (<tool_call> tags)."""
    with kolosal.Engine(model_path, n_ctx=512, n_parallel=1, n_threads=1,
                        chat_template=QWEN_TEMPLATE.read_text()) as e:
        yield e


def test_text_before_a_native_tool_call_streams_first(tool_template_engine):
    from kolosal.server.serving.chat import StreamDeltas, plan_chat
    from kolosal.server.protocol.openai.chat import ChatCompletionRequest

    req = ChatCompletionRequest.model_validate({"model": "m", "stream": True, "tools": [WEATHER], "max_tokens": 4,
                                                "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    plan = plan_chat(tool_template_engine, req)
    assert not plan.rendered.generic_tools and plan.buffers_output
    gen = plan.start(0)
    gen.wait()
    # What a model that explains itself before calling writes, token by token:
    answer = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    deltas = StreamDeltas(plan, gen)
    out = []
    for ch in answer:
        out.append(deltas.feed(ch))
    flat = [d for ds in out for d in ds]
    first_call = next(i for i, d in enumerate(flat) if "tool_calls" in d)
    assert "".join(d.get("content", "") for d in flat[:first_call]).strip() == "Let me check."
    # the text was sent as it was written, long before the call's tag arrived
    said = len("Let me check.")
    assert "".join(d.get("content", "") for ds in out[:said] for d in ds) == "Let me check."
    head = flat[first_call]["tool_calls"][0]
    assert head["index"] == 0 and head["id"] and head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in flat[first_call + 1:] if "tool_calls" in d]
    assert len(fragments) > 3 and json.loads("".join(fragments)) == {"city": "Paris"}
    assert all("content" not in d for d in flat[first_call:])


def test_tool_history_stays_in_the_prompt_when_no_tools_are_offered(engine):
    """A template without tool support, tool_choice "none": the earlier call and its result are text."""
    from kolosal.server.serving.chat import plan_chat
    from kolosal.server.protocol.openai.chat import ChatCompletionRequest

    assert not engine.supports_tool_calls
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    for extra in ({"tools": [WEATHER], "tool_choice": "none"}, {}):
        req = ChatCompletionRequest.model_validate({"model": "m", "messages": messages, "max_tokens": 4, **extra})
        prompt = plan_chat(engine, req).rendered.prompt
        assert '"name": "get_weather"' in prompt and '"city": "Paris"' in prompt
        assert "Result of get_weather: sunny" in prompt

"""POST /v1/responses through the openai SDK (``client.responses.create``,
``.parse`` and ``.stream``) against the live server: text and instructions,
multi-turn input items, function tools with function_call items and their
outputs, text.format json_schema, the typed streaming events, and what is
refused (previous_response_id: nothing is stored)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import openai
import pytest
from pydantic import BaseModel

from .conftest import MODEL_ID

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_text_input_and_instructions(oai):
    r = oai.responses.create(model=MODEL_ID, instructions="Answer in one short sentence.",
                             input="What color is the sky?", max_output_tokens=12, temperature=0)
    assert r.object == "response" and r.id and r.status in ("completed", "incomplete")
    assert r.instructions == "Answer in one short sentence."
    (item,) = r.output
    assert item.type == "message" and item.role == "assistant"
    assert item.content[0].type == "output_text" and r.output_text == item.content[0].text
    assert r.output_text
    assert 0 < r.usage.output_tokens <= 12 and r.usage.input_tokens > 5
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"


def test_multi_turn_input_items_with_earlier_output(oai):
    first = oai.responses.create(model=MODEL_ID, input=[{"role": "user", "content": "My name is Ada."}],
                                 max_output_tokens=8, temperature=0)
    history: List[Any] = [{"role": "user", "content": "My name is Ada."}]
    history += [item.model_dump() for item in first.output]  # the output items, sent back as input
    history.append({"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "What is my name?"}]})
    r = oai.responses.create(model=MODEL_ID, input=history, max_output_tokens=8, temperature=0)
    assert r.output and r.output[0].type == "message"
    assert r.usage.input_tokens > first.usage.input_tokens


def test_function_call_then_function_call_output(oai):
    r = oai.responses.create(model=MODEL_ID, input="What is the weather in Paris?", tools=[WEATHER],
                             tool_choice="required", max_output_tokens=64, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and r.status == "completed" and r.parallel_tool_calls is False
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id
    assert isinstance(json.loads(call.arguments)["city"], str)
    follow: List[Any] = [{"role": "user", "content": "What is the weather in Paris?"}, *r.output,
                         {"type": "function_call_output", "call_id": call.call_id,
                          "output": json.dumps({"sky": "sunny", "celsius": 21})}]
    done = oai.responses.create(model=MODEL_ID, input=follow, tools=[WEATHER], tool_choice="none",
                                max_output_tokens=16)
    assert done.output and all(o.type == "message" for o in done.output)
    assert isinstance(done.output_text, str)


def test_named_tool_choice(oai):
    r = oai.responses.create(model=MODEL_ID, input="Weather in Rome, please.", max_output_tokens=64,
                             tools=[WEATHER, {**WEATHER, "name": "get_time", "description": "Local time"}],
                             tool_choice={"type": "function", "name": "get_time"})
    assert [o.name for o in r.output if o.type == "function_call"] == ["get_time"]


class Country(BaseModel):
    name: str
    capital: str


def test_text_format_json_schema(oai):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "capital": {"type": "string"}},
              "required": ["name", "capital"], "additionalProperties": False}
    r = oai.responses.create(model=MODEL_ID, input="Describe France.", max_output_tokens=60, temperature=0,
                             text={"format": {"type": "json_schema", "name": "country", "schema": schema,
                                              "strict": True}})
    assert r.text.format.type == "json_schema"
    assert set(json.loads(r.output_text)) == {"name", "capital"}
    parsed = oai.responses.parse(model=MODEL_ID, input="Describe Italy.", text_format=Country,
                                 max_output_tokens=60, temperature=0)
    assert isinstance(parsed.output_parsed, Country)


def _kinds(events: List[Any]) -> List[str]:
    out: List[str] = []
    for e in events:
        if not out or out[-1] != e.type:  # runs of deltas collapse to one entry
            out.append(e.type)
    return out


def test_stream_text_events(oai):
    with oai.responses.stream(model=MODEL_ID, input="Say hello.", instructions="Be brief.",
                              max_output_tokens=10, temperature=0) as stream:
        events = list(stream)
    # Cut by max_output_tokens, the stream ends with response.incomplete (as OpenAI's does), for which the
    # SDK's get_final_response() has no answer: the last event carries the response either way.
    final = events[-1].response
    kinds = _kinds(events)
    assert kinds[:6] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta", "response.output_text.done"]
    assert kinds[6:] == ["response.content_part.done", "response.output_item.done",
                         "response.incomplete" if final.status == "incomplete" else "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == final.output_text
    assert 1 <= final.usage.output_tokens <= 10


def test_stream_function_call_events(oai):
    with oai.responses.stream(model=MODEL_ID, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required",
                              max_output_tokens=64, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = _kinds(events)
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather" and added.item.arguments == ""
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert len(fragments) >= 3 and "".join(fragments) == done.arguments
    assert json.loads(done.arguments)["city"]
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == done.arguments


def test_stored_responses_are_not_available(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.responses.create(model=MODEL_ID, input="Continue.", previous_response_id="resp_123")
    assert ei.value.body["param"] == "previous_response_id"
    assert ei.value.body["code"] == "unsupported_parameter"
    assert "stores no responses" in ei.value.body["message"]
    # store itself is accepted, and the response says it was not stored
    r = oai.responses.create(model=MODEL_ID, input="Hi", store=True, metadata={"k": "v"}, max_output_tokens=2)
    assert r.store is False and r.metadata == {"k": "v"}


@pytest.mark.parametrize("body, param", [
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]}, "input[0].call_id"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
    ({"input": []}, None),
])
def test_bad_input_is_400_naming_the_param(http, body: Dict[str, Any], param):
    r = http.post("/v1/responses", json={"model": MODEL_ID, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err


def test_limits_name_the_responses_parameters(http):
    r = http.post("/v1/responses", json={"model": MODEL_ID, "input": "word " * 5000, "max_output_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "input"
    r = http.post("/v1/responses", json={"model": MODEL_ID, "input": "Hi", "max_output_tokens": 10 ** 6})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] in ("input", "max_output_tokens")


def test_image_input_is_400_naming_the_part(http):
    r = http.post("/v1/responses", json={"model": MODEL_ID, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": "data:,"}]}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_content"
    assert r.json()["error"]["param"] == "input[0].content[1]"


def test_async_client_stream(live_server):
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60) as c:
            async with c.responses.stream(model=MODEL_ID, input="Weather in Bern?", tools=[WEATHER],
                                          tool_choice="required", max_output_tokens=64, temperature=0) as stream:
                kinds = [e.type async for e in stream]
                final = await stream.get_final_response()
            assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
            assert "response.function_call_arguments.delta" in kinds
            assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments)["city"]

    asyncio.run(main())


def test_logprobs_when_included(oai):
    kw = dict(model=MODEL_ID, input="Say hi.", max_output_tokens=6, temperature=0, top_logprobs=2,
              include=["message.output_text.logprobs"])
    r = oai.responses.create(**kw)
    part = r.output[0].content[0]
    assert len(part.logprobs) == r.usage.output_tokens
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 2 for lp in part.logprobs)
    with oai.responses.stream(**kw) as stream:
        events = list(stream)
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    done = next(e for e in events if e.type == "response.output_text.done")
    assert [lp.token for lp in streamed] == [lp.token for lp in done.logprobs] == [lp.token for lp in part.logprobs]
    plain = oai.responses.create(model=MODEL_ID, input="Say hi.", max_output_tokens=2, temperature=0)
    assert plain.output[0].content[0].logprobs == []


def _final(oai, **kw: Any) -> Any:
    """The streamed answer's last event's response (the SDK's get_final_response() has none for
    response.incomplete)."""
    with oai.responses.stream(**kw) as stream:
        events = list(stream)
    return events[-1].response


def _items(r: Any) -> List[Any]:
    return [(o.type, o.status, getattr(o, "name", None), getattr(o, "arguments", None),
             o.content[0].text if o.type == "message" else None) for o in r.output]


@pytest.mark.parametrize("limit", [6, 28])
def test_tool_call_cut_short_by_max_output_tokens(oai, limit):
    """A forced call cut off by max_output_tokens (before its name, or in its arguments):
    status incomplete for the max_output_tokens reason, no text made of the server's own
    JSON answer form, the call as far as it went (an incomplete function_call item), and
    the same output streamed or not (as chat completions, Anthropic and Ollama answer)."""
    kw: Dict[str, Any] = dict(model=MODEL_ID, input="What is the weather in Paris?", tools=[WEATHER],
                              tool_choice={"type": "function", "name": "get_weather"},
                              max_output_tokens=limit, temperature=0)
    whole = oai.responses.create(**kw)
    final = _final(oai, **kw)
    for r in (whole, final):
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
        assert r.usage.output_tokens == limit
        assert "tool_calls" not in r.output_text and "{" not in r.output_text, r.output
        assert all(o.status == "incomplete" for o in r.output), r.output
    # Cut before the function's name there is nothing to show; later, the one call begun.
    assert [o.type for o in whole.output] == ([] if limit == 6 else ["function_call"]), whole.output
    assert _items(whole) == _items(final)
    chat = oai.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=limit, temperature=0)
    assert chat.choices[0].finish_reason == "length"
    calls = [o for o in whole.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in chat.choices[0].message.tool_calls or []]
    assert whole.output_text == (chat.choices[0].message.content or "")
    if limit > 6:  # far enough for the name: the call begun, its arguments as generated
        (call,) = calls
        assert call.name == "get_weather" and call.call_id and call.arguments.startswith("{")
        with pytest.raises(ValueError):
            json.loads(call.arguments)


def test_max_tool_calls_keeps_the_first_calls_whole(oai):
    """The model makes two parallel calls; max_tool_calls=1 keeps the first, as
    ``completed``, streamed or not. Cut by max_output_tokens inside the second
    call, the kept first call is still whole (the cut call is the one left out),
    where without the limit the second call is the ``incomplete`` last item."""
    kw: Dict[str, Any] = dict(model=MODEL_ID, input="What is the weather in Paris and in London?",
                              tools=[WEATHER], tool_choice="required", parallel_tool_calls=True, temperature=0)
    both = oai.responses.create(**kw, max_output_tokens=120)
    assert both.status == "completed"
    assert [(o.type, o.status) for o in both.output] == [("function_call", "completed")] * 2, both.output
    first = both.output[0]
    for r in (oai.responses.create(**kw, max_output_tokens=120, max_tool_calls=1),
              _final(oai, **kw, max_output_tokens=120, max_tool_calls=1)):
        assert r.status == "completed" and r.max_tool_calls == 1
        assert _items(r) == [("function_call", "completed", first.name, first.arguments, None)], r.output

    # The largest token limit that cuts the answer inside the second call.
    chat_kw: Dict[str, Any] = dict(
        model=MODEL_ID, messages=[{"role": "user", "content": kw["input"]}], temperature=0,
        tools=[{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        tool_choice="required", parallel_tool_calls=True)
    cut = next(n for n in range(both.usage.output_tokens - 1, 0, -1)
               if len(oai.chat.completions.create(**chat_kw, max_tokens=n).choices[0].message.tool_calls or []) == 2)
    unlimited = oai.responses.create(**kw, max_output_tokens=cut)
    assert unlimited.status == "incomplete" and unlimited.incomplete_details.reason == "max_output_tokens"
    assert [o.status for o in unlimited.output] == ["completed", "incomplete"], unlimited.output
    for r in (oai.responses.create(**kw, max_output_tokens=cut, max_tool_calls=1),
              _final(oai, **kw, max_output_tokens=cut, max_tool_calls=1)):
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
        assert _items(r) == [("function_call", "completed", first.name, first.arguments, None)], r.output

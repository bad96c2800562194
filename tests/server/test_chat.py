"""POST /v1/chat/completions through the official openai SDK."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from .conftest import MODEL_ID, chat_body

MSG = [{"role": "user", "content": "Name three colors."}]


def test_basic_completion_shape_and_usage(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=8, seed=1)
    assert r.object == "chat.completion" and r.model == MODEL_ID
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_cached_tokens_reported_on_repeat(oai):
    oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=2)
    again = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_max_tokens_gives_length(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=3, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_max_completion_tokens_preferred_over_max_tokens(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=20, max_completion_tokens=2,
                                    extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 2


def test_seed_and_zero_temperature_are_deterministic(oai):
    a = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=12, temperature=0.8, seed=123)
    b = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=12, temperature=0.8, seed=123)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_n_choices(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, n=3, max_tokens=6, temperature=1.0, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert 3 <= r.usage.completion_tokens <= 18  # summed over the choices


def test_stop_sequence(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
                                    max_tokens=32, temperature=0, stop=[","])
    assert "," not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_logprobs_openai_shape(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=4, logprobs=True, top_logprobs=3,
                                    extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for item in content:
        assert item.logprob <= 0 and isinstance(item.token, str)
        assert item.bytes == list(item.token.encode())
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
    assert "".join(i.token for i in content) == r.choices[0].message.content


def test_response_format_json_object(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                                    max_tokens=32, response_format={"type": "json_object"})
    text = r.choices[0].message.content
    assert text.lstrip().startswith("{")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_response_format_json_schema(oai):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    r = oai.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Is the sky blue?"}], max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}})
    assert json.loads(r.choices[0].message.content)["answer"] in ("yes", "no")


def test_grammar_extension(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=5,
                                    extra_body={"grammar": 'root ::= "red" | "blue"'})
    assert r.choices[0].message.content in ("red", "blue")


def test_logit_bias_object_with_string_keys(oai, http):
    tok = http.post("/tokenize", json={"content": " banana"}).json()["tokens"][-1]
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=3, logit_bias={str(tok): 100},
                                    extra_body={"ignore_eos": True})
    assert r.choices[0].message.content.count("banana") == 3


def test_extension_sampling_fields_accepted(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=4, presence_penalty=0.5,
                                    frequency_penalty=0.5, top_p=0.9, user="u-1",
                                    extra_body={"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1})
    assert r.choices[0].message.content


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}},
                                                                "required": ["city"]}}}


def test_required_tool_call_is_returned(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                    tools=[WEATHER_TOOL], tool_choice="required", max_tokens=64, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_streamed_tool_call(oai):
    stream = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Rome?"}],
                                         tools=[WEATHER_TOOL], tool_choice={"type": "function",
                                                                            "function": {"name": "get_weather"}},
                                         max_tokens=64, temperature=0, stream=True)
    names, args, reasons = {}, {}, []
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:  # the name first, then argument fragments
                if tc.function.name:
                    names[tc.index] = tc.function.name
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert reasons == ["tool_calls"]
    assert names == {0: "get_weather"}
    assert json.loads(args[0])


def test_tool_choice_auto_gives_a_valid_reply(oai):
    r = oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                    tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=64, temperature=0)
    choice = r.choices[0]
    # The model may call the tool or answer; either way the reply is well-formed.
    if choice.finish_reason == "tool_calls":
        assert choice.message.tool_calls[0].function.name == "get_weather"
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


def test_tool_history_messages_render(oai):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    r = oai.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=8)
    assert r.choices[0].message.content


def test_text_content_parts(oai):
    r = oai.chat.completions.create(model=MODEL_ID, max_tokens=4, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}])
    assert r.choices[0].message.content


def test_image_part_is_400_naming_the_part(oai):
    with pytest.raises(openai.APIStatusError) as ei:
        oai.chat.completions.create(model=MODEL_ID, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert ei.value.status_code == 400
    assert ei.value.body["code"] == "unsupported_content" and ei.value.body["param"] == "messages[0].content[0]"


def test_without_v1_prefix(http):
    r = http.post("/chat/completions", json=chat_body())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_plain_httpx_client_and_form_content_type_refused(live_server):
    r = httpx.post(live_server.v1 + "/chat/completions", content=json.dumps(chat_body()),
                   headers={"Content-Type": "application/json; charset=utf-8"}, timeout=60)
    assert r.status_code == 200
    # what curl -d and an HTML form send: no CORS preflight, so a web page could send it
    r = httpx.post(live_server.v1 + "/chat/completions", content=json.dumps(chat_body()),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=60)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"

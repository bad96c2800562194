"""kolosal/server/protocol: answers are built as response models, so what is
sent is what /openapi.json states, streamed chunks included."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, get_args

import jsonschema
import pytest
from pydantic import RootModel, ValidationError

from kolosal.server.protocol.base import Reply
from kolosal.server.protocol.openai.chat import ChatCompletionChunk, ChatCompletionResponse
from kolosal.server.protocol.openai.responses import OutputTextDeltaEvent

from .conftest import MODEL_ID, chat_body

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class Sample(Reply):
    kept: Optional[int]  # always sent, may be null
    usage: Optional[int] = None  # left out unless given
    ratio: float = 0.0


def test_unset_none_is_left_out_and_given_none_is_null():
    assert Sample(kept=None).wire() == {"kept": None, "ratio": 0.0}
    assert Sample(kept=1, usage=None).wire() == {"kept": 1, "usage": None, "ratio": 0.0}
    assert Sample(kept=1, usage=3).wire() == {"kept": 1, "usage": 3, "ratio": 0.0}


def test_a_field_the_model_does_not_state_is_an_error():
    with pytest.raises(ValidationError):
        Sample(kept=1, surprise=True)  # type: ignore[call-arg]


def test_floats_stay_floats():
    # A log-probability of -inf is sent as JSON's -Infinity, as before; pydantic's JSON mode would send null.
    assert json.dumps(Sample(kept=None, ratio=-math.inf).wire()) == '{"kept": null, "ratio": -Infinity}'


def test_chunk_shape_of_an_assistant_delta():
    chunk = ChatCompletionChunk.model_validate({
        "id": "c", "created": 1, "model": "m", "system_fingerprint": "f", "usage": None,
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]},
                     "logprobs": None, "finish_reason": None}]})
    assert chunk.wire() == {
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "f",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]},
                     "logprobs": None, "finish_reason": None}],
        "usage": None}


def _members(model: Any) -> List[Any]:
    """``model``, or the models a root model (a union of events) may hold."""
    if issubclass(model, RootModel):
        root = model.model_fields["root"].annotation
        return [m for a in get_args(root) for m in (get_args(a) or [a]) if isinstance(m, type)]
    return [model]


def test_every_declared_answer_is_a_reply_model(app):
    declared = [getattr(view, "_api_spec", None) for view in app.view_functions.values()]
    models = [m for spec in declared if spec is not None for m in (spec.response, spec.streams) if m is not None]
    assert ChatCompletionResponse in models and ChatCompletionChunk in models
    members = [m for model in models for m in _members(model)]
    assert OutputTextDeltaEvent in members
    assert all(issubclass(m, Reply) for m in members), [m for m in members if not issubclass(m, Reply)]


def _schema(spec: Dict[str, Any], path: str, kind: str) -> Dict[str, Any]:
    """The JSON (``application/json``) or stream event (``text/event-stream``, its data) schema of ``path``."""
    content = spec["paths"][path]["post"]["responses"]["200"]["content"]
    if kind == "application/json":
        schema = content[kind]["schema"]
    else:
        schema = content[kind]["schema"]["properties"]["data"]["anyOf"][1]["contentSchema"]
    return {**schema, "components": spec["components"]}


def _events(data: bytes) -> List[Dict[str, Any]]:
    return [json.loads(line[6:]) for line in data.decode().splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", chat_body(stream=True, logprobs=True, top_logprobs=2, n=2,
                                       stream_options={"include_usage": True})),
    ("/v1/chat/completions", chat_body("Weather in Paris?", stream=True, tools=[WEATHER], tool_choice="required",
                                       max_tokens=40, logprobs=True)),
    ("/v1/completions", {"model": MODEL_ID, "prompt": ["Once", "Twice"], "max_tokens": 4, "stream": True,
                         "echo": True, "logprobs": 2, "stream_options": {"include_usage": True}}),
    ("/v1/responses", {"model": MODEL_ID, "input": "Say hi", "max_output_tokens": 6, "stream": True,
                       "include": ["message.output_text.logprobs"], "top_logprobs": 1}),
    ("/v1/responses", {"model": MODEL_ID, "input": "Weather in Paris?", "stream": True, "tool_choice": "required",
                       "max_output_tokens": 40, "tools": [{"type": "function", **WEATHER["function"]}]}),
], ids=["chat", "chat-tools", "completions", "responses", "responses-tools"])
def test_streamed_events_match_the_document(client, path, body):
    spec = client.get("/openapi.json").json
    schema = _schema(spec, path, "text/event-stream")
    events = _events(client.post(path, json=body).data)
    assert len(events) > 3
    for e in events:
        assert "error" not in e, e
        jsonschema.validate(e, schema)
    whole = client.post(path, json={**body, "stream": False})
    assert whole.status_code == 200, whole.json
    jsonschema.validate(whole.json, _schema(spec, path, "application/json"))

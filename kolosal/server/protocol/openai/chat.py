"""POST /v1/chat/completions request and response."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..base import Lenient, Reply, Strict, absent_or, documented, null_only, refused
from .common import ChoiceLogprobs, FinishReason, SamplingFields, Timings, Usage


class TextPart(Strict):
    type: Literal["text"]
    text: str


class RefusalPart(Strict):
    """An earlier assistant refusal, replayed as text."""

    type: Literal["refusal"]
    refusal: str


class OtherPart(Lenient):
    """image_url / input_audio / file parts: understood, but not supported (400 unsupported_content)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=refused)

    type: Literal["image_url", "input_audio", "file"]


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCall(Strict):
    id: Optional[str] = None
    type: Optional[Literal["function"]] = "function"
    function: FunctionCall


# What the validators below check, for /openapi.json
_MESSAGE_RULES: Dict[str, Any] = {
    "anyOf": [{"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
              {"required": ["refusal"], "properties": {"refusal": {"type": "string"}}},
              {"required": ["role", "tool_calls"], "properties": {"role": {"const": "assistant"},
                                                                 "tool_calls": {"type": "array", "minItems": 1}}},
              {"required": ["role", "function_call"], "properties": {"role": {"const": "assistant"},
                                                                    "function_call": {"type": "object"}}}],
    "not": {"required": ["function_call"], "properties": {"role": {"not": {"const": "assistant"}},
                                                          "function_call": {"type": "object"}}},
}


class Message(Strict):
    """One message of any role. The fields the openai SDK's ``model_dump()``
    writes for an assistant message (``refusal``, ``annotations``, ``audio``,
    ``function_call``) are accepted; see ``messages_for_template``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_MESSAGE_RULES)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Optional[Union[str, List[Union[TextPart, RefusalPart, OtherPart]]]] = None
    name: Optional[str] = None
    tool_calls: Optional[List[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None
    refusal: Optional[str] = None
    annotations: Optional[List[Dict[str, Any]]] = None  # accepted, ignored (citations of an earlier answer)
    audio: Optional[Dict[str, Any]] = Field(None, json_schema_extra=null_only)  # an earlier audio answer: not supported unless null
    function_call: Optional[FunctionCall] = None  # deprecated spelling of one tool call

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, v: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if v is not None:
            raise ValueError("audio answers are not supported by this server; send the transcript as 'content'")
        return v

    @model_validator(mode="after")
    def _content_or_calls(self) -> "Message":
        if self.function_call is not None and self.role != "assistant":
            raise ValueError("'function_call' is only valid in assistant messages")
        if self.content is None and self.refusal is not None:
            self.content = self.refusal
        has_calls = bool(self.tool_calls) or self.function_call is not None
        if self.content is None and not (self.role == "assistant" and has_calls):
            raise ValueError("a message needs 'content' (or, for the assistant, 'tool_calls')")
        return self


class FunctionDef(Strict):
    name: str = Field(..., min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str = Field(..., min_length=1, max_length=64)


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Strict):
    name: Optional[str] = "response"
    description: Optional[str] = None
    schema_: Optional[Dict[str, Any]] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=absent_or(
        "type", {"const": "json_schema"}, {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}}))
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("'json_schema' is required when type is 'json_schema'")
        return self


_STRUCTURED = {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["json_object", "json_schema"]}}}


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        absent_or("top_logprobs", {"type": "integer"}, {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}),
        absent_or("tool_choice", {"not": {"enum": [None, "none"]}},
                  {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}}),
        {"not": {"required": ["grammar", "response_format"], "properties": {
            "grammar": {"type": "string"}, "response_format": _STRUCTURED}}},
        {"not": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1},
                                                       "tool_choice": {"not": {"const": "none"}}},
                 "anyOf": [{"required": ["grammar"], "properties": {"grammar": {"type": "string"}}},
                           {"required": ["response_format"], "properties": {"response_format": _STRUCTURED}}]}}]})
    messages: List[Message] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[List[Tool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = None
    parallel_tool_calls: Optional[bool] = None
    # Accepted and ignored: they have no effect on a local server's answer (docs/server.md).
    store: Optional[bool] = None
    metadata: Optional[Dict[str, str]] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    prediction: Optional[Dict[str, Any]] = None
    verbosity: Optional[str] = None
    # Reasoning (llama-server's fields): whether a think block goes to reasoning_content,
    # extra template variables (e.g. enable_thinking), and OpenAI's effort, passed to the
    # template as `reasoning_effort` ("none": thinking off; templates without the variable ignore it).
    reasoning_format: Optional[Literal["none", "deepseek", "auto"]] = None
    chat_template_kwargs: Optional[Dict[str, Any]] = None
    reasoning_effort: Optional[str] = None
    # Accepted when they ask for nothing this server would leave out.
    modalities: Optional[List[str]] = Field(None, json_schema_extra=documented(
        {"anyOf": [{"type": "array", "items": {"const": "text"}}, {"type": "null"}]}))
    # Refused unless null (see the route); the document says so.
    audio: Optional[Dict[str, Any]] = Field(None, json_schema_extra=null_only)
    web_search_options: Optional[Dict[str, Any]] = Field(None, json_schema_extra=null_only)
    functions: Optional[List[Dict[str, Any]]] = Field(None, json_schema_extra=null_only)
    function_call: Optional[Any] = Field(None, json_schema_extra=null_only)

    @model_validator(mode="after")
    def _checks(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("'top_logprobs' requires 'logprobs' to be true")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError("'tool_choice' is set but 'tools' is empty")
        return self


# -- the response -------------------------------------------------------------


class CalledFunction(Reply):
    name: str
    arguments: str  # JSON text


class AssistantToolCall(Reply):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ResponseMessage(Reply):
    role: Literal["assistant"] = "assistant"
    content: Optional[str]
    reasoning_content: Optional[str] = None  # left out unless the model reasoned
    tool_calls: Optional[List[AssistantToolCall]] = None  # left out unless it called tools


class ChatChoice(Reply):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: Optional[ChoiceLogprobs]


class ChatCompletionResponse(Reply):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: List[ChatChoice]
    usage: Usage
    timings: Timings  # llama-server's, of the first choice


class DeltaFunction(Reply):
    name: Optional[str] = None  # in a call's first delta
    arguments: Optional[str] = None  # a fragment of the JSON text


class DeltaToolCall(Reply):
    """A call's first delta has ``id``, ``type`` and ``function.name``; later
    ones carry fragments of ``function.arguments``."""

    index: int
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: DeltaFunction


class ChunkDelta(Reply):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[List[DeltaToolCall]] = None


class ChatChunkChoice(Reply):
    index: int
    delta: ChunkDelta
    logprobs: Optional[ChoiceLogprobs]
    finish_reason: FinishReason


class ChatCompletionChunk(Reply):
    """One SSE ``data:`` event of a streamed chat completion. With
    ``stream_options.include_usage`` every chunk has ``usage``: null but the
    last, which has no choices and the usage of the request."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: List[ChatChunkChoice]
    usage: Optional[Usage] = None
    timings: Optional[Timings] = None  # llama-server's, of the first choice: in the last chunk only

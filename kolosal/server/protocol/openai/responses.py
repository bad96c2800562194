"""POST /v1/responses (OpenAI's Responses API) request and response.

Input items are read leniently (fields the openai SDK adds to items it
returns, such as ``status`` or ``annotations``, are ignored) so that a
client can send a response's ``output`` back as the next ``input``."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import ConfigDict, Discriminator, Field, RootModel, Tag, model_validator
from typing_extensions import Annotated

from ..base import Lenient, Reply, Strict, absent_or, documented, null_only, refused
from .common import TokenLogprobOut


class InputText(Lenient):
    type: Literal["input_text", "output_text", "text"]
    text: str


class InputRefusal(Lenient):
    type: Literal["refusal"]
    refusal: str


class InputOther(Lenient):
    """Images, files and audio: understood, but not supported (400 unsupported_content)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=refused)
    type: Literal["input_image", "input_file", "input_audio"]


ContentPart = Union[InputText, InputRefusal, InputOther]


class MessageItem(Lenient):
    type: Optional[Literal["message"]] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, List[ContentPart]]


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    arguments: str


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(..., min_length=1)
    output: Union[str, List[ContentPart]]


class ReasoningItem(Lenient):
    """Reasoning from an earlier answer: accepted and left out of the prompt."""

    type: Literal["reasoning"]


# Tags are spelt like pydantic's own ("list[...]"), which error locations leave out.
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def _item_type(v: Any) -> Optional[str]:
    kind = (v.get("type") if isinstance(v, dict) else getattr(v, "type", None)) or "message"
    return f"item[{kind}]" if kind in ITEM_TYPES else None


InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("item[message]")],
        Annotated[FunctionCallItem, Tag("item[function_call]")],
        Annotated[FunctionCallOutputItem, Tag("item[function_call_output]")],
        Annotated[ReasoningItem, Tag("item[reasoning]")],
    ],
    Discriminator(_item_type, custom_error_type="invalid_item_type",
                  custom_error_message="the item type is not supported by this server (supported: "
                                       + ", ".join(ITEM_TYPES) + ")"),
]


Input = Annotated[
    Union[Annotated[str, Tag("str")], Annotated[List[InputItem], Tag("list[item]")]],
    Discriminator(lambda v: "str" if isinstance(v, str) else "list[item]"),
]


class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(..., min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    strict: Optional[bool] = None


class NamedFunction(Strict):
    type: Literal["function"]
    name: str = Field(..., min_length=1, max_length=64)


class TextFormat(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=absent_or(
        "type", {"const": "json_schema"}, {"required": ["schema"], "properties": {"schema": {"type": "object"}}}))
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[Dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = None

    @model_validator(mode="after")
    def _schema_given(self) -> "TextFormat":
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("'schema' is required when type is 'json_schema'")
        return self


class TextOptions(Strict):
    format: Optional[TextFormat] = None
    verbosity: Optional[str] = None  # accepted, ignored


class StreamOptions(Strict):
    include_obfuscation: Optional[bool] = None  # accepted, ignored


_ANSWERABLE = {"anyOf": [
    {"required": ["role"], "properties": {"role": {"enum": ["user", "assistant", "developer"]},
                                          "type": {"enum": ["message", None]}}},
    {"required": ["type"], "properties": {"type": {"enum": ["function_call", "function_call_output"]}}}]}


class ResponseRequest(Strict):
    # What the validator and the route check, for /openapi.json: a list input is not empty and holds
    # something to answer besides system messages; tool_choice needs tools.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        {"properties": {"input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1,
                                                                 "contains": _ANSWERABLE}]}}},
        absent_or("tool_choice", {"not": {"enum": [None, "none"]}},
                  {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}}),
        {"not": {"required": ["tools", "text"], "properties": {
            "tools": {"type": "array", "minItems": 1}, "tool_choice": {"not": {"const": "none"}},
            "text": {"type": "object", "required": ["format"], "properties": {"format": {
                "type": "object", "required": ["type"], "properties": {"type": {"enum": ["json_object", "json_schema"]}}}}}}}}]})
    model: str = Field(..., min_length=1)
    input: Input
    instructions: Optional[str] = None
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=1e-6, le=1)  # > 0 as a float32
    tools: Optional[List[FunctionTool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedFunction]] = None
    parallel_tool_calls: Optional[bool] = None
    max_tool_calls: Optional[int] = Field(None, ge=1)
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)  # with include: ["message.output_text.logprobs"]
    text: Optional[TextOptions] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    # Answered with 400 unless null (see the route).
    previous_response_id: Optional[str] = Field(None, json_schema_extra=null_only)
    conversation: Optional[Any] = Field(None, json_schema_extra=null_only)
    background: Optional[bool] = Field(None, json_schema_extra=documented({"enum": [False, None]}))
    prompt: Optional[Dict[str, Any]] = Field(None, json_schema_extra=null_only)
    # Accepted and ignored (docs/server.md).
    store: Optional[bool] = None
    metadata: Optional[Dict[str, str]] = None
    user: Optional[str] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    truncation: Optional[Literal["auto", "disabled"]] = None
    include: Optional[List[str]] = None  # "message.output_text.logprobs" is honoured
    reasoning: Optional[Dict[str, Any]] = None

    @model_validator(mode="after")
    def _checks(self) -> "ResponseRequest":
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' must not be empty")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError("'tool_choice' is set but 'tools' is empty")
        return self


# -- the response -------------------------------------------------------------


class OutputText(Reply):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: List[Any] = Field(default_factory=list)
    logprobs: List[TokenLogprobOut] = Field(default_factory=list)  # with include: ["message.output_text.logprobs"]


class OutputMessage(Reply):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: List[OutputText]


class OutputFunctionCall(Reply):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = Union[OutputMessage, OutputFunctionCall]


class ResponseUsage(Reply):
    input_tokens: int
    input_tokens_details: Dict[str, int]
    output_tokens: int
    output_tokens_details: Dict[str, int]
    total_tokens: int


class Response(Reply):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: Optional[Dict[str, Any]]
    incomplete_details: Optional[Dict[str, Any]]
    instructions: Optional[str]
    max_output_tokens: Optional[int]
    max_tool_calls: Optional[int] = None
    model: str
    output: List[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: Optional[str]
    store: bool = False
    temperature: Optional[float]
    top_p: Optional[float]
    text: Dict[str, Any]
    tool_choice: Any
    tools: List[Dict[str, Any]]
    truncation: str = "disabled"
    usage: Optional[ResponseUsage]
    metadata: Dict[str, str] = Field(default_factory=dict)


# -- the streamed events, one model per type (``event:`` names the type) --------


class ResponseLifecycleEvent(Reply):
    type: Literal["response.created", "response.in_progress", "response.completed", "response.incomplete"]
    sequence_number: int
    response: Response


class OutputItemEvent(Reply):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(Reply):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDeltaEvent(Reply):
    type: Literal["response.output_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: List[TokenLogprobOut]


class OutputTextDoneEvent(Reply):
    type: Literal["response.output_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: List[TokenLogprobOut]


class FunctionCallArgumentsDeltaEvent(Reply):
    type: Literal["response.function_call_arguments.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(Reply):
    type: Literal["response.function_call_arguments.done"]
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


StreamEvent = Union[ResponseLifecycleEvent, OutputItemEvent, ContentPartEvent, OutputTextDeltaEvent,
                    OutputTextDoneEvent, FunctionCallArgumentsDeltaEvent, FunctionCallArgumentsDoneEvent]

# the model of each event type
EVENT_TYPES: Dict[str, Any] = {kind: model for model in StreamEvent.__args__  # type: ignore[attr-defined]
                               for kind in model.model_fields["type"].annotation.__args__}


class ResponseStreamEvent(RootModel[Annotated[StreamEvent, Field(discriminator="type")]]):
    """One SSE event of a streamed response: ``event:`` names its ``type``,
    ``data:`` holds it."""

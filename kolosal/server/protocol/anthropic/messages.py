"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's request and
answer shapes, the typed stream events and the error envelope."""
from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import Field, RootModel, model_validator

from ..base import Lenient, Reply, Strict

# -- request content blocks ----------------------------------------------------


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: Optional[Dict[str, Any]] = None  # accepted, ignored: the prefix cache is automatic
    citations: Optional[List[Dict[str, Any]]] = None  # accepted, ignored (an earlier answer's citations)


class ToolUseBlock(Strict):
    """An earlier assistant turn's tool call."""

    type: Literal["tool_use"]
    id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    input: Dict[str, Any]
    cache_control: Optional[Dict[str, Any]] = None
    caller: Optional[Dict[str, Any]] = None  # accepted, ignored


class UnsupportedBlock(Lenient):
    """Images, documents, server tool results: understood, refused with 400 ``unsupported_content``."""

    type: Literal["image", "document", "search_result", "server_tool_use", "web_search_tool_result",
                  "web_fetch_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
                  "text_editor_code_execution_tool_result", "mcp_tool_use", "mcp_tool_result", "container_upload"]


class ThinkingBlock(Lenient):
    """An earlier answer's reasoning: left out of the prompt."""

    type: Literal["thinking", "redacted_thinking"]


ResultPart = Annotated[Union[TextBlock, UnsupportedBlock], Field(discriminator="type")]


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(..., min_length=1)
    content: Optional[Union[str, List[ResultPart]]] = None
    is_error: Optional[bool] = None
    cache_control: Optional[Dict[str, Any]] = None


ContentBlock = Annotated[Union[TextBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, UnsupportedBlock],
                         Field(discriminator="type")]


class MessageParam(Strict):
    role: Literal["user", "assistant"]
    content: Union[str, List[ContentBlock]]


class ToolDef(Strict):
    """A client tool (``type`` ``custom`` or left out); server tools (web search, bash...) are refused."""

    name: str = Field(..., min_length=1, max_length=128)
    description: Optional[str] = None
    input_schema: Dict[str, Any]
    type: Optional[Literal["custom"]] = None
    cache_control: Optional[Dict[str, Any]] = None
    strict: Optional[bool] = None  # the arguments always follow the schema here
    input_examples: Optional[List[Dict[str, Any]]] = None  # accepted, ignored


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = Field(None, min_length=1)
    disable_parallel_tool_use: Optional[bool] = None

    @model_validator(mode="after")
    def _named(self) -> "ToolChoice":
        if self.type == "tool" and not self.name:
            raise ValueError("'name' is required when type is 'tool'")
        return self


class ThinkingConfig(Strict):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Optional[int] = None


class JsonOutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: Dict[str, Any] = Field(..., alias="schema")


class OutputConfig(Strict):
    format: Optional[JsonOutputFormat] = None
    effort: Optional[str] = None  # accepted, ignored


class MessagesInput(Strict):
    """What both ``/v1/messages`` and its ``count_tokens`` read: the prompt."""

    model: str = Field(..., min_length=1)
    messages: List[MessageParam] = Field(..., min_length=1)
    system: Optional[Union[str, List[TextBlock]]] = None
    tools: Optional[List[ToolDef]] = None
    tool_choice: Optional[ToolChoice] = None
    thinking: Optional[ThinkingConfig] = None
    output_config: Optional[OutputConfig] = None
    # accepted, ignored: the prefix cache is automatic; no context is kept between requests; one region, one speed
    cache_control: Optional[Dict[str, Any]] = None
    context_management: Optional[Dict[str, Any]] = None
    inference_geo: Optional[str] = None
    speed: Optional[str] = None


class MessagesRequest(MessagesInput):
    max_tokens: int = Field(..., ge=1)
    stop_sequences: Optional[List[Annotated[str, Field(min_length=1)]]] = None
    stream: Optional[bool] = False
    temperature: Optional[float] = Field(None, ge=0, le=1)
    top_p: Optional[float] = Field(None, ge=1e-6, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    metadata: Optional[Dict[str, Any]] = None  # accepted, ignored
    service_tier: Optional[str] = None  # accepted, ignored


class CountTokensRequest(MessagesInput):
    pass


# -- the answer ----------------------------------------------------------------


class TextOut(Reply):
    type: Literal["text"] = "text"
    text: str


class ToolUseOut(Reply):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: Dict[str, Any]


class ThinkingOut(Reply):
    """The model's think block (a template that separates one); unsigned: sent back, it is left out."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


OutBlock = Annotated[Union[ThinkingOut, TextOut, ToolUseOut], Field(discriminator="type")]
StopReason = Optional[Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]]


class MessageUsage(Reply):
    """As Anthropic counts: ``input_tokens`` are the prompt tokens computed for this
    request, ``cache_read_input_tokens`` those found in the prefix cache; the whole
    prompt is their sum."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: Optional[int] = None


class Message(Reply):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: List[OutBlock]
    model: str
    stop_reason: StopReason
    stop_sequence: Optional[str]
    usage: MessageUsage


class TokenCount(Reply):
    input_tokens: int


# -- stream events -------------------------------------------------------------


class TextDelta(Reply):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(Reply):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(Reply):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(Reply):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class MessageStart(Reply):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStart(Reply):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: OutBlock


class ContentBlockDelta(Reply):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: Annotated[Union[TextDelta, InputJsonDelta, ThinkingDelta, SignatureDelta], Field(discriminator="type")]


class ContentBlockStop(Reply):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopDelta(Reply):
    stop_reason: StopReason
    stop_sequence: Optional[str]


class DeltaUsage(Reply):
    """Cumulative counts at the end of the stream (the prompt's split between
    computed and cached tokens is known only then)."""

    output_tokens: int
    input_tokens: Optional[int] = None
    cache_read_input_tokens: Optional[int] = None


class MessageDelta(Reply):
    type: Literal["message_delta"] = "message_delta"
    delta: StopDelta
    usage: DeltaUsage


class MessageStop(Reply):
    type: Literal["message_stop"] = "message_stop"


StreamEvent = Union[MessageStart, ContentBlockStart, ContentBlockDelta, ContentBlockStop, MessageDelta, MessageStop]


class MessageStreamEvent(RootModel[Annotated[StreamEvent, Field(discriminator="type")]]):
    """One SSE event of a streamed message: ``event:`` names its ``type``, ``data:`` holds it."""


# -- errors --------------------------------------------------------------------


class ErrorInfo(Reply):
    type: str = Field(..., description="invalid_request_error, authentication_error, not_found_error, ...")
    message: str


class ErrorEnvelope(Reply):
    """``{"type": "error", "error": {"type", "message"}}``."""

    type: Literal["error"] = "error"
    error: ErrorInfo

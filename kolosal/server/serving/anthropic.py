"""Anthropic's Messages API over the chat machinery.

A Messages request becomes the chat completion request it means (system
prompt, turns, ``tool_use`` blocks as tool calls, ``tool_result`` blocks as
tool messages, ``stop_sequences`` as ``stop``), is planned and run by
``serving.chat`` like any other chat request, and its answer (or its stream
of chat chunks) is turned back into a ``message`` (or Anthropic's stream
events)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Union

from pydantic import ValidationError

from kolosal.engine import Engine

from ..errors import ApiError
from ..protocol.anthropic.messages import (ContentBlockDelta, ContentBlockStart, ContentBlockStop, CountTokensRequest,
                                           DeltaUsage, ErrorEnvelope, ErrorInfo, InputJsonDelta, Message,
                                           MessageDelta, MessagesInput, MessagesRequest, MessageStart, MessageStop,
                                           MessageUsage, OutBlock, SignatureDelta, StopDelta, StreamEvent, TextBlock,
                                           TextDelta, TextOut, ThinkingBlock, ThinkingDelta, ThinkingOut, TokenCount,
                                           ToolResultBlock, ToolUseBlock, ToolUseOut, UnsupportedBlock)
from ..protocol.openai.chat import ChatCompletionRequest
from .chat import ChatRun, plan_chat, start_chat
from .common import Spliced, typed_event
from .runner import Watch

# HTTP status -> Anthropic's error type
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error",
                504: "timeout_error"}

# Chat parameters that errors may name, and their Messages spelling.
_PARAMS = {"max_completion_tokens": "max_tokens", "stop": "stop_sequences", "response_format": "output_config.format"}


def error_body(err: ApiError) -> Dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for ``err``."""
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return ErrorEnvelope(error=ErrorInfo(type=kind, message=err.message)).wire()


def error_event(err: ApiError) -> str:
    """A failure in the middle of a stream, as Anthropic sends it."""
    return "event: error\ndata: " + json.dumps(error_body(err), ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _unsupported(what: str, where: str) -> ApiError:
    return ApiError(400, f"Content blocks of type '{what}' are not supported by this server (text and tools only).",
                    param=where, code="unsupported_content")


def _result_text(block: ToolResultBlock, where: str) -> str:
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        parts = []
        for k, p in enumerate(block.content):
            if not isinstance(p, TextBlock):
                raise _unsupported(p.type, f"{where}.content[{k}]")
            parts.append(p.text)
        text = "\n".join(parts)
    return f"Error: {text}" if block.is_error else text


def chat_messages(req: MessagesInput) -> List[Dict[str, Any]]:
    """``system`` and ``messages`` as chat messages."""
    out: List[Dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n\n".join(b.text for b in req.system)
        out.append({"role": "system", "content": system})
    names: Dict[str, str] = {}
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts: List[str] = []
        calls: List[Dict[str, Any]] = []
        for j, b in enumerate(m.content):
            bw = f"{where}.content[{j}]"
            if isinstance(b, TextBlock):
                texts.append(b.text)
            elif isinstance(b, ThinkingBlock):
                continue  # earlier reasoning is not part of the prompt
            elif isinstance(b, UnsupportedBlock):
                raise _unsupported(b.type, bw)
            elif isinstance(b, ToolUseBlock):
                if m.role != "assistant":
                    raise ApiError(400, f"'{bw}': tool_use blocks belong in assistant messages.", param=bw,
                                   code="invalid_value")
                names[b.id] = b.name
                calls.append({"id": b.id, "type": "function",
                              "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}})
            elif isinstance(b, ToolResultBlock):
                if m.role != "user":
                    raise ApiError(400, f"'{bw}': tool_result blocks belong in user messages.", param=bw,
                                   code="invalid_value")
                if b.tool_use_id not in names:
                    raise ApiError(400, f"'{bw}.tool_use_id' ('{b.tool_use_id}') answers no tool_use block before "
                                        f"it.", param=f"{bw}.tool_use_id", code="invalid_value")
                out.append({"role": "tool", "tool_call_id": b.tool_use_id, "name": names[b.tool_use_id],
                            "content": _result_text(b, bw)})
        if m.role == "assistant":
            msg: Dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts or not calls else None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif texts:
            out.append({"role": "user", "content": "\n\n".join(texts)})
    if req.messages[-1].role == "assistant":
        raise ApiError(400, "A last assistant message (prefilling the answer) is not supported by this server; end "
                            "the conversation with a user message.", param=f"messages[{len(req.messages) - 1}]",
                       code="unsupported_parameter")
    return out


def chat_request(req: Union[MessagesRequest, CountTokensRequest]) -> ChatCompletionRequest:
    """``req`` as the chat completion request it is planned as (400 for what this server does not support)."""
    body: Dict[str, Any] = {"model": req.model, "messages": chat_messages(req)}
    if req.thinking is None or req.thinking.type == "disabled":
        body["reasoning_effort"] = "none"  # thinking is asked for, as with Anthropic (templates with a switch)
    if isinstance(req, MessagesRequest):
        body.update(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                    stop=req.stop_sequences, stream=bool(req.stream))
        if req.stream:
            body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.input_schema}} for t in req.tools]
    tc = req.tool_choice
    if tc is not None and tc.type != "none" and not req.tools:
        raise ApiError(400, "'tool_choice' may only be given with 'tools'.", param="tool_choice",
                       code="invalid_value")
    if tc is not None and req.tools:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(tc.type) or \
            {"type": "function", "function": {"name": tc.name}}
        # one call per answer unless parallel calls are asked for explicitly (small models repeat calls)
        body["parallel_tool_calls"] = tc.disable_parallel_tool_use is False
    fmt = req.output_config.format if req.output_config else None
    if fmt is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as e:  # the request was valid: what remains is the conversation's content
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ApiError(400, f"The request cannot be turned into a conversation: {msg}" +
                       (f" (at {where})" if where else ""), param="messages", code="invalid_value") from None


def _renamed(e: ApiError) -> ApiError:
    e.param = _PARAMS.get((e.param or "").split("[")[0], e.param)
    return e


def count_tokens(engine: Engine, req: CountTokensRequest) -> TokenCount:
    """The prompt's tokens as the model's chat template renders it (tools included)."""
    try:
        plan = plan_chat(engine, chat_request(req))
    except ApiError as e:
        raise _renamed(e) from None
    return TokenCount(input_tokens=len(plan.rendered.tokens))


def start_message(engine: Engine, req: MessagesRequest) -> "MessageRun":
    """Plan ``req`` as a chat request and start its generation in ``engine``."""
    try:
        run = start_chat(engine, chat_request(req))
    except ApiError as e:
        raise _renamed(e) from None
    return MessageRun(req, run)


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


@dataclass
class MessageRun:
    """The generation of one Messages request (a chat run), and its answer."""

    req: MessagesRequest
    chat: ChatRun
    id: str = field(default_factory=lambda: "msg_" + uuid.uuid4().hex[:24])

    @property
    def gens(self) -> List[Any]:
        return self.chat.gens

    def _stop(self, finish: Optional[str]) -> Dict[str, Any]:
        """``stop_reason`` and ``stop_sequence`` of the finished generation."""
        if finish == "length":
            return {"stop_reason": "max_tokens", "stop_sequence": None}
        if finish == "tool_calls":
            return {"stop_reason": "tool_use", "stop_sequence": None}
        word = self.gens[0].stop_word
        if word and word in (self.req.stop_sequences or []):
            return {"stop_reason": "stop_sequence", "stop_sequence": word}
        return {"stop_reason": "end_turn", "stop_sequence": None}

    def response(self, w: Watch) -> Message:
        """The whole message, once generated: a thinking block (when the model's template separates one), a
        text block, then tool_use blocks."""
        answer = self.chat.response(w)
        choice = answer.choices[0]
        blocks: List[OutBlock] = []
        if choice.message.reasoning_content:
            blocks.append(ThinkingOut(thinking=choice.message.reasoning_content))
        text = choice.message.content
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        if text:
            blocks.append(TextOut(text=text))
        for name, arguments in calls:
            blocks.append(ToolUseOut(id=_tool_id(), name=name, input=_arguments(arguments)))
        u = answer.usage
        cached = u.prompt_tokens_details.get("cached_tokens", 0)
        return Message(id=self.id, content=blocks, model=self.req.model, **self._stop(choice.finish_reason),
                       usage=MessageUsage(input_tokens=u.prompt_tokens - cached, output_tokens=u.completion_tokens,
                                          cache_read_input_tokens=cached))

    def events(self, w: Watch) -> Iterator[Union[None, StreamEvent, str]]:
        """Anthropic's stream: ``message_start``, per block ``content_block_start``,
        its deltas and ``content_block_stop``, then ``message_delta`` (stop reason
        and usage) and ``message_stop``. ``None`` marks a while without output.
        ``message_start`` counts the whole prompt as input; ``message_delta`` has the
        final split between computed and cached prompt tokens (clients take it).
        A text delta, most of a stream, comes as its SSE event already written
        (spliced into the block's event, serialized once)."""
        n_prompt = len(self.chat.plan.rendered.tokens)
        yield MessageStart(message=Message(id=self.id, content=[], model=self.req.model, stop_reason=None,
                                           stop_sequence=None,
                                           usage=MessageUsage(input_tokens=n_prompt, output_tokens=0)))
        index, open_kind = -1, None
        finish: Optional[str] = None
        output_tokens, input_tokens, cached = 0, n_prompt, 0

        def open_block(kind: str, block: OutBlock) -> Iterator[StreamEvent]:
            nonlocal index, open_kind
            yield from close_block()
            index, open_kind = index + 1, kind
            yield ContentBlockStart(index=index, content_block=block)

        def close_block() -> Iterator[StreamEvent]:
            nonlocal open_kind
            if open_kind == "thinking":
                yield ContentBlockDelta(index=index, delta=SignatureDelta(signature=""))
            if open_kind is not None:
                yield ContentBlockStop(index=index)
            open_kind = None

        text_events: Dict[int, Spliced] = {}  # per text block: its delta event, serialized once

        def text_delta(text: str) -> Iterator[Union[StreamEvent, str]]:
            """A text delta, opening a text block first when another kind (or none) is open."""
            if open_kind != "text":
                yield from open_block("text", TextOut(text=""))
            spliced = text_events.get(index)
            if spliced is None:
                spliced = text_events[index] = Spliced(
                    lambda text: typed_event(ContentBlockDelta(index=index, delta=TextDelta(text=text))))
            if spliced.ok:
                yield spliced.fill(text)
            else:
                yield ContentBlockDelta(index=index, delta=TextDelta(text=text))

        for chunk in self.chat.texts_or_chunks(w):
            if chunk is None:
                yield None
                continue
            if isinstance(chunk, str):
                if chunk:
                    yield from text_delta(chunk)
                continue
            if chunk.usage is not None:
                output_tokens = chunk.usage.completion_tokens
                cached = chunk.usage.prompt_tokens_details.get("cached_tokens", 0)
                input_tokens = chunk.usage.prompt_tokens - cached
            for ch in chunk.choices:
                d = ch.delta
                if d.reasoning_content:
                    if open_kind != "thinking":
                        yield from open_block("thinking", ThinkingOut(thinking=""))
                    yield ContentBlockDelta(index=index, delta=ThinkingDelta(thinking=d.reasoning_content))
                if d.content:
                    yield from text_delta(d.content)
                for tc in d.tool_calls or []:
                    if tc.id is not None:  # a call's first delta
                        yield from open_block("tool_use", ToolUseOut(id=_tool_id(), name=tc.function.name or "",
                                                                     input={}))
                    if tc.function.arguments:
                        yield ContentBlockDelta(index=index, delta=InputJsonDelta(partial_json=tc.function.arguments))
                if ch.finish_reason is not None:
                    finish = ch.finish_reason
        yield from close_block()
        yield MessageDelta(delta=StopDelta(**self._stop(finish)),
                           usage=DeltaUsage(output_tokens=output_tokens, input_tokens=input_tokens,
                                            cache_read_input_tokens=cached))
        yield MessageStop()


def _arguments(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"_raw": text}  # a call cut short by max_tokens: its arguments as generated
    return value if isinstance(value, dict) else {"value": value}

"""POST /v1/responses: OpenAI's Responses API over the chat machinery.

The input items become chat messages (``function_call`` items an assistant
turn with tool calls, ``function_call_output`` items tool results), the
request is planned as a chat completion, and the answer is returned as
output items, or streamed as the typed events OpenAI sends. Nothing is
stored: ``previous_response_id`` is answered with 400."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from pydantic import ValidationError

from kolosal.engine import Engine, Generation

from ..errors import ApiError
from ..protocol.openai.chat import AssistantToolCall, ChatCompletionRequest
from ..protocol.openai.common import TokenLogprobOut
from ..protocol.openai.responses import (EVENT_TYPES, FunctionCallItem, FunctionCallOutputItem, InputOther,
                                         InputRefusal, MessageItem, OutputFunctionCall, OutputItem, OutputMessage,
                                         OutputText, ReasoningItem, Response, ResponseRequest, ResponseUsage,
                                         StreamEvent)
from .chat import ChatPlan, ChatRun, StreamDeltas, plan_chat
from .common import new_id, now
from .runner import Watch, cancel_all, chat_logprobs, finish_reason, usage


def _refuse(req: ResponseRequest) -> None:
    def no(param: str, why: str) -> ApiError:
        return ApiError(400, f"Unsupported parameter: '{param}' {why}", param=param, code="unsupported_parameter")

    if req.previous_response_id is not None:
        raise no("previous_response_id", "is not supported: this server stores no responses. Send the earlier "
                                         "turns (and the output items you received) in 'input' instead.")
    if req.conversation is not None:
        raise no("conversation", "is not supported: this server stores no conversations; send the turns in 'input'.")
    if req.background:
        raise no("background", "is not supported: this server answers in the foreground only.")
    if req.prompt is not None:
        raise no("prompt", "(a stored prompt template) is not supported; send 'instructions' and 'input'.")


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for j, part in enumerate(content):
        if isinstance(part, InputOther):
            raise ApiError(400, f"Content parts of type '{part.type}' are not supported by this server (text only).",
                           param=f"{param}[{j}]", code="unsupported_content")
        out.append(part.refusal if isinstance(part, InputRefusal) else part.text)
    return "\n".join(out)


def chat_messages(req: ResponseRequest) -> List[Dict[str, Any]]:
    """``instructions`` and ``input`` as chat messages."""
    messages: List[Dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input})
        return messages
    names: Dict[str, str] = {}
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        if isinstance(item, ReasoningItem):
            continue
        if isinstance(item, MessageItem):
            text = _text(item.content, f"{where}.content")
            if item.role in ("system", "developer") and len(messages) == 1 and messages[0]["role"] == "system" \
                    and req.instructions:  # one system message: many templates take no second one
                messages[0]["content"] += "\n\n" + text
            else:
                messages.append({"role": item.role, "content": text})
        elif isinstance(item, FunctionCallItem):
            names[item.call_id] = item.name
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in names:
                raise ApiError(400, f"'{where}.call_id' ('{item.call_id}') answers no function_call item before it.",
                               param=f"{where}.call_id", code="invalid_value")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "name": names[item.call_id],
                             "content": _text(item.output, f"{where}.output")})
    if not any(m["role"] != "system" for m in messages):
        raise ApiError(400, "'input' holds no message to answer.", param="input", code="invalid_value")
    return messages


def chat_request(req: ResponseRequest) -> ChatCompletionRequest:
    """``req`` as the chat completion request it is planned as (400 for what
    this server does not support)."""
    _refuse(req)
    body: Dict[str, Any] = {"model": req.model, "messages": chat_messages(req),
                            "max_completion_tokens": req.max_output_tokens, "temperature": req.temperature,
                            "top_p": req.top_p, "parallel_tool_calls": req.parallel_tool_calls}
    if req.tools:
        body["tools"] = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
                         for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice if isinstance(req.tool_choice, str) else \
            {"type": "function", "function": {"name": req.tool_choice.name}}
    if _wants_logprobs(req):
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type != "text":
        rf: Dict[str, Any] = {"type": fmt.type}
        if fmt.type == "json_schema":
            rf["json_schema"] = {"name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict}
        body["response_format"] = rf
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as e:  # the items were valid: what remains is message content
        raise ApiError(400, f"'input' cannot be turned into a conversation: {e.errors()[0].get('msg')}",
                       param="input", code="invalid_value") from None


LOGPROBS = "message.output_text.logprobs"


def _wants_logprobs(req: ResponseRequest) -> bool:
    return LOGPROBS in (req.include or [])


def _logprobs(req: ResponseRequest, lps: List[Any]) -> List[TokenLogprobOut]:
    """Log-probabilities of the tokens in OpenAI's Responses shape (when asked for)."""
    if not (_wants_logprobs(req) and lps):
        return []
    return [TokenLogprobOut.model_validate(x) for x in chat_logprobs(lps, req.top_logprobs or 0)["content"]]


def _usage(gens: List[Generation]) -> ResponseUsage:
    u = usage(gens)
    return ResponseUsage(input_tokens=u["prompt_tokens"],
                         input_tokens_details={"cached_tokens": u["prompt_tokens_details"].get("cached_tokens", 0)},
                         output_tokens=u["completion_tokens"], output_tokens_details={"reasoning_tokens": 0},
                         total_tokens=u["total_tokens"])


def _message_item(item_id: str, text: str, status: str, logprobs: Optional[List[TokenLogprobOut]] = None) -> OutputMessage:
    return OutputMessage(id=item_id, status=status, content=[OutputText(text=text, logprobs=logprobs or [])])


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> OutputFunctionCall:
    return OutputFunctionCall(id=item_id, call_id=call_id, name=name, arguments=arguments, status=status)


def _envelope(req: ResponseRequest, rid: str, created: int, status: str, output: List[OutputItem],
              gen: Optional[Generation] = None) -> Response:
    fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format else \
        {"type": "text"}
    out = Response(
        id=rid, created_at=created, status=status, error=None, incomplete_details=None,
        instructions=req.instructions, max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls, model=req.model, output=output,
        parallel_tool_calls=bool(req.parallel_tool_calls), previous_response_id=None, store=False,
        temperature=req.temperature, top_p=req.top_p, text={"format": fmt},
        tool_choice=req.tool_choice.model_dump() if hasattr(req.tool_choice, "model_dump") else (req.tool_choice or "auto"),
        tools=[t.model_dump(exclude_none=True) for t in req.tools or []], truncation="disabled", usage=None,
        metadata=req.metadata or {})
    if gen is not None:
        out.usage = _usage([gen])
        if finish_reason(gen) == "length":
            out.status = "incomplete"
            out.incomplete_details = {"reason": "max_output_tokens"}
    return out


# Chat parameters that errors may name, and their Responses spelling.
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
           "response_format": "text.format"}


def _limit_calls(calls: List[AssistantToolCall], req: ResponseRequest) -> List[AssistantToolCall]:
    return calls[:req.max_tool_calls] if req.max_tool_calls else calls


def start_response(engine: Engine, req: ResponseRequest, chat_req: ChatCompletionRequest) -> "ResponseRun":
    """Plan ``chat_req`` (``chat_request(req)``) and start its generation in ``engine``."""
    try:
        plan = plan_chat(engine, chat_req)
    except ApiError as e:  # name the parameter as this request spells it
        e.param = _PARAMS.get((e.param or "").split("[")[0], e.param)
        raise
    gens: List[Generation] = []
    try:
        gens.append(plan.start(0))
    except BaseException:
        cancel_all(gens)
        raise
    return ResponseRun(req, ChatRun(chat_req, plan, gens))


@dataclass
class ResponseRun:
    """The generation of one Responses request (a chat run), and its answer."""

    req: ResponseRequest
    chat: ChatRun
    id: str = field(default_factory=lambda: new_id("resp"))
    created: int = field(default_factory=now)

    @property
    def gens(self) -> List[Generation]:
        return self.chat.gens

    def response(self, w: Watch) -> Response:
        """The whole answer, once generated: a message item, then function call
        items, as the chat answer holds them (a tool call cut short by the token
        limit as its stream gave it: the call begun, never the answer form's text).
        Cut short, the last item is ``incomplete``."""
        choice = self.chat.response(w).choices[0]
        req, msg = self.req, choice.message
        output: List[OutputItem] = []
        if msg.content:
            lps = choice.logprobs.content if choice.logprobs else None
            output.append(_message_item(new_id("msg"), msg.content, "completed", lps))
        calls = msg.tool_calls or []
        kept = _limit_calls(calls, req)
        for call in kept:
            output.append(_call_item(new_id("fc"), call.id, call.function.name, call.function.arguments,
                                     "completed"))
        # The item cut short is the last one, unless max_tool_calls left it out.
        if output and choice.finish_reason == "length" and len(kept) == len(calls):
            output[-1].status = "incomplete"
        return _envelope(req, self.id, self.created, "completed", output, self.gens[0])

    def events(self, w: Watch) -> Iterator[Optional[StreamEvent]]:
        """The streamed answer as OpenAI's typed events; ``None`` marks a
        while without output (a keep-alive for the transport)."""
        return _stream(self.req, self.chat.plan, self.gens[0], w, self.id, self.created)
class _Events:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, req: ResponseRequest, rid: str, created: int) -> None:
        self.req, self.rid, self.created = req, rid, created
        self.seq = 0
        self.output: List[OutputItem] = []  # items as they stand
        self.text_item: Optional[int] = None  # output index of the open message item
        self.calls: Dict[int, int] = {}  # tool-call index -> output index

    def emit(self, kind: str, **fields: Any) -> StreamEvent:
        event = EVENT_TYPES[kind](type=kind, sequence_number=self.seq, **fields)
        self.seq += 1
        return event

    def response(self, status: str, gen: Optional[Generation] = None) -> Response:
        return _envelope(self.req, self.rid, self.created, status, self.output, gen)

    def text(self, delta: str, logprobs: List[TokenLogprobOut]) -> Iterator[StreamEvent]:
        if self.text_item is None:
            self.text_item = len(self.output)
            item = OutputMessage(id=new_id("msg"), status="in_progress", content=[])
            self.output.append(item)
            yield self.emit("response.output_item.added", output_index=self.text_item, item=item)
            part = OutputText(text="")
            item.content.append(part)
            yield self.emit("response.content_part.added", item_id=item.id, output_index=self.text_item,
                            content_index=0, part=part)
        item = self.output[self.text_item]
        assert isinstance(item, OutputMessage)
        item.content[0].text += delta
        item.content[0].logprobs += logprobs
        yield self.emit("response.output_text.delta", item_id=item.id, output_index=self.text_item,
                        content_index=0, delta=delta, logprobs=logprobs)

    def close_text(self, status: str) -> Iterator[StreamEvent]:
        if self.text_item is None:
            return
        k, self.text_item = self.text_item, None
        item = self.output[k]
        assert isinstance(item, OutputMessage)
        part = item.content[0]
        yield self.emit("response.output_text.done", item_id=item.id, output_index=k, content_index=0,
                        text=part.text, logprobs=part.logprobs)
        yield self.emit("response.content_part.done", item_id=item.id, output_index=k, content_index=0, part=part)
        item.status = self._status(k, status)  # type: ignore[assignment]
        yield self.emit("response.output_item.done", output_index=k, item=item)

    def call_start(self, index: int, call_id: str, name: str) -> Iterator[StreamEvent]:
        yield from self.close_text("completed")
        self.calls[index] = len(self.output)
        item = _call_item(new_id("fc"), call_id, name, "", "in_progress")
        self.output.append(item)
        yield self.emit("response.output_item.added", output_index=self.calls[index], item=item)

    def call_arguments(self, index: int, fragment: str) -> Iterator[StreamEvent]:
        k = self.calls[index]
        item = self.output[k]
        assert isinstance(item, OutputFunctionCall)
        item.arguments += fragment
        yield self.emit("response.function_call_arguments.delta", item_id=item.id, output_index=k, delta=fragment)

    def _status(self, k: int, status: str) -> str:
        """The status of the item closed at ``k`` when the answer ends with ``status``:
        only the last item is cut short (``incomplete``), the ones before it are whole."""
        return status if k == len(self.output) - 1 else "completed"

    def close_calls(self, status: str) -> Iterator[StreamEvent]:
        for k in self.calls.values():
            item = self.output[k]
            assert isinstance(item, OutputFunctionCall)
            yield self.emit("response.function_call_arguments.done", item_id=item.id, output_index=k,
                            name=item.name, arguments=item.arguments)
            item.status = self._status(k, status)  # type: ignore[assignment]
            yield self.emit("response.output_item.done", output_index=k, item=item)
        self.calls = {}


def _stream(req: ResponseRequest, plan: ChatPlan, gen: Generation, w: Watch, rid: str,
            created: int) -> Iterator[Optional[StreamEvent]]:
    ev = _Events(req, rid, created)
    yield ev.emit("response.created", response=ev.response("in_progress"))
    yield ev.emit("response.in_progress", response=ev.response("in_progress"))
    deltas = StreamDeltas(plan, gen)
    limit = req.max_tool_calls
    dropped = False  # max_tool_calls left a call out: it is the one a cut would have cut short
    pending: List[Any] = []  # token log-probabilities not yet sent: they ride on the next text delta

    def handle(d: Dict[str, Any]) -> Iterator[StreamEvent]:
        nonlocal pending, dropped
        if d.get("content"):
            lps, pending = _logprobs(req, pending), []
            yield from ev.text(d["content"], lps)
        for tc in d.get("tool_calls") or []:
            index = tc["index"]
            if limit is not None and index >= limit:
                dropped = True
                continue
            if "id" in tc:
                yield from ev.call_start(index, tc["id"], tc["function"]["name"])
            if tc.get("function", {}).get("arguments"):
                yield from ev.call_arguments(index, tc["function"]["arguments"])

    for c in w.chunks(gen):
        if c is None:
            yield None
            continue
        pending.extend(c[2] or [])
        for d in deltas.feed(c[0]):
            yield from handle(d)
    for d in deltas.finish():
        yield from handle(d)
    status = "incomplete" if finish_reason(gen) == "length" and not dropped else "completed"
    yield from ev.close_text(status)
    yield from ev.close_calls(status)
    final = ev.response("completed", gen)
    yield ev.emit("response.incomplete" if final.status == "incomplete" else "response.completed", response=final)

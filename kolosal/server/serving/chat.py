"""Chat completions: a request planned into generations, answered as a
``ChatCompletionResponse`` or streamed as ``ChatCompletionChunk``s."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from kolosal import tool_calls
from kolosal.engine import Engine, Generation, RenderedChat

from ..errors import ApiError
from ..protocol.openai.chat import (ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
                                    ChatCompletionResponse, ChunkDelta, Message, RefusalPart, ResponseMessage, TextPart)
from .common import FINGERPRINT, Spliced, cut_short_answer, dumps, include_usage, new_id, now
from .runner import Watch, cancel_all, chat_logprobs, finish_reason, stream_end_timings, timings, usage
from .sampling import fit_max_tokens, per_choice, sampling_kwargs


def _text(content: Any, where: str) -> Any:
    """String content, or the text of an array of text (and refusal) parts."""
    if not isinstance(content, list):
        return content
    for j, p in enumerate(content):
        if not isinstance(p, (TextPart, RefusalPart)):
            raise ApiError(400, f"Content parts of type '{p.type}' are not supported by this server (text only).",
                           param=f"{where}.content[{j}]", code="unsupported_content")
    return "\n".join(p.text if isinstance(p, TextPart) else p.refusal for p in content)


def message_dict(m: Message, where: str = "messages") -> Dict[str, Any]:
    """A request message as the chat template takes it: text content, tool
    calls in OpenAI's shape, fields without meaning here dropped."""
    out: Dict[str, Any] = {"role": m.role}
    if m.content is not None:
        out["content"] = _text(m.content, where)
    if m.role == "function":  # deprecated spelling of a tool result
        out["role"] = "tool"
    if m.name is not None:
        out["name"] = m.name
    calls = [c.model_dump(exclude_none=True) for c in m.tool_calls or []]
    if m.function_call is not None and not calls:
        calls = [{"id": "call_0", "type": "function", "function": m.function_call.model_dump()}]
    if calls:
        out["tool_calls"] = calls
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.reasoning_content is not None:
        out["reasoning_content"] = m.reasoning_content
    return out


def refuse_unsupported(req: ChatCompletionRequest) -> None:
    """400 for fields whose request this server cannot honour (ignoring
    them would change the answer asked for)."""
    def no(param: str, why: str) -> ApiError:
        return ApiError(400, f"Unsupported parameter: '{param}' {why}", param=param, code="unsupported_parameter")

    if req.modalities and any(m != "text" for m in req.modalities):
        raise no("modalities", "may only ask for 'text' on this server.")
    if req.audio is not None:
        raise no("audio", "is not supported: this server answers with text only.")
    if req.web_search_options is not None:
        raise no("web_search_options", "is not supported: this server has no web search.")
    if req.functions is not None:
        raise no("functions", "(deprecated) is not supported; send 'tools' instead.")
    if req.function_call is not None:
        raise no("function_call", "(deprecated) is not supported; send 'tool_choice' instead.")


@dataclass
class ChatPlan:
    engine: Engine
    rendered: RenderedChat
    kwargs: Dict[str, Any]
    json_output: bool = False  # response_format: the chat format may fence the object in ```json

    def start(self, index: int) -> Generation:
        return self.engine.chat(rendered=self.rendered, stream=True, **per_choice(self.kwargs, index))

    @property
    def buffers_output(self) -> bool:
        """Tool-call answers are parsed once complete (content or tool calls)."""
        return self.rendered.generic_tools or self.rendered.chat_prompt.parse_tool_calls

    @property
    def parses_output(self) -> bool:
        """The answer is read by the chat format as it grows: tool calls, a think block, or a
        JSON answer (a fence around it is not content, as in the finished message)."""
        return self.buffers_output or self.rendered.chat_prompt.extract_reasoning or self.json_output


def plan_chat(engine: Engine, req: ChatCompletionRequest) -> ChatPlan:
    refuse_unsupported(req)
    messages = [message_dict(m, f"messages[{i}]") for i, m in enumerate(req.messages)]
    names = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls", []) if c.get("id")}
    for m in messages:  # a tool result names its function, for templates that show it
        if m["role"] == "tool" and "name" not in m and m.get("tool_call_id") in names:
            m["name"] = names[m["tool_call_id"]]
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools and req.tool_choice != "none" else None
    if not tools and not engine.supports_tool_calls:
        messages = tool_calls.history_as_text(messages)
    tool_choice = req.tool_choice.model_dump() if hasattr(req.tool_choice, "model_dump") else req.tool_choice
    json_schema: Any = None
    rf = req.response_format
    if rf is not None and rf.type != "text":
        json_schema = {"type": "object"} if rf.type == "json_object" else rf.json_schema.schema_
    if req.grammar and json_schema is not None:
        raise ApiError(400, "'grammar' cannot be combined with 'response_format'.", param="grammar")
    if (json_schema is not None or req.grammar) and tools:
        raise ApiError(400, "'tools' cannot be combined with 'response_format' or 'grammar'.", param="tools")
    rendered = engine.render_chat(messages, tools=tools, tool_choice=tool_choice if tools else None,
                                  parallel_tool_calls=bool(req.parallel_tool_calls), json_schema=json_schema,
                                  grammar=req.grammar, reasoning_format=req.reasoning_format,
                                  chat_template_kwargs=req.chat_template_kwargs, reasoning_effort=req.reasoning_effort)
    max_tokens = fit_max_tokens(engine, len(rendered.tokens), req.max_completion_tokens or req.max_tokens, "messages")
    kw = sampling_kwargs(req, engine, max_tokens)
    if req.logprobs:
        kw["logprobs"] = True
        if req.top_logprobs:
            kw["top_logprobs"] = req.top_logprobs
    return ChatPlan(engine, rendered, kw, json_output=json_schema is not None)


def assistant_message(gen: Generation) -> Dict[str, Any]:
    msg = dict(gen.message) if hasattr(gen, "message") else {"role": "assistant", "content": gen.text}
    if msg.get("tool_calls"):
        msg["tool_calls"] = [_tool_call(c, i) for i, c in enumerate(msg["tool_calls"])]
    return msg


def _tool_call(call: Dict[str, Any], i: int) -> Dict[str, Any]:
    fn = call.get("function", call)
    args = fn.get("arguments", "{}")
    return {"id": call.get("id") or f"call_{i}", "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": args if isinstance(args, str) else json.dumps(args)}}


def start_chat(engine: Engine, req: ChatCompletionRequest) -> "ChatRun":
    """Plan ``req`` and start its ``n`` generations in ``engine``."""
    plan = plan_chat(engine, req)
    gens: List[Generation] = []
    try:
        for i in range(req.n):
            gens.append(plan.start(i))
    except BaseException:
        cancel_all(gens)
        raise
    return ChatRun(req, plan, gens)


@dataclass
class ChatRun:
    """The generations of one chat request, and its answer."""

    req: ChatCompletionRequest
    plan: ChatPlan
    gens: List[Generation]
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)

    def response(self, w: Watch) -> ChatCompletionResponse:
        """The whole answer, once every generation has finished."""
        w.finish(self.gens)
        req = self.req
        choices = [ChatChoice(index=i, message=ResponseMessage.model_validate(self._message(g)),
                              finish_reason=finish_reason(g),
                              logprobs=chat_logprobs(g.logprobs, req.top_logprobs or 0) if req.logprobs else None)
                   for i, g in enumerate(self.gens)]
        return ChatCompletionResponse(id=self.id, created=self.created, model=req.model,
                                      system_fingerprint=FINGERPRINT, choices=choices, usage=usage(self.gens),
                                      timings=timings(self.gens[0]))

    def _message(self, g: Generation) -> Dict[str, Any]:
        """The assistant message of ``g``; a tool call in the JSON answer form (models
        without their own tool-call format) cut off by the token limit is answered as
        its stream gave it: the calls begun, never the form's text."""
        msg = assistant_message(g)
        if (finish_reason(g) == "length" and self.plan.rendered.generic_tools and msg.get("content")
                and not msg.get("tool_calls")):
            text, calls = cut_short_answer(msg["content"])
            msg["content"] = text if text or not calls else None
            if calls:
                msg["tool_calls"] = [_tool_call({"function": {"name": n, "arguments": a}}, k)
                                     for k, (n, a) in enumerate(calls)]
        return msg

    def _chunk(self, choices: List[ChatChunkChoice], **fields: Any) -> ChatCompletionChunk:
        if include_usage(self.req):
            fields.setdefault("usage", None)
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.req.model,
                                   system_fingerprint=FINGERPRINT, choices=choices, **fields)

    def _delta(self, i: int, delta: Dict[str, Any], reason: Optional[str] = None, lps: Any = None,
               **fields: Any) -> ChatCompletionChunk:
        return self._chunk([ChatChunkChoice(index=i, delta=ChunkDelta.model_validate(delta), logprobs=lps,
                                            finish_reason=reason)], **fields)

    def _last(self, i: int, reason: Optional[str]) -> Dict[str, Any]:
        return stream_end_timings(self.req, self.gens, i) if reason is not None else {}

    def _parts(self, w: Watch) -> Iterator[Optional[Tuple[int, Dict[str, Any], Optional[str], Any]]]:
        """The streamed answer as (choice, delta, finish reason, logprobs), choice
        after choice; ``None`` marks a while without output."""
        req = self.req

        def logprobs(lps: List[Any]) -> Any:
            return chat_logprobs(lps, req.top_logprobs or 0) if lps and req.logprobs else None

        for i in range(len(self.gens)):
            yield i, {"role": "assistant", "content": ""}, None, None
        for i, g in enumerate(self.gens):
            deltas = StreamDeltas(self.plan, g)
            pending: List[Any] = []  # logprobs not yet sent (they ride on the next delta)
            for c in w.chunks(g):
                if c is None:
                    yield None
                    continue
                text, _, lps = c
                if lps:
                    pending.extend(lps)
                out = deltas.feed(text)
                if not out and pending and deltas.mode == "text":
                    out = [{"content": ""}]
                for d in out:
                    yield i, d, None, logprobs(pending)
                    pending = []
            for d in deltas.finish():
                yield i, d, None, logprobs(pending)
                pending = []
            yield i, {}, finish_reason(g), logprobs(pending)

    def texts_or_chunks(self, w: Watch) -> Iterator[Union[None, str, ChatCompletionChunk]]:
        """The streamed answer's chunks, choice after choice, for the dialects
        that stream one choice in their own events (``None`` marks a while
        without output: a keep-alive for the transport). A delta of text alone
        (no logprobs, no finish), most of a stream, comes as that text, without
        a chunk built for it."""
        for p in self._parts(w):
            if p is None:
                yield None
                continue
            i, delta, reason, lps = p
            yield delta["content"] if _text_only(delta, reason, lps) else self._delta(*p, **self._last(i, reason))
        if include_usage(self.req):
            yield self._chunk([], usage=usage(self.gens), timings=timings(self.gens[0]))

    def events(self, w: Watch) -> Iterator[Optional[str]]:
        """The streamed answer's chunks as their JSON text (``None``: keep-alive). A text delta
        without logprobs, most of a stream, is spliced into its choice's chunk
        serialized once: the same bytes without building and dumping a model
        per token."""
        frames: Dict[int, Spliced] = {}
        for p in self._parts(w):
            if p is None:
                yield None
                continue
            i, delta, reason, lps = p
            if _text_only(delta, reason, lps):
                frame = frames.get(i)
                if frame is None:  # choice i's content chunk, serialized once
                    frame = frames[i] = Spliced(lambda text: dumps(self._delta(i, {"content": text}).wire()))
                if frame.ok:
                    yield frame.fill(delta["content"])
                    continue
            yield dumps(self._delta(i, delta, reason, lps, **self._last(i, reason)).wire())
        if include_usage(self.req):
            yield dumps(self._chunk([], usage=usage(self.gens), timings=timings(self.gens[0])).wire())


def _text_only(delta: Dict[str, Any], reason: Optional[str], lps: Any) -> bool:
    """A streamed delta of text alone: no logprobs, no finish reason."""
    return reason is None and lps is None and len(delta) == 1 and isinstance(delta.get("content"), str)


class StreamDeltas:
    """The deltas of one streamed choice, as OpenAI streams them. Plain text
    streams as generated. A think block the template knows streams as
    ``reasoning_content`` deltas, then the answer as ``content``.
    With tools, the text is read as it grows: through
    the JSON fallback by ``AnswerStream``, in a template's own tool-call
    format by the native parser (partial mode); both give text, then for each
    call a first delta with id, type and name, then argument fragments."""

    def __init__(self, plan: ChatPlan, gen: Generation) -> None:
        self.mode = "json" if plan.rendered.generic_tools else "parsed" if plan.parses_output else "text"
        self._gen = gen
        self._answer = tool_calls.AnswerStream() if self.mode == "json" else None
        self._text = ""  # "parsed": the answer so far
        self._sent: Dict[str, Any] = {"content": "", "reasoning_content": "", "calls": []}
        self._held = ""  # "text": trailing whitespace not sent yet
        self._streamed: List[str] = []  # "text": the pieces sent (joined once, at the end)

    def feed(self, text: str) -> List[Dict[str, Any]]:
        if self.mode == "text":
            # Trailing whitespace waits for more text: the finished message
            # (the non-streamed answer) drops it at the end, so must the stream.
            held = self._held + text
            body = held.rstrip()
            if not body:
                self._held = held
                return []
            self._held = held[len(body):]
            self._streamed.append(body)
            return [{"content": body}]
        if self._answer is not None:
            return self._answer.feed(text)
        self._text += text
        if not text:
            return []
        return self._news(self._gen.partial_message(self._text))  # type: ignore[attr-defined]

    def _news(self, msg: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Deltas for what ``msg`` holds beyond what was sent (text that a later
        reading changed rather than extended is not sent again)."""
        out: List[Dict[str, Any]] = []
        for key in ("reasoning_content", "content"):
            now, sent = msg.get(key) or "", self._sent[key]
            if len(now) > len(sent) and now.startswith(sent):
                out.append({key: now[len(sent):]})
                self._sent[key] = now
        calls = self._sent["calls"]
        for k, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            if k == len(calls):
                if not fn.get("name"):
                    break
                calls.append({"id": call.get("id") or f"call_{k}", "arguments": ""})
                out.append({"tool_calls": [{"index": k, "id": calls[k]["id"], "type": "function",
                                            "function": {"name": fn["name"], "arguments": ""}}]})
            args = fn.get("arguments") or ""
            args = args if isinstance(args, str) else json.dumps(args)
            if len(args) > len(calls[k]["arguments"]) and args.startswith(calls[k]["arguments"]):
                out.append({"tool_calls": [{"index": k, "function": {"arguments": args[len(calls[k]["arguments"]):]}}]})
                calls[k]["arguments"] = args
        return out

    def finish(self) -> List[Dict[str, Any]]:
        """What the finished message holds beyond what was streamed."""
        if self.mode == "text":
            final = assistant_message(self._gen).get("content") or ""
            sent = "".join(self._streamed)
            rest = final[len(sent):] if final.startswith(sent) else ""
            return [{"content": rest}] if rest else []
        if self._answer is not None:
            if not self._answer.broken:
                return []  # the JSON answer streamed whole (or, cut short, as far as it went)
            self._sent["content"] = self._answer.content
            self._sent["calls"] = [{"id": c["id"], "arguments": c["function"]["arguments"]}
                                   for c in self._answer.calls]
        return self._news(assistant_message(self._gen))

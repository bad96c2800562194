"""POST /v1/chat/completions."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

from flask import jsonify

from kolosal.engine import Engine, Generation, RenderedChat

from ...errors import ApiError
from ...openapi import api_route, parse_body
from ...runner import Watch, cancel_all, chat_logprobs, finish_reason, usage
from ...sampling import fit_max_tokens, per_choice, sampling_kwargs
from ...schemas.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Message, TextPart
from ...sse import DONE, PING, event, sse_response
from ...state import get_state
from . import bp
from .common import admit, base, include_usage, new_id, now, watch


def _message_dict(m: Message) -> Dict[str, Any]:
    out = m.model_dump(exclude_none=True)
    if isinstance(m.content, list):
        others = [p.type for p in m.content if not isinstance(p, TextPart)]
        if others:
            raise ApiError(501, f"Content parts of type '{others[0]}' are not supported by this server (text only).",
                           param="messages", code="unsupported_content")
        out["content"] = "\n".join(p.text for p in m.content if isinstance(p, TextPart))
    return out


@dataclass
class ChatPlan:
    engine: Engine
    rendered: RenderedChat
    kwargs: Dict[str, Any]

    def start(self, index: int) -> Generation:
        return self.engine.chat(rendered=self.rendered, stream=True, **per_choice(self.kwargs, index))

    @property
    def buffers_output(self) -> bool:
        """Tool-call answers are parsed once complete (content or tool calls)."""
        return self.rendered.generic_tools or self.rendered.chat_prompt.parse_tool_calls


def plan_chat(engine: Engine, req: ChatCompletionRequest) -> ChatPlan:
    messages = [_message_dict(m) for m in req.messages]
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools and req.tool_choice != "none" else None
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
                                  grammar=req.grammar)
    max_tokens = fit_max_tokens(engine, len(rendered.tokens), req.max_completion_tokens or req.max_tokens, "messages")
    kw = sampling_kwargs(req, engine, max_tokens)
    if req.logprobs:
        kw["logprobs"] = True
        if req.top_logprobs:
            kw["top_logprobs"] = req.top_logprobs
    return ChatPlan(engine, rendered, kw)


def _message(gen: Generation) -> Dict[str, Any]:
    msg = dict(gen.message) if hasattr(gen, "message") else {"role": "assistant", "content": gen.text}
    if msg.get("tool_calls"):
        msg["tool_calls"] = [_tool_call(c, i) for i, c in enumerate(msg["tool_calls"])]
    return msg


def _tool_call(call: Dict[str, Any], i: int) -> Dict[str, Any]:
    fn = call.get("function", call)
    args = fn.get("arguments", "{}")
    return {"id": call.get("id") or f"call_{i}", "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": args if isinstance(args, str) else json.dumps(args)}}


@api_route(bp, "/chat/completions", ["POST"], summary="Create a chat completion (streaming with \"stream\": true)",
           request_model=ChatCompletionRequest, response_model=ChatCompletionResponse, streams=ChatCompletionChunk)
def chat_completions():  # type: ignore[no-untyped-def]
    state = get_state()
    req: ChatCompletionRequest = parse_body(ChatCompletionRequest)
    engine = admit(state, req.model)
    plan = plan_chat(engine, req)
    gens: List[Generation] = []
    try:
        for i in range(req.n):
            gens.append(plan.start(i))
    except BaseException:
        cancel_all(gens)
        raise
    w = watch(state, gens)
    rid, created = new_id("chatcmpl"), now()
    if req.stream:
        return sse_response(_stream(req, plan, gens, w, rid, created), gens)
    w.finish(gens)
    choices = []
    for i, g in enumerate(gens):
        choice: Dict[str, Any] = {"index": i, "message": _message(g), "finish_reason": finish_reason(g),
                                  "logprobs": None}
        if req.logprobs:
            choice["logprobs"] = chat_logprobs(g.logprobs, req.top_logprobs or 0)
        choices.append(choice)
    return jsonify({**base("chat.completion", rid, req.model, created), "choices": choices, "usage": usage(gens)})


def _stream(req: ChatCompletionRequest, plan: ChatPlan, gens: List[Generation], w: Watch, rid: str,
            created: int) -> Iterator[str]:
    head = base("chat.completion.chunk", rid, req.model, created)

    def chunk(i: int, delta: Dict[str, Any], reason: Optional[str] = None, lps: Any = None) -> str:
        return event({**head, "choices": [{"index": i, "delta": delta, "logprobs": lps, "finish_reason": reason}]})

    for i in range(len(gens)):
        yield chunk(i, {"role": "assistant", "content": ""})
    for i, g in enumerate(gens):
        for c in w.chunks(g):
            if c is None:
                yield PING
                continue
            text, _, lps = c
            if plan.buffers_output or not (text or lps):
                continue
            yield chunk(i, {"content": text}, None,
                        chat_logprobs(lps, req.top_logprobs or 0) if req.logprobs else None)
        if plan.buffers_output:
            msg = _message(g)
            if msg.get("tool_calls"):
                yield chunk(i, {"tool_calls": [{"index": k, **tc} for k, tc in enumerate(msg["tool_calls"])]})
            elif msg.get("content"):
                yield chunk(i, {"content": msg["content"]})
        yield chunk(i, {}, finish_reason(g))
    if include_usage(req):
        yield event({**head, "choices": [], "usage": usage(gens)})
    yield DONE

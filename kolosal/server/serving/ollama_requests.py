"""Ollama's requests as the requests they mean: ``/api/chat`` and a templated
``/api/generate`` as chat completion requests (messages with tool-call ids,
``format`` as ``response_format``, ``think`` as ``reasoning_effort``), a raw
``/api/generate`` as a text completion request, Ollama's option names as the
sampling fields; the fields this server refuses, and errors that name the
field as the Ollama request spells it (``renamed``)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Union

from pydantic import ValidationError

from kolosal.engine import Engine

from ..errors import ApiError
from ..protocol.ollama.api import ChatMessage, ChatRequest, GenerateRequest, Options
from ..protocol.openai.chat import ChatCompletionRequest
from ..protocol.openai.completions import CompletionRequest
from .sampling import capped_default

# -- options -------------------------------------------------------------------

_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "stop", "repeat_penalty",
             "repeat_last_n", "presence_penalty", "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta")


def _no(param: str, why: str) -> ApiError:
    return ApiError(400, f"Unsupported parameter: '{param}' {why}", param=param, code="unsupported_parameter")


def sampling_fields(options: Optional[Options]) -> Dict[str, Any]:
    """``options`` as chat/completion request fields (``num_predict`` is ``max_tokens``)."""
    if options is None:
        return {}
    if options.tfs_z not in (None, 1.0):
        raise _no("options.tfs_z", "is not supported (tail-free sampling was removed from llama.cpp); leave it at 1.")
    out = {k: getattr(options, k) for k in _SAMPLING if getattr(options, k) is not None}
    if options.num_predict is not None and options.num_predict > 0:
        out["max_tokens"] = options.num_predict
    elif options.num_predict == 0:
        raise ApiError(400, "'options.num_predict' must be positive, or -1 (until the context is full).",
                       param="options.num_predict", code="invalid_value")
    return out


def _response_format(fmt: Any) -> Optional[Dict[str, Any]]:
    if not fmt:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}


def _validated(body: Dict[str, Any], model: Any, where: Dict[str, str]) -> Any:
    """``body`` as the internal request ``model``; a field it refuses is named as the Ollama request spells it."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else ""
        param = where.get(name, name)
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        raise ApiError(400, f"Invalid value for '{param}': {msg}", param=param, code="invalid_value") from None


_PARAMS = {k: f"options.{k}" for k in _SAMPLING} | {"max_tokens": "options.num_predict", "response_format": "format",
                                                     "messages": "messages", "prompt": "prompt"}


def renamed(e: ApiError) -> ApiError:
    """``e`` naming its field as the Ollama request spells it (``options.top_k``, ``format``)."""
    e.param = _PARAMS.get((e.param or "").split("[")[0], e.param)
    return e


# -- chat ----------------------------------------------------------------------


def chat_messages(messages: List[ChatMessage]) -> List[Dict[str, Any]]:
    """Ollama's messages as chat messages: tool calls get ids, a tool result answers
    the earliest unanswered call of its ``tool_name``."""
    out: List[Dict[str, Any]] = []
    pending: List[Dict[str, str]] = []  # calls not answered yet: {"id", "name"}
    n_calls = 0
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.images:
            raise ApiError(400, "Images are not supported by this server (text only).", param=f"{where}.images",
                           code="unsupported_content")
        msg: Dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for c in m.tool_calls:
                call_id = c.id or f"call_{n_calls}"
                n_calls += 1
                args = c.function.arguments
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": c.function.name, "arguments": args if isinstance(args, str) else json.dumps(args)}})
                pending.append({"id": call_id, "name": c.function.name})
            msg["tool_calls"] = calls
            if not m.content:
                msg["content"] = None
        elif m.role == "tool":
            match = next((p for p in pending if m.tool_call_id == p["id"]), None) or \
                next((p for p in pending if m.tool_name == p["name"]), None) or (pending[0] if pending else None)
            if match is not None:
                pending.remove(match)
                msg["tool_call_id"] = match["id"]
                msg["name"] = m.tool_name or match["name"]
            elif m.tool_name:
                msg["name"] = m.tool_name
        out.append(msg)
    return out


def chat_request(req: Union[ChatRequest, GenerateRequest]) -> ChatCompletionRequest:
    """``/api/chat`` (or a templated ``/api/generate``) as the chat completion request it is planned as."""
    if isinstance(req, ChatRequest):
        messages = chat_messages(req.messages or [])
    else:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + \
            [{"role": "user", "content": req.prompt or ""}]
    body: Dict[str, Any] = {"model": req.model, "messages": messages, "stream": bool(req.stream),
                            **sampling_fields(req.options)}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    rf = _response_format(req.format)
    if rf is not None:
        body["response_format"] = rf
    if req.think is False:
        body["reasoning_effort"] = "none"  # thinking off (templates with a switch)
    elif isinstance(req.think, str):
        body["reasoning_effort"] = req.think  # "low", "medium", "high": the template's reasoning_effort
    tools = getattr(req, "tools", None)
    if tools:
        body["tools"] = [{"type": "function", "function": t.function} for t in tools]
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:
            body["top_logprobs"] = req.top_logprobs
    return _validated(body, ChatCompletionRequest, {"tools": "tools", **_PARAMS})


def refuse_generate(req: GenerateRequest) -> None:
    if req.template:
        raise _no("template", "is not supported: the model's own chat template is used (or send \"raw\": true "
                              "with a prompt you formatted).")
    if req.suffix:
        raise _no("suffix", "is not supported (no fill-in-the-middle).")
    if req.context:
        raise _no("context", "is not supported: this server keeps no contexts between requests; send the "
                             "conversation to /api/chat.")
    if req.images:
        raise ApiError(400, "Images are not supported by this server (text only).", param="images",
                       code="unsupported_content")


def completion_request(engine: Engine, req: GenerateRequest) -> CompletionRequest:
    """A raw ``/api/generate`` (the prompt as the model sees it) as the text completion request it is run as;
    without ``num_predict``, Ollama's default: until the context is full."""
    fields = sampling_fields(req.options)
    if req.format:
        raise _no("format", "needs the chat template: leave out \"raw\": true to constrain the answer.")
    if "max_tokens" not in fields:
        room = engine.n_ctx_slot - len(engine.tokenize(req.prompt or ""))
        fields["max_tokens"] = capped_default(max(1, room))
    body = {"model": req.model, "prompt": req.prompt or "", "stream": bool(req.stream), **fields}
    if req.logprobs:
        body["logprobs"] = req.top_logprobs or 0
    return _validated(body, CompletionRequest, _PARAMS)

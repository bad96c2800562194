"""Ollama's API over the chat, completion and embedding machinery.

``/api/chat`` and ``/api/generate`` become chat completion requests (a raw
``/api/generate`` a text completion), run by ``serving.chat`` and
``serving.completions`` like any other request; their answers and chunks
are turned into Ollama's objects, streamed as one JSON object per line.
Ollama's option names map onto the same sampling fields; ``keep_alive``
unloads the model once it has been idle that long after the request."""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Union

from pydantic import ValidationError

from kolosal.engine import Engine, Generation

from ..errors import ApiError
from ..models.registry import LOADED, EngineRecord
from ..protocol.ollama.api import (ChatMessage, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse,
                                   EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse, ListedModel,
                                   Logprob, ModelDetails, OutFunction, OutMessage, OutToolCall, Options,
                                   RunningModel)
from ..protocol.openai.chat import ChatCompletionChunk, ChatCompletionRequest
from ..protocol.openai.completions import CompletionRequest
from ..protocol.openai.embeddings import EmbeddingRequest
from ..state import ServerState
from .chat import ChatRun, start_chat
from .common import Spliced, dumps
from .completions import CompletionRun, start_completion
from .embeddings import create_embeddings
from .runner import Watch, finish_reason, usage
from .sampling import capped_default

OLLAMA_PATHS = ("/api/",)


def error_body(err: ApiError) -> Dict[str, Any]:
    """``{"error": "..."}``."""
    return {"error": err.message}


def error_line(err: ApiError) -> str:
    """A failure in the middle of a stream: one more line."""
    return json.dumps(error_body(err), ensure_ascii=False) + "\n"


def timestamp(t: Optional[float] = None) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).isoformat().replace("+00:00", "Z")


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


def _renamed(e: ApiError) -> ApiError:
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


def _ns(ms: Optional[float]) -> int:
    return int((ms or 0.0) * 1_000_000)


def _logprobs(lps: Any) -> Optional[List[Logprob]]:
    if not lps:
        return None
    return [Logprob(token=x["token"], logprob=x["logprob"],
                    top_logprobs=[{"token": t["token"], "logprob": t["logprob"]} for t in x.get("top_logprobs", [])])
            for x in (lps.get("content") if isinstance(lps, dict) else lps) or []]


def _arguments(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


@dataclass
class OllamaRun:
    """One generation of ``/api/chat`` or ``/api/generate`` and its answer
    (``chat``: a chat run; else ``completion``: a raw completion run)."""

    model: str
    chat: Optional[ChatRun] = None
    completion: Optional[CompletionRun] = None
    generate: bool = False  # answered as /api/generate ("response") rather than /api/chat ("message")
    started: float = field(default_factory=time.perf_counter)
    load_ns: int = 0

    @property
    def gens(self) -> List[Generation]:
        return (self.chat or self.completion).gens  # type: ignore[union-attr]

    def _timings(self) -> Dict[str, Any]:
        g = self.gens[0]
        u = usage(self.gens)
        t = g.timings
        reason = finish_reason(g)
        return {"done_reason": "length" if reason == "length" else "stop",
                "total_duration": int((time.perf_counter() - self.started) * 1e9), "load_duration": self.load_ns,
                "prompt_eval_count": u["prompt_tokens"], "prompt_eval_duration": _ns(t.get("prompt_ms")),
                "eval_count": u["completion_tokens"], "eval_duration": _ns(t.get("decode_ms"))}

    def _out(self, text: str, done: bool, thinking: Optional[str] = None, calls: Optional[List[OutToolCall]] = None,
             logprobs: Optional[List[Logprob]] = None, created_at: Optional[str] = None,
             **timings: Any) -> Union[ChatResponse, GenerateResponse]:
        extra: Dict[str, Any] = dict(timings)
        if logprobs:
            extra["logprobs"] = logprobs
        created_at = created_at or timestamp()
        if self.generate:
            if thinking:
                extra["thinking"] = thinking
            return GenerateResponse(model=self.model, created_at=created_at, response=text, done=done, **extra)
        msg = OutMessage(content=text)
        if thinking:
            msg.thinking = thinking
        if calls:
            msg.tool_calls = calls
        return ChatResponse(model=self.model, created_at=created_at, message=msg, done=done, **extra)

    def response(self, w: Watch) -> Union[ChatResponse, GenerateResponse]:
        """The whole answer once generated."""
        if self.completion is not None:
            answer = self.completion.response(w)
            return self._out(answer.choices[0].text, True, **self._timings())
        assert self.chat is not None
        answer = self.chat.response(w)
        m = answer.choices[0].message
        text = m.content or ""
        named = [(c.function.name, c.function.arguments) for c in m.tool_calls or []]
        calls = [OutToolCall(function=OutFunction(name=name, arguments=_arguments(args))) for name, args in named]
        lps = _logprobs(answer.choices[0].logprobs.model_dump()) if answer.choices[0].logprobs else None
        return self._out(text, True, m.reasoning_content, calls, lps, **self._timings())

    def lines(self, w: Watch) -> Iterator[Union[None, ChatResponse, GenerateResponse, str]]:
        """The streamed answer: one object per text delta, the tool calls in one
        object once complete, then ``done: true`` with the counts and durations.
        ``None`` marks a while without output. A text delta of a chat run, most
        of a stream, comes as its line already written (its time and text
        spliced into a line serialized once), as does every text delta of a raw completion."""
        line = Spliced(lambda created_at, text: dumps(self._out(text, False, created_at=created_at).wire()) + "\n", 2)

        def text_line(text: str) -> Union[ChatResponse, GenerateResponse, str]:
            return line.fill(timestamp(), text) if line.ok else self._out(text, False)

        if self.completion is not None:  # one generation, no echo: its pieces of text, without a chunk built per piece
            for c in w.chunks(self.completion.gens[0]):
                if c is None:
                    yield None
                elif c[0]:
                    yield text_line(c[0])
            yield self._out("", True, **self._timings())
            return
        assert self.chat is not None
        calls: Dict[int, Dict[str, str]] = {}
        for chunk in self.chat.texts_or_chunks(w):
            if chunk is None:
                yield None
                continue
            if isinstance(chunk, str):
                if chunk:
                    yield text_line(chunk)
                continue
            for out in self._chat_delta(chunk, calls):
                yield out
        if calls:
            yield self._out("", False, calls=[OutToolCall(function=OutFunction(name=c["name"],
                                                                              arguments=_arguments(c["arguments"])))
                                              for _, c in sorted(calls.items())])
        yield self._out("", True, **self._timings())

    def _chat_delta(self, chunk: ChatCompletionChunk, calls: Dict[int, Dict[str, str]]) -> Iterator[Any]:
        for ch in chunk.choices:
            d = ch.delta
            lps = _logprobs(ch.logprobs.model_dump()) if ch.logprobs is not None else None
            if d.content or d.reasoning_content or lps:
                yield self._out(d.content or "", False, d.reasoning_content, logprobs=lps)
            for tc in d.tool_calls or []:
                call = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.function.name:
                    call["name"] = tc.function.name
                call["arguments"] += tc.function.arguments or ""


def start_chat_run(engine: Engine, req: ChatRequest) -> OllamaRun:
    try:
        return OllamaRun(req.model, chat=start_chat(engine, chat_request(req)))
    except ApiError as e:
        raise _renamed(e) from None


def start_generate_run(engine: Engine, req: GenerateRequest) -> OllamaRun:
    refuse_generate(req)
    try:
        if not req.raw:
            return OllamaRun(req.model, chat=start_chat(engine, chat_request(req)), generate=True)
        fields = sampling_fields(req.options)
        if req.format:
            raise _no("format", "needs the chat template: leave out \"raw\": true to constrain the answer.")
        if "max_tokens" not in fields:  # Ollama's default: until the context is full
            room = engine.n_ctx_slot - len(engine.tokenize(req.prompt or ""))
            fields["max_tokens"] = capped_default(max(1, room))
        body = {"model": req.model, "prompt": req.prompt or "", "stream": bool(req.stream), **fields}
        if req.logprobs:
            body["logprobs"] = req.top_logprobs or 0
        creq = _validated(body, CompletionRequest, _PARAMS)
        return OllamaRun(req.model, completion=start_completion(engine, creq), generate=True)
    except ApiError as e:
        raise _renamed(e) from None


# -- embeddings ------------------------------------------------------------------


def embed(engine: Engine, req: Union[EmbedRequest, EmbeddingsRequest], max_inputs: int,
          started: float, load_ns: int) -> Union[EmbedResponse, EmbeddingsResponse]:
    """``/api/embed`` (normalised vectors, inputs cut to the context with ``truncate``) or ``/api/embeddings``."""
    if isinstance(req, EmbeddingsRequest):
        out = create_embeddings(engine, EmbeddingRequest(model=req.model, input=req.prompt or " "), 1)
        return EmbeddingsResponse(embedding=out.data[0].embedding)  # type: ignore[arg-type]
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts:
        raise ApiError(400, "'input' must not be empty.", param="input", code="invalid_value")
    if req.truncate:
        room = engine.n_ctx_slot
        for i, t in enumerate(texts):
            tokens = engine.tokenize(t)
            if len(tokens) > room:
                texts[i] = engine.detokenize(tokens[:room - 1])
    try:
        out = create_embeddings(engine, EmbeddingRequest(model=req.model, input=texts, dimensions=req.dimensions),
                                max_inputs)
    except ApiError as e:
        if e.code == "context_length_exceeded" and not req.truncate:
            e.message += " Send \"truncate\": true to cut inputs to the context."
        raise
    return EmbedResponse(model=req.model, embeddings=[d.embedding for d in out.data],  # type: ignore[misc]
                         total_duration=int((time.perf_counter() - started) * 1e9), load_duration=load_ns,
                         prompt_eval_count=out.usage.prompt_tokens)


# -- keep_alive ----------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> Optional[float]:
    """``keep_alive`` in seconds: a number of seconds or a duration (``"5m"``,
    ``"1h30m"``, ``"0"``); negative: as long as the server's policy allows; None: not given."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION.findall(body)
    if not parts or "".join(a + u for a, u in parts) != body:
        raise ApiError(400, f"Invalid value for 'keep_alive': '{value}' is not a duration (e.g. \"5m\", \"1h\", "
                            f"\"30s\", 0, -1).", param="keep_alive", code="invalid_value")
    return sign * sum(float(a) * _UNIT[u] for a, u in parts)


def keep_alive_after(state: ServerState, engine_id: str, seconds: Optional[float]) -> None:
    """Per-request ``keep_alive``, once the answer is sent: kept on the model's
    record (``EngineRecord.keep_alive``), which the registry's idle unloading
    reads (``models/upkeep.py``, with or without ``inference.keep_alive_seconds``):
    the model is unloaded after that many idle seconds from now (0: at once)
    unless a later request uses it meanwhile; negative: never unloaded for
    being idle. A request without ``keep_alive`` returns the model to the server's policy."""
    registry = state.registry
    try:
        rec = registry.record(engine_id)
    except ApiError:
        return  # removed meanwhile
    rec.keep_alive = seconds
    if seconds is None or seconds < 0:
        return
    if seconds == 0:
        registry.unload_if_idle(rec, None, why="keep_alive 0")
        return
    rec.last_used = max(rec.last_used or 0.0, time.time())  # idle from the end of this answer
    registry.upkeep.wake()


# -- the model listings ------------------------------------------------------------


def _digest(rec: EngineRecord) -> str:
    """The configured SHA-256 of the file, else a hash of its path, size and time (hashing a large file per
    listing would be slow)."""
    if rec.sha256:
        return rec.sha256.lower()
    try:
        st = os.stat(rec.model_path)
        ident = f"{rec.model_path}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        ident = rec.model_path
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()


def _size(rec: EngineRecord) -> int:
    try:
        return os.path.getsize(rec.model_path)
    except OSError:
        return 0


def _modified(rec: EngineRecord) -> str:
    try:
        return timestamp(os.path.getmtime(rec.model_path))
    except OSError:
        return timestamp(rec.created)


def _params(n: Any) -> str:
    if not n:
        return ""
    n = float(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0" + unit, unit)
    return str(int(n))


def details(rec: EngineRecord) -> ModelDetails:
    """What the loaded model's header says (family, size, quantisation); blanks while it is not loaded."""
    meta: Dict[str, Any] = {}
    eng = rec.engine
    if eng is not None and rec.state == LOADED:
        try:
            meta = eng.metadata
        except Exception:
            meta = {}
    family = str(meta.get("architecture") or "")
    desc = str(meta.get("description") or "").split()
    quant = desc[-1] if desc and desc[-1][:1] in ("Q", "F", "I", "B") else ""
    return ModelDetails(family=family, families=[family] if family else [],
                        parameter_size=_params(meta.get("n_params")), quantization_level=quant)


def listed(rec: EngineRecord) -> ListedModel:
    return ListedModel(name=rec.engine_id, model=rec.engine_id, modified_at=_modified(rec), size=_size(rec),
                       digest=_digest(rec), details=details(rec))


def running(rec: EngineRecord, keep_alive: Optional[float]) -> RunningModel:
    """A loaded model; ``expires_at`` is when the idle policy may unload it (far ahead when never)."""
    last = rec.last_used or time.time()
    keep = rec.keep_alive if rec.keep_alive is not None else keep_alive
    expires = last + keep if keep is not None and keep >= 0 else time.time() + 10 * 365 * 86400
    meta = rec.engine.metadata if rec.engine is not None else {}
    size = rec.memory_bytes() or _size(rec)
    vram = size if int(meta.get("n_gpu_layers") or 0) > 0 else 0
    return RunningModel(name=rec.engine_id, model=rec.engine_id, size=size, digest=_digest(rec), details=details(rec),
                        expires_at=timestamp(expires), size_vram=vram, context_length=int(meta.get("n_ctx_slot") or 0))

"""Ollama's API over the chat, completion and embedding machinery.

``/api/chat`` and ``/api/generate`` become chat completion requests (a raw
``/api/generate`` a text completion), run by ``serving.chat`` and
``serving.completions`` like any other request; their answers and chunks
are turned into Ollama's objects, streamed as one JSON object per line.
Ollama's option names map onto the same sampling fields; ``keep_alive``
unloads the model once it has been idle that long after the request.
The request mapping is in ``ollama_requests``, ``keep_alive`` in
``ollama_keep_alive``, the model listings in ``ollama_models``; this module
runs the answers (``OllamaRun``: the whole answer or its lines) and
embeddings, and keeps the names the routes import."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from kolosal.engine import Engine, Generation, TokenLogprob

from ..errors import ApiError
from ..protocol.ollama.api import (ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, EmbedRequest,
                                   EmbedResponse, GenerateRequest, GenerateResponse, Logprob, OutFunction, OutMessage,
                                   OutToolCall)
from ..protocol.openai.chat import ChatCompletionChunk
from ..protocol.openai.embeddings import EmbeddingRequest
from .chat import ChatRun, start_chat
from .common import Spliced, dumps
from .completions import CompletionRun, start_completion
from .embeddings import create_embeddings
from .ollama_keep_alive import keep_alive_after, keep_alive_seconds
from .ollama_models import details, listed, running, timestamp
from .ollama_requests import chat_request, completion_request, refuse_generate, renamed
from .runner import Watch, chat_logprobs, finish_reason, usage

__all__ = ["OLLAMA_PATHS", "OllamaRun", "details", "embed", "error_body", "error_line", "keep_alive_after",
           "keep_alive_seconds", "listed", "running", "start_chat_run", "start_generate_run", "timestamp"]

OLLAMA_PATHS = ("/api/",)


def error_body(err: ApiError) -> Dict[str, Any]:
    """``{"error": "..."}``."""
    return {"error": err.message}


def error_line(err: ApiError) -> str:
    """A failure in the middle of a stream: one more line."""
    return json.dumps(error_body(err), ensure_ascii=False) + "\n"


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
            # The text alone: the OpenAI answer would also build its form of the log-probabilities.
            w.finish(self.gens)
            return self._out(self.completion.echoes[0] + self.gens[0].text, True,
                             logprobs=self._raw_logprobs(self.gens[0].logprobs), **self._timings())
        assert self.chat is not None
        answer = self.chat.response(w)
        m = answer.choices[0].message
        text = m.content or ""
        named = [(c.function.name, c.function.arguments) for c in m.tool_calls or []]
        calls = [OutToolCall(function=OutFunction(name=name, arguments=_arguments(args))) for name, args in named]
        lps = _logprobs(answer.choices[0].logprobs.model_dump()) if answer.choices[0].logprobs else None
        return self._out(text, True, m.reasoning_content, calls, lps, **self._timings())

    def _raw_logprobs(self, lps: Sequence[TokenLogprob]) -> Optional[List[Logprob]]:
        """A raw completion's token log-probabilities as Ollama writes them (None unless asked for)."""
        req = self.completion.req  # type: ignore[union-attr]
        if req.logprobs is None or not lps:
            return None
        return _logprobs(chat_logprobs(lps, req.logprobs))

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
                elif c[2]:  # log-probabilities asked for: they ride on the piece's line
                    yield self._out(c[0], False, logprobs=self._raw_logprobs(c[2]))
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
        raise renamed(e) from None


def start_generate_run(engine: Engine, req: GenerateRequest) -> OllamaRun:
    refuse_generate(req)
    try:
        if not req.raw:
            return OllamaRun(req.model, chat=start_chat(engine, chat_request(req)), generate=True)
        return OllamaRun(req.model, completion=start_completion(engine, completion_request(engine, req)),
                         generate=True)
    except ApiError as e:
        raise renamed(e) from None


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

"""POST /v1/completions (text completions)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Union

from flask import jsonify

from kolosal.engine import Engine, Generation

from ...openapi import api_route, parse_body
from ...serving.runner import Watch, cancel_all, completion_logprobs, finish_reason, usage
from ...serving.sampling import capped_default, fit_max_tokens, per_choice, sampling_kwargs
from ...protocol.openai.completions import CompletionRequest, CompletionResponse
from ..sse import DONE, PING, event, sse_response
from ...state import get_state
from . import bp
from .common import admit, base, chunk_head, include_usage, new_id, now, watch


def _prompts(engine: Engine, prompt: Union[str, List[Any]]) -> List[List[int]]:
    if isinstance(prompt, str):
        return [engine.tokenize(prompt)]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return [engine.tokenize(p) if isinstance(p, str) else list(p) for p in prompt]


@api_route(bp, "/completions", ["POST"], summary="Create a text completion (streaming with \"stream\": true)",
           request_model=CompletionRequest, response_model=CompletionResponse, streams=CompletionResponse,
           generation="completion")
def completions():  # type: ignore[no-untyped-def]
    state = get_state()
    req: CompletionRequest = parse_body(CompletionRequest)
    engine = admit(state, req.model)
    prompts = _prompts(engine, req.prompt)
    runs = []
    for tokens in prompts:
        max_tokens = fit_max_tokens(engine, len(tokens), req.max_tokens if req.max_tokens is not None else
                                    capped_default(16), "prompt")
        kw = sampling_kwargs(req, engine, max_tokens)
        if req.grammar:
            kw["grammar"] = req.grammar
        if req.logprobs is not None:
            kw["logprobs"] = True
            if req.logprobs:
                kw["top_logprobs"] = req.logprobs
        runs.append((tokens, kw))
    gens: List[Generation] = []
    echoes: List[str] = []
    try:
        for tokens, kw in runs:
            echo = engine.detokenize(tokens) if req.echo else ""
            for i in range(req.n):
                gens.append(engine.generate(tokens, **per_choice(kw, i)))
                echoes.append(echo)
    except BaseException:
        cancel_all(gens)
        raise
    w = watch(state, gens, len(prompts))
    rid, created = new_id("cmpl"), now()
    if req.stream:
        return sse_response(_stream(req, gens, echoes, w, rid, created, len(prompts)), gens)
    w.finish(gens)
    choices = []
    for i, g in enumerate(gens):
        choice: Dict[str, Any] = {"index": i, "text": echoes[i] + g.text, "finish_reason": finish_reason(g),
                                  "logprobs": None}
        if req.logprobs is not None:
            choice["logprobs"] = completion_logprobs(g.logprobs, req.logprobs, len(echoes[i]))
        choices.append(choice)
    return jsonify({**base("text_completion", rid, req.model, created), "choices": choices,
                    "usage": usage(gens, len(prompts))})


def _stream(req: CompletionRequest, gens: List[Generation], echoes: List[str], w: Watch, rid: str, created: int,
            n_prompts: int) -> Iterator[str]:
    head = chunk_head("text_completion", rid, req, created)

    def chunk(i: int, text: str, reason: Any = None, lps: Any = None) -> str:
        return event({**head, "choices": [{"index": i, "text": text, "logprobs": lps, "finish_reason": reason}]})

    for i, g in enumerate(gens):
        offset = len(echoes[i])
        if echoes[i]:
            yield chunk(i, echoes[i])
        for c in w.chunks(g):
            if c is None:
                yield PING
                continue
            text, _, lps = c
            if not (text or lps):
                continue
            logprobs = completion_logprobs(lps, req.logprobs, offset) if req.logprobs is not None else None
            offset += len(text)
            yield chunk(i, text, None, logprobs)
        yield chunk(i, "", finish_reason(g))
    if include_usage(req):
        yield event({**head, "choices": [], "usage": usage(gens, n_prompts)})
    yield DONE

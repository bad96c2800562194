"""Text completions: prompts (text or token ids) x ``n`` generations,
answered as a ``CompletionResponse`` or streamed as chunks of that shape."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Union

from kolosal.engine import Engine, Generation

from ..protocol.openai.completions import CompletionChoice, CompletionRequest, CompletionResponse
from .common import FINGERPRINT, include_usage, new_id, now
from .runner import Watch, cancel_all, completion_logprobs, finish_reason, stream_end_timings, timings, usage
from .sampling import capped_default, fit_max_tokens, per_choice, sampling_kwargs


def _prompts(engine: Engine, prompt: Union[str, List[Any]]) -> List[List[int]]:
    if isinstance(prompt, str):
        return [engine.tokenize(prompt)]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return [engine.tokenize(p) if isinstance(p, str) else list(p) for p in prompt]


def start_completion(engine: Engine, req: CompletionRequest) -> "CompletionRun":
    """Check every prompt fits, then start its ``n`` generations in ``engine``."""
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
    return CompletionRun(req, gens, echoes, len(prompts))


@dataclass
class CompletionRun:
    """The generations of one text completion request (``n`` per prompt, in
    prompt order), and its answer."""

    req: CompletionRequest
    gens: List[Generation]
    echoes: List[str]  # per generation: its prompt's text with "echo", else ""
    prompts: int
    id: str = field(default_factory=lambda: new_id("cmpl"))
    created: int = field(default_factory=now)

    def _response(self, choices: List[CompletionChoice], **fields: Any) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created, model=self.req.model,
                                  system_fingerprint=FINGERPRINT, choices=choices, **fields)

    def response(self, w: Watch) -> CompletionResponse:
        """The whole answer, once every generation has finished."""
        w.finish(self.gens)
        req, echoes = self.req, self.echoes
        choices = [CompletionChoice(index=i, text=echoes[i] + g.text, finish_reason=finish_reason(g),
                                    logprobs=completion_logprobs(g.logprobs, req.logprobs, len(echoes[i]))
                                    if req.logprobs is not None else None)
                   for i, g in enumerate(self.gens)]
        return self._response(choices, usage=usage(self.gens, self.prompts), timings=timings(self.gens[0]))

    def chunks(self, w: Watch) -> Iterator[Optional[CompletionResponse]]:
        """The streamed answer, choice after choice; ``None`` marks a while
        without output (a keep-alive for the transport)."""
        req = self.req
        extra = {"usage": None} if include_usage(req) else {}

        def chunk(i: int, text: str, reason: Any = None, lps: Any = None, **fields: Any) -> CompletionResponse:
            return self._response([CompletionChoice(index=i, text=text, logprobs=lps, finish_reason=reason)],
                                  **extra, **fields)

        for i, g in enumerate(self.gens):
            offset = len(self.echoes[i])
            if self.echoes[i]:
                yield chunk(i, self.echoes[i])
            for c in w.chunks(g):
                if c is None:
                    yield None
                    continue
                text, _, lps = c
                if not (text or lps):
                    continue
                logprobs = completion_logprobs(lps, req.logprobs, offset) if req.logprobs is not None else None
                offset += len(text)
                yield chunk(i, text, None, logprobs)
            yield chunk(i, "", finish_reason(g), **stream_end_timings(req, self.gens, i))
        if include_usage(req):
            yield self._response([], usage=usage(self.gens, self.prompts), timings=timings(self.gens[0]))

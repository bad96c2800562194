"""Driving generations for a request: job timeout, client disconnect,
keep-alive ticks while the prompt is prefilled, usage and logprob shapes."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from ...engine import Generation, TokenLogprob
from ..errors import ApiError, ClientGone
from ..protocol.openai.common import Timings
from .common import include_usage

__all__ = ["ClientGone", "Watch", "cancel_all", "finish_reason", "usage", "chat_logprobs", "completion_logprobs"]


class Watch:
    """Per-request limits: the job deadline and waitress' disconnect probe."""

    POLL = 0.2

    def __init__(self, environ: Dict[str, Any], job_timeout: float, ping_every: float = 5.0,
                 on_first_token: Optional[Callable[[], None]] = None,
                 timeout_key: str = "inference.job_timeout_seconds") -> None:
        self._gone = environ.get("waitress.client_disconnected")
        self.job_timeout = job_timeout
        self.timeout_key = timeout_key  # the setting that gave the deadline, named in the 504
        self.deadline = time.monotonic() + job_timeout
        self.ping_every = ping_every
        self._on_first_token = on_first_token  # called once, when any generation yields its first token

    def client_gone(self) -> bool:
        try:
            return bool(self._gone and self._gone())
        except Exception:
            return False

    def chunks(self, gen: Generation) -> Iterator[Optional[tuple]]:
        """Chunks of ``gen``; ``None`` marks ``ping_every`` seconds without output."""
        last = time.monotonic()
        while True:
            if self.client_gone():
                gen.cancel()
                raise ClientGone()
            now = time.monotonic()
            if now >= self.deadline:
                gen.cancel()
                raise ApiError(504, f"The request exceeded {self.timeout_key} ({self.job_timeout:g} s) and was "
                                    f"cancelled.", code="job_timeout")
            try:
                chunk = gen.next_chunk(min(self.POLL, self.deadline - now))
            except TimeoutError:
                if time.monotonic() - last >= self.ping_every:
                    last = time.monotonic()
                    yield None
                continue
            if chunk is None:
                if gen.finish_reason == "error":
                    raise gen.exception()
                if gen.finish_reason == "cancelled":  # not by us: we raise before cancelling
                    raise ApiError(503, "The generation was cancelled: its model was unloaded, or the server "
                                        "stopped after server.shutdown_grace_seconds.", code="engine_closed")
                return
            last = time.monotonic()
            if self._on_first_token is not None and chunk[1]:
                self._on_first_token()
                self._on_first_token = None
            yield chunk

    def finish(self, gens: Sequence[Generation]) -> None:
        """Run every generation to its end (they progress concurrently in the engine)."""
        try:
            for g in gens:
                for _ in self.chunks(g):
                    pass
        except BaseException:
            cancel_all(gens)
            raise


def cancel_all(gens: Sequence[Generation]) -> None:
    for g in gens:
        try:
            if not g.done:
                g.cancel()
        except Exception:
            pass


def finish_reason(gen: Generation) -> str:
    reason = gen.finish_reason or "stop"
    return "stop" if reason == "cancelled" else reason


def usage(gens: Sequence[Generation], prompts: int = 1) -> Dict[str, Any]:
    """Prompt tokens counted once per distinct prompt, completion tokens summed."""
    per_prompt = max(1, len(gens) // max(1, prompts))
    firsts = [gens[i].usage for i in range(0, len(gens), per_prompt)]
    prompt = sum(u["prompt_tokens"] for u in firsts)
    cached = sum(u.get("cached_tokens", 0) for u in firsts)
    completion = sum(g.usage["completion_tokens"] for g in gens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def timings(gen: Generation) -> Timings:
    """llama-server's timings of ``gen``."""
    t, u = gen.timings, gen.usage
    prompt_n = int(t.get("prefill_tokens", u["prompt_tokens"] - u.get("cached_tokens", 0)))
    prompt_ms = float(t.get("prompt_ms", 0.0))
    predicted_n = int(u["completion_tokens"])
    predicted_ms = float(t.get("decode_ms", 0.0))
    per_s = float(t.get("decode_tokens_per_s", 0.0))
    extra: Dict[str, int] = {}
    if t.get("draft_n"):
        extra = {"draft_n": int(t["draft_n"]), "draft_n_accepted": int(t.get("draft_n_accepted", 0))}
    return Timings(cache_n=int(u.get("cached_tokens", 0)), prompt_n=prompt_n, prompt_ms=prompt_ms,
                   prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
                   prompt_per_second=prompt_n * 1000.0 / prompt_ms if prompt_ms > 0 else 0.0,
                   predicted_n=predicted_n, predicted_ms=predicted_ms,
                   predicted_per_token_ms=1000.0 / per_s if per_s > 0 else 0.0,
                   predicted_per_second=per_s, **extra)


def stream_end_timings(req: Any, gens: Sequence[Generation], i: int) -> Dict[str, Any]:
    """What the finish chunk of choice ``i`` adds as the stream's last chunk:
    llama-server's timings (of the first choice), when it is the last choice's
    finish and no usage chunk follows."""
    if i != len(gens) - 1 or include_usage(req):
        return {}
    return {"timings": timings(gens[0])}


def _top(lp: TokenLogprob) -> Dict[str, Any]:
    # The raw bytes: a byte-level token may hold part of a UTF-8 character ("token" shows U+FFFD).
    return {"token": lp.text, "logprob": lp.logprob, "bytes": list(lp.bytes)}


def chat_logprobs(lps: Sequence[TokenLogprob], top_n: int) -> Dict[str, Any]:
    return {"content": [{**_top(lp), "top_logprobs": [_top(t) for t in lp.top[:top_n]]} for lp in lps]}


def completion_logprobs(lps: Sequence[TokenLogprob], top_n: int, offset: int) -> Dict[str, Any]:
    offsets: List[int] = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.text)
    return {
        "tokens": [lp.text for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t.text: t.logprob for t in lp.top[:top_n]} for lp in lps] if top_n else None,
        "text_offset": offsets,
    }

"""Completion accounting: one ``RequestTrack`` per generation request, summed
into ``CompletionStats`` overall and per engine id.

Definitions (all measured in this process):
- a request counts once it has finished: ``completed`` when it was answered
  in full, ``failed`` otherwise (error status, error mid-stream, client gone);
  ``success_rate_percent`` = completed / (completed + failed) * 100;
- tokens are the ``usage`` the response reports, summed over completed requests;
- ``ttft_ms``: from the request's arrival to the first generated token;
- ``turnaround_time_ms``: from the arrival to the end of the response;
- ``tps``: (input + output tokens) / turnaround; ``output_tps``: the decode
  speed the engine measured (tokens after the first / decode time);
- ``avg_rps``: finished requests / seconds since the first request arrived.
Averages are over completed requests; a figure with no sample is None."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..serving.runner import usage as response_usage


@dataclass
class RequestTrack:
    endpoint: str
    on_finish: Callable[["RequestTrack"], None]
    on_engine: Callable[["RequestTrack"], None]
    t0: float = field(default_factory=time.monotonic)
    engine_id: Optional[str] = None
    gens: Sequence[Any] = ()
    prompts: int = 1
    t_first: Optional[float] = None
    t_end: Optional[float] = None
    streaming: bool = False
    status: Optional[int] = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_engine(self, engine_id: str) -> None:
        if self.engine_id is None:
            self.engine_id = engine_id
            self.on_engine(self)

    def set_generations(self, gens: Sequence[Any], prompts: int = 1) -> None:
        self.gens, self.prompts = gens, prompts

    def first_token(self) -> None:
        if self.t_first is None:
            self.t_first = time.monotonic()

    def finish(self, status: int) -> None:
        """Record the outcome once (later calls are ignored)."""
        with self._lock:
            if self.status is not None:
                return
            self.status, self.t_end = status, time.monotonic()
        self.on_finish(self)

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400

    @property
    def ttft_ms(self) -> Optional[float]:
        return (self.t_first - self.t0) * 1000.0 if self.t_first is not None else None

    @property
    def turnaround_ms(self) -> float:
        return ((self.t_end or time.monotonic()) - self.t0) * 1000.0

    def usage(self) -> Dict[str, Any]:
        return response_usage(self.gens, self.prompts) if self.gens else {"prompt_tokens": 0, "completion_tokens": 0}

    def decode_tps(self) -> Optional[float]:
        rates = [g.timings.get("decode_tokens_per_s", 0.0) for g in self.gens]
        rates = [r for r in rates if r > 0]
        return sum(rates) / len(rates) if rates else None


class _Totals:
    def __init__(self) -> None:
        self.completed = self.failed = self.active = 0
        self.input_tokens = self.output_tokens = 0
        self.first_start: Optional[float] = None
        self._sums: Dict[str, List[float]] = {"tps": [0.0, 0], "output_tps": [0.0, 0], "ttft_ms": [0.0, 0],
                                              "turnaround_time_ms": [0.0, 0]}

    def _add(self, key: str, value: Optional[float]) -> None:
        if value is not None:
            self._sums[key][0] += value
            self._sums[key][1] += 1

    def _avg(self, key: str) -> Optional[float]:
        total, n = self._sums[key]
        return round(total / n, 3) if n else None

    def begin(self, t0: float) -> None:
        if self.first_start is None or t0 < self.first_start:
            self.first_start = t0

    def add(self, track: RequestTrack) -> None:
        if not track.ok:
            self.failed += 1
            return
        self.completed += 1
        u = track.usage()
        n_in, n_out = int(u["prompt_tokens"]), int(u["completion_tokens"])
        self.input_tokens += n_in
        self.output_tokens += n_out
        seconds = track.turnaround_ms / 1000.0
        self._add("tps", (n_in + n_out) / seconds if seconds > 0 else None)
        self._add("output_tps", track.decode_tps())
        self._add("ttft_ms", track.ttft_ms)
        self._add("turnaround_time_ms", track.turnaround_ms)

    def figures(self, now: float) -> Dict[str, Any]:
        total = self.completed + self.failed
        elapsed = now - self.first_start if self.first_start is not None else 0.0
        return {
            "total_requests": total,
            "completed_requests": self.completed,
            "failed_requests": self.failed,
            "success_rate_percent": round(self.completed * 100.0 / total, 3) if total else None,
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "avg_tps": self._avg("tps"),
            "avg_output_tps": self._avg("output_tps"),
            "avg_ttft_ms": self._avg("ttft_ms"),
            "avg_rps": round(total / elapsed, 4) if total and elapsed > 0 else None,
            "avg_turnaround_time_ms": self._avg("turnaround_time_ms"),
        }


class CompletionStats:
    """Totals overall and per engine id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = _Totals()
        self._engines: Dict[str, _Totals] = {}

    def started(self, track: RequestTrack) -> None:
        with self._lock:
            self._all.begin(track.t0)
            self._all.active += 1

    def engine_known(self, track: RequestTrack) -> None:
        with self._lock:
            t = self._engines.setdefault(track.engine_id or "", _Totals())
            t.begin(track.t0)
            t.active += 1

    def finished(self, track: RequestTrack) -> None:
        with self._lock:
            self._all.active -= 1
            self._all.add(track)
            if track.engine_id is not None:
                t = self._engines[track.engine_id]
                t.active -= 1
                t.add(track)

    def summary(self) -> Dict[str, Any]:
        with self._lock:
            return self._all.figures(time.monotonic())

    def active(self) -> Dict[str, int]:
        with self._lock:
            return {"all": self._all.active, **{k: t.active for k, t in self._engines.items()}}

    def per_engine(self) -> Dict[str, Dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return {k: t.figures(now) for k, t in self._engines.items()}

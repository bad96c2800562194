"""``Monitoring``: the per-app monitoring state, and the request hooks that
account generation requests (``g.completion_track``) and count every request.

A Flask extension: ``Monitoring(state).init_app(app)`` keeps it in
``app.extensions``. A request is a generation request when its view was
declared with ``api_route(..., generation=...)``; the metrics endpoints are
registered by the routes package, which reads this object through
``get_monitoring``."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from flask import Flask, Response, g, request

import kolosal

from ..models.registry import LOADED, EngineRecord
from ..openapi import route_spec
from ..state import ServerState
from .completions import CompletionStats, RequestTrack
from .prometheus import PrometheusMetrics
from .system import shared_sampler

EXT = "kolosal_monitoring"
log = logging.getLogger("kolosal.server.monitoring")


def timer_stats(stats: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    return {name: {"count": t.count, "total_ms": t.total_ms, "min_ms": t.min_ms, "max_ms": t.max_ms,
                   "mean_ms": t.mean_ms} for name, t in sorted(stats.items())}


class Monitoring:
    def __init__(self, state: ServerState, app: Optional[Flask] = None) -> None:
        self.state = state
        self.system = shared_sampler()
        self.completions = CompletionStats()
        self.profiler = kolosal.Profiler()  # the server's own timers (HTTP serialization)
        self.prometheus = PrometheusMetrics(self)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Keep this object in ``app.extensions``; add the hooks that count
        every request and account generation requests, and a timer around
        JSON serialization."""
        app.extensions[EXT] = self
        app.before_request(self._begin)
        app.after_request(self._count)
        app.teardown_request(self._unfinished)
        dumps = app.json.dumps

        def timed_dumps(obj: Any, **kwargs: Any) -> str:
            t0 = time.perf_counter()
            out = dumps(obj, **kwargs)
            ms = (time.perf_counter() - t0) * 1000.0
            self.profiler.record("http_serialize", ms)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Timer http_serialize: %.3f ms", ms, extra={"timer": "http_serialize", "ms": round(ms, 3)})
            return out

        app.json.dumps = timed_dumps  # type: ignore[method-assign]

    # -- request hooks --------------------------------------------------------
    def _begin(self) -> None:
        spec = route_spec(request.endpoint)
        if spec is not None and spec.generation:
            g.completion_track = self.begin(_endpoint_label())

    def _count(self, resp: Response) -> Response:
        track = current_track()
        if track is None:
            self.prometheus.requests.labels("none", _endpoint_label(), str(resp.status_code)).inc()
        elif not (track.streaming and resp.status_code == 200):
            track.finish(resp.status_code)  # a stream records itself when it ends
        return resp

    @staticmethod
    def _unfinished(exc: Optional[BaseException]) -> None:
        track = current_track()
        if track is not None and not track.streaming:
            track.finish(500)  # no-op when after_request recorded it

    # -- generation requests --------------------------------------------------
    def begin(self, endpoint: str) -> RequestTrack:
        track = RequestTrack(endpoint, on_finish=self._finished, on_engine=self.completions.engine_known)
        self.completions.started(track)
        return track

    def _finished(self, track: RequestTrack) -> None:
        self.completions.finished(track)
        engine = track.engine_id or "none"
        self.prometheus.requests.labels(engine, track.endpoint, str(track.status)).inc()
        if not track.ok:
            return
        self.prometheus.inference.labels(engine).observe(track.turnaround_ms / 1000.0)
        if track.ttft_ms is not None:
            self.prometheus.ttft.labels(engine).observe(track.ttft_ms / 1000.0)
        if log.isEnabledFor(logging.DEBUG):
            u = track.usage()
            timers = {"request": track.turnaround_ms, "ttft": track.ttft_ms}
            for i, gen in enumerate(track.gens):
                t = gen.timings
                timers.update({f"queue[{i}]": t.get("queue_ms"), f"prefill[{i}]": t.get("prompt_ms"),
                               f"decode[{i}]": t.get("decode_ms")})
            for name, ms in timers.items():
                if ms is not None:
                    log.debug("Timer %s: %.2f ms", name, ms, extra={"timer": name, "ms": round(ms, 3),
                                                                   "engine": engine})
            log.debug("completion finished", extra={"engine": engine, "endpoint": track.endpoint,
                                                    "input_tokens": u["prompt_tokens"],
                                                    "output_tokens": u["completion_tokens"],
                                                    "ttft_ms": track.ttft_ms, "total_time_ms": track.turnaround_ms,
                                                    "success": True})

    # -- engines --------------------------------------------------------------
    def engine_views(self) -> Iterator[Tuple[EngineRecord, Optional[Dict[str, int]], Optional[Dict[str, Any]]]]:
        """(record, engine.stats() or None, profiler timers or None) per registered engine."""
        for rec in self.state.registry.records():
            eng = rec.engine
            if rec.state != LOADED or eng is None:
                yield rec, None, None
                continue
            try:
                yield rec, eng.stats(), timer_stats(eng.profiler.stats())
            except kolosal.errors.EngineClosedError:
                yield rec, None, None

    def profile(self) -> Dict[str, Any]:
        return {"engines": {rec.engine_id: timers for rec, _, timers in self.engine_views() if timers is not None},
                "server": timer_stats(self.profiler.stats())}

    def completion_report(self) -> Dict[str, Any]:
        active = self.completions.active()
        per = self.completions.per_engine()
        engines: List[Dict[str, Any]] = []
        seen = set()
        for rec, stats, _ in self.engine_views():
            seen.add(rec.engine_id)
            engines.append(self._engine_entry(rec.engine_id, rec.state, per.get(rec.engine_id), stats,
                                              active.get(rec.engine_id, 0)))
        for engine_id, fig in per.items():  # engines removed since
            if engine_id not in seen:
                engines.append(self._engine_entry(engine_id, "removed", fig, None, active.get(engine_id, 0)))
        queued = sum(e["queued_requests"] or 0 for e in engines)
        return {"completion_metrics": {
            "summary": self.completions.summary(),
            "per_engine": engines,
            "server": {"active_requests": self.state.inflight, "active_generation_requests": active["all"],
                       "queued_requests": queued},
            "timestamp": time.time(),
        }}

    @staticmethod
    def _engine_entry(engine_id: str, status: str, fig: Optional[Dict[str, Any]], stats: Optional[Dict[str, int]],
                      active: int) -> Dict[str, Any]:
        if fig is None:
            fig = CompletionStats().summary()
        return {"engine_id": engine_id, "status": status, **fig, "active_requests": active,
                "queued_requests": stats["queued"] if stats else None,
                "slots_busy": stats["slots_busy"] if stats else None,
                "slots_total": stats["n_slots"] if stats else None,
                "prompt_cache_hit_tokens": stats["cached_tokens"] if stats else None,
                "prompt_cache_bytes": stats.get("prompt_cache_bytes", 0) if stats else None,
                **_speculation(stats)}


def _speculation(stats: Optional[Dict[str, int]]) -> Dict[str, Any]:
    """Speculative decoding counters and the share of proposed tokens accepted (None before any)."""
    drafted = int(stats.get("spec_draft_tokens", 0)) if stats else 0
    accepted = int(stats.get("spec_accepted_tokens", 0)) if stats else 0
    return {"spec_draft_tokens": drafted, "spec_accepted_tokens": accepted,
            "spec_acceptance_rate": accepted / drafted if drafted else None}


def get_monitoring(app: Flask) -> Monitoring:
    return app.extensions[EXT]


def current_track() -> Optional[RequestTrack]:
    """The generation request being served, if monitoring is on."""
    return g.get("completion_track") if g else None


def _endpoint_label() -> str:
    """The declared rule of the matched view, without ``/v1`` (``/chat/completions``), or ``unmatched``."""
    spec = route_spec(request.endpoint)
    if spec is not None and spec.rule:
        return spec.rule
    return request.url_rule.rule if request.url_rule is not None else "unmatched"

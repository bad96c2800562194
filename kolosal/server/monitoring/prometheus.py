"""Prometheus metrics on a per-app CollectorRegistry.

Events (requests, durations, TTFT) feed counters and histograms as they
happen; everything else (host, engines, completion figures, profiler) is read
when scraped, from the same sources the JSON endpoints use."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ..models.registry import FAILED, LOADED, LOADING, REGISTERED, UNLOADING

if TYPE_CHECKING:
    from .monitor import Monitoring

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PrometheusMetrics:
    def __init__(self, monitoring: "Monitoring") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("kolosal_requests_total", "HTTP requests by engine, endpoint and status",
                                ["engine", "endpoint", "status"], registry=self.registry)
        self.inference = Histogram("kolosal_inference_duration_seconds",
                                   "Turnaround of completed generation requests", ["engine"],
                                   buckets=_SECONDS, registry=self.registry)
        self.ttft = Histogram("kolosal_completion_ttft_seconds", "Time to first token of completed requests",
                              ["engine"], buckets=_TTFT, registry=self.registry)
        self.registry.register(_ScrapeCollector(monitoring))

    def expose(self, accept: Optional[str]) -> Tuple[bytes, str]:
        """The exposition in the format ``accept`` prefers (OpenMetrics or text 0.0.4)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _gauge(name: str, doc: str, labels: Tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class _ScrapeCollector:
    def __init__(self, monitoring: "Monitoring") -> None:
        self.m = monitoring

    def collect(self) -> Iterator[Metric]:
        yield from self._system()
        yield from self._engines()
        yield from self._completions()

    def _system(self) -> Iterator[Metric]:
        snap = self.m.system.snapshot()
        cpu = _gauge("kolosal_cpu_usage_percent", "Host CPU usage, percent")
        if snap["cpu"]["usage_percent"] is not None:
            cpu.add_metric([], snap["cpu"]["usage_percent"])
        mem = snap["memory"]
        used = _gauge("kolosal_memory_used_bytes", "Host RAM in use (total - available)")
        used.add_metric([], mem["used_bytes"])
        total = _gauge("kolosal_memory_total_bytes", "Host RAM")
        total.add_metric([], mem["total_bytes"])
        util = _gauge("kolosal_memory_utilization_percent", "Host RAM in use, percent")
        if mem["utilization_percent"] is not None:
            util.add_metric([], mem["utilization_percent"])
        avail = _gauge("kolosal_gpu_monitoring_available", "1 when NVML reports GPUs")
        avail.add_metric([], 1.0 if snap["gpu_monitoring_available"] else 0.0)
        yield from (cpu, used, total, util, avail)
        gpu_families = {
            "gpu_percent": _gauge("kolosal_gpu_utilization_percent", "GPU busy, percent", ("gpu_id",)),
            "used_bytes": _gauge("kolosal_gpu_memory_used_bytes", "GPU memory in use", ("gpu_id",)),
            "total_bytes": _gauge("kolosal_gpu_memory_total_bytes", "GPU memory", ("gpu_id",)),
            "temperature_celsius": _gauge("kolosal_gpu_temperature_celsius", "GPU temperature", ("gpu_id",)),
            "power_usage_watts": _gauge("kolosal_gpu_power_usage_watts", "GPU power draw", ("gpu_id",)),
        }
        for g in snap["gpus"]:
            values = {"gpu_percent": g["utilization"]["gpu_percent"], "used_bytes": g["memory"]["used_bytes"],
                      "total_bytes": g["memory"]["total_bytes"], "temperature_celsius": g["temperature_celsius"],
                      "power_usage_watts": g["power_usage_watts"]}
            for key, value in values.items():
                if value is not None:
                    gpu_families[key].add_metric([str(g["id"])], value)
        yield from gpu_families.values()

    def _engines(self) -> Iterator[Metric]:
        active = _gauge("kolosal_active_requests", "Requests being served (generation and other work)")
        active.add_metric([], self.m.state.inflight)
        yield active
        state = _gauge("kolosal_engine_state", "1 for the engine's current load state", ("engine", "state"))
        progress = _gauge("kolosal_model_load_progress", "Share of the model's weights read: 0..1 while loading, "
                          "1 once loaded", ("engine",))
        queued = _gauge("kolosal_queued_requests", "Generations waiting for a slot", ("engine",))
        busy = _gauge("kolosal_slots_busy", "Slots generating", ("engine",))
        slots = _gauge("kolosal_slots_total", "Slots (parallel sequences)", ("engine",))
        cache_bytes = _gauge("kolosal_prompt_cache_bytes", "Host memory held by saved prompt states", ("engine",))
        cached = CounterMetricFamily("kolosal_prompt_cache_hit_tokens", "Prompt tokens reused from the KV cache",
                                     labels=["engine"])
        drafted = CounterMetricFamily("kolosal_spec_draft_tokens", "Tokens proposed by speculative decoding",
                                      labels=["engine"])
        accepted = CounterMetricFamily("kolosal_spec_accepted_tokens",
                                       "Proposed tokens the model accepted (speculative decoding)", labels=["engine"])
        prof_s = CounterMetricFamily("kolosal_profile_seconds", "Time in each profiled phase", labels=["engine", "timer"])
        prof_n = CounterMetricFamily("kolosal_profile_calls", "Calls of each profiled phase", labels=["engine", "timer"])
        for rec, stats, timers in self.m.engine_views():
            for s in (REGISTERED, LOADING, LOADED, UNLOADING, FAILED):
                state.add_metric([rec.engine_id, s], 1.0 if rec.state == s else 0.0)
            if rec.progress is not None:
                progress.add_metric([rec.engine_id], rec.progress)
            if stats is not None:
                queued.add_metric([rec.engine_id], stats["queued"])
                busy.add_metric([rec.engine_id], stats["slots_busy"])
                slots.add_metric([rec.engine_id], stats["n_slots"])
                cached.add_metric([rec.engine_id], stats["cached_tokens"])
                cache_bytes.add_metric([rec.engine_id], stats.get("prompt_cache_bytes", 0))
                drafted.add_metric([rec.engine_id], stats.get("spec_draft_tokens", 0))
                accepted.add_metric([rec.engine_id], stats.get("spec_accepted_tokens", 0))
            for name, t in (timers or {}).items():
                prof_s.add_metric([rec.engine_id, name], t["total_ms"] / 1000.0)
                prof_n.add_metric([rec.engine_id, name], t["count"])
        yield from (state, progress, queued, busy, slots, cached, cache_bytes, drafted, accepted, prof_s, prof_n)
        c = self.m.state.registry.counters
        for name, value, doc in (("kolosal_model_loads", c.loads, "Models loaded"),
                                 ("kolosal_model_load_failures", c.load_failures, "Model loads that failed"),
                                 ("kolosal_model_unloads", c.unloads, "Models unloaded (any reason)"),
                                 ("kolosal_model_evictions", c.evictions, "Models unloaded to make room"),
                                 ("kolosal_model_idle_unloads", c.idle_unloads, "Models unloaded after keep_alive"),
                                 ("kolosal_model_load_seconds", c.load_seconds_total, "Time spent loading models")):
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam

    def _completions(self) -> Iterator[Metric]:
        fams = {
            "avg_tps": _gauge("kolosal_completion_tps", "Average (input + output) tokens per second per request",
                              ("engine",)),
            "avg_output_tps": _gauge("kolosal_completion_output_tps", "Average decode tokens per second",
                                     ("engine",)),
            "avg_ttft_ms": _gauge("kolosal_completion_ttft_ms", "Average time to first token, ms", ("engine",)),
            "success_rate_percent": _gauge("kolosal_completion_success_rate",
                                           "Completed / finished generation requests, percent", ("engine",)),
            "avg_turnaround_time_ms": _gauge("kolosal_completion_turnaround_ms", "Average turnaround, ms",
                                             ("engine",)),
        }
        tokens_in = CounterMetricFamily("kolosal_input_tokens", "Prompt tokens of completed requests",
                                        labels=["engine"])
        tokens_out = CounterMetricFamily("kolosal_output_tokens", "Generated tokens of completed requests",
                                         labels=["engine"])
        for engine_id, fig in self.m.completions.per_engine().items():
            for key, fam in fams.items():
                if fig[key] is not None:
                    fam.add_metric([engine_id], fig[key])
            tokens_in.add_metric([engine_id], fig["total_input_tokens"])
            tokens_out.add_metric([engine_id], fig["total_output_tokens"])
        yield from fams.values()
        yield from (tokens_in, tokens_out)

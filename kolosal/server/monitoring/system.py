"""Host figures (CPU, RAM, GPUs) sampled by one background thread per process.

``psutil.cpu_percent`` needs an interval to measure over; the thread takes
it, so reading a snapshot never waits. Until the first interval has passed
the CPU figure is None."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional

import psutil

from .gpu import NvmlReader


def _mean(values: List[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 2) if known else None


class SystemSampler:
    def __init__(self, period: float = 2.0) -> None:
        self.period = period
        self._cpu: Optional[float] = None
        self._gpus: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._nvml: Optional[NvmlReader] = None
        self._thread = threading.Thread(target=self._run, name="kolosal-system-sampler", daemon=True)

    def start(self) -> "SystemSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def gpu_monitoring_available(self) -> bool:
        """False until NVML has answered (milliseconds after start), never waits."""
        return bool(self._nvml and self._nvml.available)

    def _run(self) -> None:
        psutil.cpu_percent(interval=None)  # starts the first interval
        self._nvml = NvmlReader()
        wait = 1.0
        while not self._stop.wait(wait):
            cpu = psutil.cpu_percent(interval=None)
            gpus = self._nvml.read()
            with self._lock:
                self._cpu, self._gpus = cpu, gpus
            wait = self.period

    def snapshot(self) -> Dict[str, Any]:
        """The JSON shape of ``GET /metrics``."""
        with self._lock:
            cpu, gpus = self._cpu, [dict(g) for g in self._gpus]
        vm = psutil.virtual_memory()
        used = vm.total - vm.available
        vram = [g["memory"]["used_bytes"] * 100.0 / g["memory"]["total_bytes"]
                if g["memory"]["used_bytes"] is not None and g["memory"]["total_bytes"] else None for g in gpus]
        ram_pct = round(used * 100.0 / vm.total, 2) if vm.total else None
        return {
            "timestamp": time.time(),
            "cpu": {"usage_percent": cpu},
            "memory": {"total_bytes": vm.total, "used_bytes": used, "free_bytes": vm.available,
                       "utilization_percent": ram_pct},
            "gpus": gpus,
            "gpu_monitoring_available": self.gpu_monitoring_available,
            "summary": {
                "cpu_usage_percent": cpu,
                "ram_utilization_percent": ram_pct,
                "gpu_count": len(gpus),
                "average_gpu_utilization_percent": _mean([g["utilization"]["gpu_percent"] for g in gpus]),
                "average_vram_utilization_percent": _mean(vram),
            },
        }


_shared: Optional[SystemSampler] = None
_shared_lock = threading.Lock()


def shared_sampler() -> SystemSampler:
    """The process' sampler (host figures are the same for every app)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SystemSampler().start()
        return _shared

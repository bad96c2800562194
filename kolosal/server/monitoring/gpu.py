"""NVIDIA GPUs through NVML (the nvidia-ml-py package, imported as pynvml).

Without the package, the driver or a GPU, ``NvmlReader.available`` is False
and ``read()`` returns ``[]``; a figure a device does not report is None."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger("kolosal.server.monitoring")


def _maybe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # NVMLError_NotSupported and friends: unknown, not zero
        return None


class NvmlReader:
    def __init__(self) -> None:
        self._nvml: Any = None
        self._lock = threading.Lock()
        self.available = False
        self.reason: Optional[str] = None
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            pynvml.nvmlDeviceGetCount()
        except Exception as e:
            self.reason = f"NVML unavailable: {e}"
            log.info("GPU monitoring off: %s", self.reason)
            return
        self._nvml = pynvml
        self.available = True

    def read(self) -> List[Dict[str, Any]]:
        if not self.available:
            return []
        nv = self._nvml
        with self._lock:
            try:
                count = nv.nvmlDeviceGetCount()
            except Exception:
                return []
            return [self._device(nv, i) for i in range(count)]

    @staticmethod
    def _device(nv: Any, i: int) -> Dict[str, Any]:
        h = nv.nvmlDeviceGetHandleByIndex(i)
        name = _maybe(lambda: nv.nvmlDeviceGetName(h))
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        util = _maybe(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = _maybe(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        temp = _maybe(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        power_mw = _maybe(lambda: nv.nvmlDeviceGetPowerUsage(h))
        return {
            "id": i,
            "name": name,
            "utilization": {"gpu_percent": float(util.gpu) if util else None,
                            "memory_percent": float(util.memory) if util else None},
            "memory": {"total_bytes": int(mem.total) if mem else None, "used_bytes": int(mem.used) if mem else None,
                       "free_bytes": int(mem.free) if mem else None},
            "temperature_celsius": float(temp) if temp is not None else None,
            "power_usage_watts": power_mw / 1000.0 if power_mw is not None else None,
        }

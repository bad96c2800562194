"""The NVML reader, with a stand-in pynvml module (no GPU on the test machine):
fields map to the JSON shape, unsupported readings become None, and a
missing driver turns GPU monitoring off instead of failing."""
from __future__ import annotations

import sys
import types
from collections import namedtuple

from kolosal.server.monitoring.gpu import NvmlReader

Util = namedtuple("Util", "gpu memory")
Mem = namedtuple("Mem", "total used free")


class NotSupported(Exception):
    pass


def fake_pynvml(init_error: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU = 0

    def init() -> None:
        if init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    def unsupported(*_):  # type: ignore[no-untyped-def]
        raise NotSupported()

    m.nvmlInit = init
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"GPU A" if h == 0 else "GPU B"
    m.nvmlDeviceGetUtilizationRates = lambda h: Util(87, 40)
    m.nvmlDeviceGetMemoryInfo = lambda h: Mem(80 * 2**30, 20 * 2**30, 60 * 2**30)
    m.nvmlDeviceGetTemperature = lambda h, kind: 61
    m.nvmlDeviceGetPowerUsage = lambda h: 210500 if h == 0 else unsupported()
    return m


def test_devices_map_to_the_json_shape(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    reader = NvmlReader()
    assert reader.available
    a, b = reader.read()
    assert a == {"id": 0, "name": "GPU A", "utilization": {"gpu_percent": 87.0, "memory_percent": 40.0},
                 "memory": {"total_bytes": 80 * 2**30, "used_bytes": 20 * 2**30, "free_bytes": 60 * 2**30},
                 "temperature_celsius": 61.0, "power_usage_watts": 210.5}
    assert b["name"] == "GPU B" and b["power_usage_watts"] is None  # not reported, not invented


def test_no_driver_means_monitoring_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    reader = NvmlReader()
    assert not reader.available and reader.read() == [] and "NVML" in (reader.reason or "")


def test_no_package_means_monitoring_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    reader = NvmlReader()
    assert not reader.available and reader.read() == []


def test_summary_averages_known_gpu_values(monkeypatch):
    from kolosal.server.monitoring.system import SystemSampler

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    sampler = SystemSampler()  # not started: fed by hand
    sampler._nvml = NvmlReader()
    gpus = sampler._nvml.read()
    gpus[1]["utilization"] = {"gpu_percent": None, "memory_percent": None}
    sampler._gpus = gpus
    snap = sampler.snapshot()
    assert snap["gpu_monitoring_available"] and snap["summary"]["gpu_count"] == 2
    assert snap["summary"]["average_gpu_utilization_percent"] == 87.0  # the unknown one is left out
    assert snap["summary"]["average_vram_utilization_percent"] == 25.0

"""Kolosal: llama.cpp inference with continuous batching and an OpenAI-compatible server."""
from __future__ import annotations

import json as _json
import re as _re
from typing import Any, Dict

from . import errors

try:
    from ._native import __version__ as _native_version
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    if _exc.name != __name__ + "._native":
        raise
    import os as _os

    raise ImportError(
        "kolosal's native extension (kolosal._native) is not next to the package imported from "
        f"{_os.path.dirname(__file__)}. If this is the source tree and kolosal is installed with "
        "`pip install .`, the source tree shadows the installed package: run from another directory. "
        "To work from the source tree, install it in editable mode: "
        "`pip install --no-build-isolation -e .` (scripts/setup-env.sh does this)."
    ) from None

from . import _native
from ._native import MemoryManager, Profiler
from .engine import ChatCompletion, ChatGeneration, Completion, Engine, Generation, TokenLogprob

__version__ = _native_version

__all__ = [
    "__version__",
    "build_info",
    "set_log_level",
    "Engine",
    "Generation",
    "ChatGeneration",
    "Completion",
    "ChatCompletion",
    "TokenLogprob",
    "MemoryManager",
    "Profiler",
    "errors",
]

_LOG_LEVELS = {"debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4, "none": 5, "off": 5}


def build_info() -> Dict[str, Any]:
    """Version, llama.cpp commit, compiled backends and devices, CPU features,
    and which CPU kernels kolosal uses in place of llama.cpp's."""
    info = _json.loads(_native.build_info_json())
    info["version"] = __version__
    info["cpu_features"] = _re.findall(r"(\w+) = 1", info.get("system_info", ""))
    info["cpu_kernels"] = _native.cpu_kernels()
    return info


def set_log_level(level: str) -> None:
    """Threshold for llama.cpp's own log output (default ``warn``)."""
    try:
        _native.set_log_level(_LOG_LEVELS[level.lower()])
    except KeyError:
        raise errors.InvalidParameterError(f"unknown log level '{level}'", param="level") from None


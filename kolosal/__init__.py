"""Kolosal: llama.cpp inference with continuous batching and an OpenAI-compatible server."""
from __future__ import annotations

import json as _json
import re as _re
from typing import Any, Dict

from . import errors
from ._native import MemoryManager, Profiler
from ._native import __version__ as _native_version
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
    """Version, llama.cpp commit, compiled backends and devices, CPU features."""
    info = _json.loads(_native.build_info_json())
    info["version"] = __version__
    info["cpu_features"] = _re.findall(r"(\w+) = 1", info.get("system_info", ""))
    return info


def set_log_level(level: str) -> None:
    """Threshold for llama.cpp's own log output (default ``warn``)."""
    try:
        _native.set_log_level(_LOG_LEVELS[level.lower()])
    except KeyError:
        raise errors.InvalidParameterError(f"unknown log level '{level}'", param="level") from None


from . import _native  # noqa: E402  (kept last: used lazily above)

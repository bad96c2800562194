"""Ollama's per-request ``keep_alive``: its durations, and what it does to the
model once the answer is sent (kept on the model's record, which the
registry's idle unloading reads)."""
from __future__ import annotations

import re
import time
from typing import Any, Optional

from ..errors import ApiError
from ..state import ServerState


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> Optional[float]:
    """``keep_alive`` in seconds: a number of seconds or a duration (``"5m"``,
    ``"1h30m"``, ``"0"``); negative: as long as the server's policy allows; None: not given."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION.findall(body)
    if not parts or "".join(a + u for a, u in parts) != body:
        raise ApiError(400, f"Invalid value for 'keep_alive': '{value}' is not a duration (e.g. \"5m\", \"1h\", "
                            f"\"30s\", 0, -1).", param="keep_alive", code="invalid_value")
    return sign * sum(float(a) * _UNIT[u] for a, u in parts)


def keep_alive_after(state: ServerState, engine_id: str, seconds: Optional[float]) -> None:
    """Per-request ``keep_alive``, once the answer is sent: kept on the model's
    record (``EngineRecord.keep_alive``), which the registry's idle unloading
    reads (``models/upkeep.py``, with or without ``inference.keep_alive_seconds``):
    the model is unloaded after that many idle seconds from now (0: at once)
    unless a later request uses it meanwhile; negative: never unloaded for
    being idle. A request without ``keep_alive`` returns the model to the server's policy."""
    registry = state.registry
    try:
        rec = registry.record(engine_id)
    except ApiError:
        return  # removed meanwhile
    rec.keep_alive = seconds
    if seconds is None or seconds < 0:
        return
    if seconds == 0:
        registry.unload_if_idle(rec, None, why="keep_alive 0")
        return
    rec.last_used = max(rec.last_used or 0.0, time.time())  # idle from the end of this answer
    registry.upkeep.wake()

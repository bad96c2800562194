"""GET /health: ok / loading / draining / error, with each engine's state."""
from __future__ import annotations

import time
from typing import Any, Dict

from flask import Blueprint, jsonify

from .._version import server_version
from ..openapi import api_route
from ..models.registry import FAILED, LOADED, LOADING, REGISTERED, EngineRecord
from ..process import process_status
from ..protocol.admin import HealthResponse, ProcessStatus
from ..state import get_state

bp = Blueprint("health", __name__)


@api_route(bp, "/health", ["GET"], summary="Liveness and readiness (503 unless ok)", response_model=HealthResponse,
           auth="health", limit=None)
def health():  # type: ignore[no-untyped-def]
    state = get_state()
    states = [r.state for r in state.registry.records()]
    if state.draining or state.stopping:
        status = "draining"
    elif LOADING in states and LOADED not in states:
        status = "loading"
    elif states and all(s in (FAILED, REGISTERED) for s in states) and FAILED in states:
        status = "error"
    else:
        status = "ok"
    body = HealthResponse(status=status, version=server_version(),
                          uptime_seconds=round(time.monotonic() - state.started, 3), active_requests=state.inflight,
                          engines=[_engine_health(r) for r in state.registry.records()],
                          process=ProcessStatus(**process_status(state.config.server)))
    resp = jsonify(body.wire())
    resp.status_code = 200 if status == "ok" else 503
    return resp


def _engine_health(rec: EngineRecord) -> Dict[str, Any]:
    """An engine's state; with ``progress`` (0..1) while it loads."""
    out = {"engine_id": rec.engine_id, "status": rec.state}
    if rec.state == LOADING:
        out["progress"] = round(rec.progress or 0.0, 4)
    return out

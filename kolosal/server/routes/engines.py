"""Engine management: list, create (load), status, delete."""
from __future__ import annotations

import os
from typing import Any, Dict

from flask import Blueprint, current_app, jsonify

from ..errors import REDACT, ApiError
from ..models.paths import resolve_model_path
from ..openapi import api_route, parse_body
from ..security import security_of
from ..protocol.admin import CreateEngineRequest, EngineDeleted, EngineInfo, EngineList
from ..state import get_state

bp = Blueprint("engines", __name__)


@api_route(bp, "/engines", ["GET"], summary="List engines", response_model=EngineList)
def list_engines():  # type: ignore[no-untyped-def]
    return jsonify(EngineList(engines=[_shown(r.describe()) for r in get_state().registry.records()]).wire())


@api_route(bp, "/engines", ["POST"], summary="Register (and by default load) an engine", request_model=CreateEngineRequest,
           response_model=EngineInfo, status=201, auth="admin")
def create_engine():  # type: ignore[no-untyped-def]
    state = get_state()
    req: CreateEngineRequest = parse_body(CreateEngineRequest)
    if state.draining:
        raise ApiError(503, "The server is shutting down.", code="server_draining")
    path = resolve_model_path(req.model_path, security_of(current_app).model_dirs)
    if not os.path.isfile(path):
        raise ApiError(404, f"model file not found: {req.model_path}", param="model_path", code="model_not_found")
    cfg = state.config.inference
    params = {"n_ctx": cfg.default_context_size, "n_gpu_layers": cfg.default_gpu_layers,
              "n_parallel": cfg.default_parallel}
    if req.main_gpu_id is not None:
        params["main_gpu"] = req.main_gpu_id
    for adapter in req.loading_parameters.lora or []:  # adapter and draft model files: under the model directories too
        adapter.path = resolve_model_path(adapter.path, security_of(current_app).model_dirs)
    if req.loading_parameters.draft_model:
        req.loading_parameters.draft_model = resolve_model_path(req.loading_parameters.draft_model,
                                                                security_of(current_app).model_dirs)
    params.update(req.loading_parameters.engine_kwargs())
    if req.replace and req.engine_id in {r.engine_id for r in state.registry.records()}:
        # Hot reload: running requests finish on the old model, new ones get the new one.
        try:
            rec = state.registry.replace(req.engine_id, path, params)
        except ApiError:  # e.g. insufficient_memory: already an HTTP error
            raise
        except Exception as e:
            raise ApiError(422, f"the new model could not be loaded (the old one keeps serving): {e}",
                           param="model_path", code="model_load_failed") from None
        return jsonify(EngineInfo.model_validate(rec.describe(detail=True)).wire())
    rec = state.registry.add(req.engine_id, path, params, req.priority, req.sha256, req.pinned)
    if req.load_immediately:
        try:
            state.registry.load(rec)
        except ApiError:
            state.registry.remove(req.engine_id)
            raise
        except Exception as e:
            code = rec.error_code or "model_load_failed"
            state.registry.remove(req.engine_id)
            raise ApiError(422, f"the model could not be loaded: {e}", param="model_path", code=code) from None
    resp = jsonify(EngineInfo.model_validate(rec.describe(detail=True)).wire())
    resp.status_code = 201
    return resp


@api_route(bp, "/engines/<path:engine_id>/status", ["GET"], summary="Engine state, metadata and slot statistics",
           response_model=EngineInfo)
def engine_status(engine_id: str):  # type: ignore[no-untyped-def]
    rec = _record(engine_id)
    return jsonify(EngineInfo.model_validate(_shown(rec.describe(detail=True))).wire())


@api_route(bp, "/engines/<path:engine_id>", ["DELETE"], summary="Unload and remove an engine",
           response_model=EngineDeleted, auth="admin")
def delete_engine(engine_id: str):  # type: ignore[no-untyped-def]
    _record(engine_id)
    get_state().registry.remove(engine_id)
    return jsonify(EngineDeleted(engine_id=engine_id).wire())


def _shown(info: Dict[str, Any]) -> Dict[str, Any]:
    """File paths (in ``model_path`` and load errors) for admin keys only; others see file names."""
    if not security_of(current_app).is_admin():
        info["model_path"] = os.path.basename(info["model_path"])
        if info.get("error"):
            info["error"] = current_app.extensions[REDACT](info["error"])
    return info


def _record(engine_id: str):  # type: ignore[no-untyped-def]
    try:
        return get_state().registry.record(engine_id)
    except ApiError as e:
        raise ApiError(404, f"engine '{engine_id}' does not exist", param="engine_id",
                       code="engine_not_found") from e

"""llama-server's own endpoints, for clients written against llama.cpp's
server: ``POST /completion``, ``GET /props``, ``GET /slots`` (admin keys only) and ``POST /apply-template``.
``/tokenize`` and ``/detokenize`` are in ``routes.tokenize``.

``/completion`` is left out of ``/openapi.json``: its fields are llama-server's
(docs/server.md lists them); the others are in it. ``?model=`` (or the
body's ``model``) names the model; without it, the
server's default model or else the first loaded one."""
from __future__ import annotations

from typing import Optional, Tuple

from flask import Blueprint, current_app, jsonify, request

from kolosal.engine import Engine
from kolosal.errors import EngineClosedError

from ..errors import ApiError
from ..models.registry import EngineRecord
from ..openapi import api_route, parse_body
from ..protocol.llama_server import (ApplyTemplateRequest, ApplyTemplateResponse, LlamaCompletionRequest,
                                     LlamaCompletionResponse, PropsResponse, SlotList)
from ..security import security_of
from ..serving.llama_server import apply_template, model_name, props, slots, start_llama_completion
from ..state import get_state
from .openai.common import admit, resolve_model, watch
from .sse import data_events, sse_response

bp = Blueprint("llama_server", __name__)


def _engine(name: Optional[str]) -> Tuple[Engine, Optional[EngineRecord]]:
    state = get_state()
    name = model_name(state, name)
    try:
        engine = state.registry.engine(resolve_model(state, name) if name else None)
    except ApiError as e:
        if e.status == 404:
            raise ApiError(404, e.message, param="model", code=e.code) from None
        raise
    try:
        rec = state.registry.record(engine.model_id)
    except ApiError:
        rec = None
    return engine, rec


@api_route(bp, "/completion", ["POST"], summary="Text completion in llama-server's shape (\"stream\": true for "
                                                "data: chunks)", request_model=LlamaCompletionRequest,
           response_model=LlamaCompletionResponse, streams=LlamaCompletionResponse, generation="completion",
           listed=False)
def completion():  # type: ignore[no-untyped-def]
    state = get_state()
    req: LlamaCompletionRequest = parse_body(LlamaCompletionRequest)
    engine = admit(state, model_name(state, req.model))  # type: ignore[arg-type]
    run = start_llama_completion(engine, req)
    w = watch(state, run.gens)
    if req.stream:
        return sse_response(data_events(run.chunks(w), done=False), run.gens)
    return jsonify(run.response(w).wire())


@api_route(bp, "/props", ["GET"], summary="The model's properties and default generation settings (llama-server)",
           response_model=PropsResponse)
def get_props():  # type: ignore[no-untyped-def]
    engine, rec = _engine(request.args.get("model"))
    features = get_state().config.features
    try:
        out = props(engine, rec, security_of(current_app).is_admin(), bool(features.metrics))
    except EngineClosedError:
        raise ApiError(503, "The model is being unloaded.", code="engine_closed") from None
    return jsonify(out.wire())


@api_route(bp, "/slots", ["GET"], summary="Every slot of the model now (llama-server); admin keys only",
           response_model=SlotList, auth="admin")
def get_slots():  # type: ignore[no-untyped-def]
    engine, rec = _engine(request.args.get("model"))
    try:
        out = slots(engine, rec)
    except EngineClosedError:
        raise ApiError(503, "The model is being unloaded.", code="engine_closed") from None
    if request.args.get("fail_on_no_slot") and not any(not s.is_processing for s in out):
        raise ApiError(503, "No slot is free.", code="no_slot_available")
    return jsonify(SlotList(out).wire())


@api_route(bp, "/apply-template", ["POST"], summary="Render messages with the model's chat template (llama-server)",
           request_model=ApplyTemplateRequest, response_model=ApplyTemplateResponse)
def post_apply_template():  # type: ignore[no-untyped-def]
    req: ApplyTemplateRequest = parse_body(ApplyTemplateRequest)
    engine, _ = _engine(req.model)
    return jsonify(apply_template(engine, req).wire())

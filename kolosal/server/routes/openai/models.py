"""GET /v1/models and /v1/models/{id}."""
from __future__ import annotations

from typing import Any, Dict

from flask import jsonify

from ...registry import EngineRecord
from ...openapi import api_route
from ...schemas.embeddings import ModelCard, ModelList
from ...state import get_state
from . import bp


def card(rec: EngineRecord, detail: bool) -> Dict[str, Any]:
    info = rec.describe(detail=detail)
    out: Dict[str, Any] = {"id": rec.engine_id, "object": "model", "created": rec.created, "owned_by": "kolosal",
                           "status": rec.state, "context_length": info.get("context_length")}
    if detail and "metadata" in info:
        meta = info["metadata"]
        out["meta"] = {k: meta.get(k) for k in ("architecture", "n_params", "size_bytes", "n_ctx_train", "n_vocab",
                                                 "n_embd", "n_ctx", "n_ctx_slot", "n_parallel", "n_gpu_layers")}
    return out


@api_route(bp, "/models", ["GET"], summary="List models", response_model=ModelList)
def list_models():  # type: ignore[no-untyped-def]
    return jsonify({"object": "list", "data": [card(r, False) for r in get_state().registry.records()]})


@api_route(bp, "/models/<path:model_id>", ["GET"], summary="Describe one model (context_length is per request)",
           response_model=ModelCard)
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    return jsonify(card(get_state().registry.record(model_id), True))

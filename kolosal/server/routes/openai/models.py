"""GET /v1/models and /v1/models/{id}."""
from __future__ import annotations

from typing import List

from flask import jsonify

from ...models.registry import EngineRecord
from ...openapi import api_route
from ...protocol.openai.models import ModelCard, ModelList
from ...state import ServerState, get_state
from . import bp
from .common import resolve_model


def _aliases(state: ServerState, engine_id: str) -> List[str]:
    return [a for m in state.config.models if m.model_id == engine_id for a in m.aliases]


def card(rec: EngineRecord, detail: bool) -> ModelCard:
    info = rec.describe(detail=detail)
    out = ModelCard(id=rec.engine_id, created=rec.created, status=rec.state, context_length=info.get("context_length"),
                    aliases=_aliases(get_state(), rec.engine_id))
    if detail and "metadata" in info:
        meta = info["metadata"]
        out.meta = {k: meta.get(k) for k in ("architecture", "n_params", "size_bytes", "n_ctx_train", "n_vocab",
                                              "n_embd", "n_ctx", "n_ctx_slot", "n_parallel", "n_gpu_layers")}
    return out


@api_route(bp, "/models", ["GET"], summary="List models", response_model=ModelList)
def list_models():  # type: ignore[no-untyped-def]
    return jsonify(ModelList(data=[card(r, False) for r in get_state().registry.records()]).wire())


@api_route(bp, "/models/<path:model_id>", ["GET"], summary="Describe one model (context_length is per request)",
           response_model=ModelCard)
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    """An alias names its model; with ``server.default_model`` any name does, as for generation."""
    state = get_state()
    return jsonify(card(state.registry.record(resolve_model(state, model_id)), True).wire())

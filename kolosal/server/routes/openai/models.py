"""GET /v1/models and /v1/models/{id}."""
from __future__ import annotations

import time
from typing import List, Optional

from flask import jsonify

from ...models.registry import EngineRecord
from ...openapi import api_route
from ...protocol.openai.models import ModelCard, ModelList
from ...state import ServerState, get_state
from . import bp
from .common import resolve_model


def _aliases(state: ServerState, engine_id: str) -> List[str]:
    return [a for m in state.config.models if m.model_id == engine_id for a in m.aliases]


def _instances(state: ServerState, engine_id: str) -> Optional[List[str]]:
    """In a cluster, the instances serving ``engine_id`` (this one included); None outside one."""
    cfg = state.config
    if cfg.instance is None and not cfg.model_distribution:
        return None
    names = list(cfg.model_instances().get(engine_id, []))
    if cfg.instance is not None and cfg.instance not in names:
        names.insert(0, cfg.instance)
    return names


def remote_card(state: ServerState, model_id: str) -> Optional[ModelCard]:
    """The card of a model other instances of the cluster serve and this one does not."""
    names = state.config.model_instances().get(model_id)
    if not names or any(r.engine_id == model_id for r in state.registry.records()):
        return None
    started = int(time.time() - (time.monotonic() - state.started))
    return ModelCard(id=model_id, created=started, status="remote", context_length=None, instances=names)


def card(rec: EngineRecord, detail: bool) -> ModelCard:
    info = rec.describe(detail=detail)
    state = get_state()
    out = ModelCard(id=rec.engine_id, created=rec.created, status=rec.state, context_length=info.get("context_length"),
                    aliases=_aliases(state, rec.engine_id))
    instances = _instances(state, rec.engine_id)
    if instances is not None:
        out.instances = instances
    if detail and "metadata" in info:
        meta = info["metadata"]
        out.meta = {k: meta.get(k) for k in ("architecture", "n_params", "size_bytes", "n_ctx_train", "n_vocab",
                                              "n_embd", "n_ctx", "n_ctx_slot", "n_parallel", "n_gpu_layers")}
    return out


@api_route(bp, "/models", ["GET"], summary="List models", response_model=ModelList)
def list_models():  # type: ignore[no-untyped-def]
    """This server's models, then those only other instances of its cluster serve (status ``remote``)."""
    state = get_state()
    cards = [card(r, False) for r in state.registry.records()]
    cards += [c for c in (remote_card(state, m) for m in state.config.model_instances()) if c is not None]
    return jsonify(ModelList(data=cards).wire())


@api_route(bp, "/models/<path:model_id>", ["GET"], summary="Describe one model (context_length is per request)",
           response_model=ModelCard)
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    """An alias names its model; with ``server.default_model`` any name does, as for generation."""
    state = get_state()
    remote = remote_card(state, model_id)
    if remote is not None:
        return jsonify(remote.wire())
    return jsonify(card(state.registry.record(resolve_model(state, model_id)), True).wire())

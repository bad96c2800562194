"""Admission of a generation request: the model it names, the queue, its limits."""
from __future__ import annotations

from typing import Sequence

from flask import g, request

from kolosal.engine import Engine, Generation
from kolosal.errors import EngineClosedError

from ...errors import ApiError
from ...limits import check_queue
from ...monitoring import current_track
from ...request_log import track_generations
from ...serving.runner import Watch
from ...state import ServerState


def resolve_model(state: ServerState, name: str) -> str:
    """The engine id a request's ``model`` names: an engine id, one of a
    configured model's ``aliases``, or else ``server.default_model`` when set
    (any other name then gets that model). Unknown names stay as they are
    (the registry answers 404 ``model_not_found``)."""
    ids = {r.engine_id for r in state.registry.records()}
    if name in ids:
        return name
    for m in state.config.models:
        if name in m.aliases:
            return m.model_id
    fallback = state.config.server.default_model
    if fallback and fallback != name:
        return resolve_model(state, fallback)
    return name


def admit(state: ServerState, model: str) -> Engine:
    """The engine for ``model`` if the server can take the request now."""
    if state.draining:
        raise ApiError(503, "The server is shutting down and takes no new requests.", code="server_draining")
    # Held (never unloaded) until the request ends; by then its generations are in the engine.
    engine = state.registry.engine(resolve_model(state, model), hold=True)
    g.setdefault("kolosal_holds", []).append(engine.model_id)
    track = current_track()
    if track is not None:
        track.set_engine(engine.model_id)
    try:
        queued = engine.stats().get("queued", 0)
    except EngineClosedError:
        raise ApiError(503, f"The model '{model}' is being unloaded.", code="engine_closed") from None
    check_queue(queued)  # all of this request's generations must fit in the queue
    return engine


def watch(state: ServerState, gens: Sequence[Generation], prompts: int = 1) -> Watch:
    """Limits of this request: ``job_timeout_seconds``, or the server's request
    timeout when that is set and shorter. ``gens`` (from ``prompts`` distinct
    prompts) are also noted for the completion metrics."""
    s = state.config.server
    timeout, key = state.config.inference.job_timeout_seconds, "inference.job_timeout_seconds"
    explicit = s.request_timeout_seconds
    if explicit and float(explicit) < timeout:
        timeout, key = float(explicit), "server.request_timeout_seconds"
    track_generations(gens, prompts)
    track = current_track()
    if track is not None:
        track.set_generations(gens, prompts)
    return Watch(request.environ, timeout, s.sse_ping_seconds, track.first_token if track is not None else None,
                 timeout_key=key)

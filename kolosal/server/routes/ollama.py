"""Ollama's API under /api (see ``serving.ollama``): chat, generate, embed,
the model listings, and clear refusals of the model management calls (models
are configured, nothing is downloaded). Errors are ``{"error": "..."}``,
404 and 405 under /api included; streams are one JSON object per line.
Bodies are read as JSON whatever their content type, as Ollama's own curl
examples send them (``curl -d``), except from web pages (``parse_body``)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, Optional, Union

from flask import Blueprint, Response, jsonify

from kolosal.engine import Engine

from .._version import server_version
from ..errors import ApiError
from ..models.registry import LOADED
from ..openapi import api_route, parse_body
from ..protocol.ollama.api import (ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, EmbedRequest,
                                   EmbedResponse, GenerateRequest, GenerateResponse, ListResponse, OutMessage,
                                   PsResponse, ShowRequest, ShowResponse, VersionResponse)
from ..serving.common import dumps
from ..serving.ollama import (OLLAMA_PATHS, OllamaRun, details, embed, error_line, keep_alive_after, keep_alive_seconds,
                              listed, running, start_chat_run, start_generate_run, timestamp)
from ..state import ServerState, get_state
from .openai.common import admit, resolve_model, watch
from .sse import sse_response

bp = Blueprint("ollama", __name__)
# The Ollama release whose API this one follows (structured outputs, tools, think): what /api/version
# reports, as apps check it against the Ollama they need.
OLLAMA_API_VERSION = "0.9.0"
PATHS = OLLAMA_PATHS
NDJSON = "application/x-ndjson"


def model_name(state: ServerState, name: str) -> str:
    """Ollama's ``name:latest`` is the configured ``name``."""
    ids = {r.engine_id for r in state.registry.records()}
    if resolve_model(state, name) not in ids and name.endswith(":latest"):
        return name[: -len(":latest")]
    return name


def _admit(state: ServerState, name: str) -> "tuple[Engine, int]":
    """The engine, and the nanoseconds spent loading it for this request."""
    t0 = time.perf_counter()
    was_loaded = any(r.state == LOADED for r in state.registry.records()
                     if r.engine_id == resolve_model(state, model_name(state, name)))
    engine = admit(state, model_name(state, name))
    return engine, 0 if was_loaded else int((time.perf_counter() - t0) * 1e9)


def _with_keep_alive(resp: Response, engine_id: str, seconds: Optional[float]) -> Response:
    """Once the answer is sent, the request's ``keep_alive`` (None: the server's policy) applies to the model."""
    state = get_state()
    resp.call_on_close(lambda: keep_alive_after(state, engine_id, seconds))
    return resp


def _ndjson(lines: Iterator[Any]) -> Iterator[str]:
    for item in lines:
        if isinstance(item, str):  # a line already written
            yield item
        elif item is not None:  # keep-alive ticks: NDJSON has no comment line
            yield dumps(item.wire()) + "\n"


def _generation(req: Union[ChatRequest, GenerateRequest], start: Callable[[Engine, Any], OllamaRun],
                empty: bool) -> Response:
    state = get_state()
    t0 = time.perf_counter()
    seconds = keep_alive_seconds(req.keep_alive)
    engine, load_ns = _admit(state, req.model)
    if empty:  # no messages or prompt: load the model (or, with keep_alive 0, unload it)
        reason = "unload" if seconds == 0 else "load"
        times = {"done_reason": reason, "load_duration": load_ns,
                 "total_duration": int((time.perf_counter() - t0) * 1e9)}
        out: Any = GenerateResponse(model=req.model, created_at=timestamp(), response="", done=True, **times) \
            if isinstance(req, GenerateRequest) else \
            ChatResponse(model=req.model, created_at=timestamp(), message=OutMessage(content=""), done=True, **times)
        return _with_keep_alive(jsonify(out.wire()), engine.model_id, seconds)
    run = start(engine, req)
    run.load_ns = load_ns
    w = watch(state, run.gens)
    if req.stream:
        resp = sse_response(_ndjson(run.lines(w)), run.gens, error_event=error_line, mimetype=NDJSON)
    else:
        resp = jsonify(run.response(w).wire())
    return _with_keep_alive(resp, engine.model_id, seconds)


@api_route(bp, "/api/chat", ["POST"], summary="Chat (Ollama; NDJSON stream unless \"stream\": false)",
           request_model=ChatRequest, response_model=ChatResponse, generation="chat", listed=False)
def chat():  # type: ignore[no-untyped-def]
    req: ChatRequest = parse_body(ChatRequest, untyped=True)
    return _generation(req, start_chat_run, not req.messages)


@api_route(bp, "/api/generate", ["POST"], summary="Generate (Ollama; NDJSON stream unless \"stream\": false)",
           request_model=GenerateRequest, response_model=GenerateResponse, generation="chat", listed=False)
def generate():  # type: ignore[no-untyped-def]
    req: GenerateRequest = parse_body(GenerateRequest, untyped=True)
    return _generation(req, start_generate_run, not req.prompt)


@api_route(bp, "/api/embed", ["POST"], summary="Embeddings (Ollama)", request_model=EmbedRequest,
           response_model=EmbedResponse, listed=False)
def embed_route():  # type: ignore[no-untyped-def]
    return _embed(parse_body(EmbedRequest, untyped=True))


@api_route(bp, "/api/embeddings", ["POST"], summary="One embedding (Ollama's older endpoint)",
           request_model=EmbeddingsRequest, response_model=EmbeddingsResponse, listed=False)
def embeddings_route():  # type: ignore[no-untyped-def]
    return _embed(parse_body(EmbeddingsRequest, untyped=True))


def _embed(req: Union[EmbedRequest, EmbeddingsRequest]) -> Response:
    state = get_state()
    t0 = time.perf_counter()
    seconds = keep_alive_seconds(req.keep_alive)
    engine, load_ns = _admit(state, req.model)
    out = embed(engine, req, state.config.server.max_embedding_inputs, t0, load_ns)
    return _with_keep_alive(jsonify(out.wire()), engine.model_id, seconds)


@api_route(bp, "/api/tags", ["GET"], summary="The configured models (Ollama)", response_model=ListResponse,
           listed=False)
def tags():  # type: ignore[no-untyped-def]
    return jsonify(ListResponse(models=[listed(r) for r in get_state().registry.records()]).wire())


@api_route(bp, "/api/ps", ["GET"], summary="The loaded models (Ollama)", response_model=PsResponse, listed=False)
def ps():  # type: ignore[no-untyped-def]
    state = get_state()
    keep = state.config.inference.keep_alive_seconds
    return jsonify(PsResponse(models=[running(r, keep) for r in state.registry.records()
                                      if r.is_loaded]).wire())


@api_route(bp, "/api/show", ["POST"], summary="Describe a model (Ollama)", request_model=ShowRequest,
           response_model=ShowResponse, listed=False)
def show():  # type: ignore[no-untyped-def]
    state = get_state()
    req: ShowRequest = parse_body(ShowRequest, untyped=True)
    name = req.model or req.name
    if not name:
        raise ApiError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    engine_id = resolve_model(state, model_name(state, name))
    rec = state.registry.record(engine_id)
    engine = state.registry.engine(engine_id)  # loaded on demand, as for a generation: its header is read
    meta = engine.metadata
    arch = str(meta.get("architecture") or "")
    info = {"general.architecture": arch, "general.name": meta.get("name"),
            "general.parameter_count": meta.get("n_params"), f"{arch}.context_length": meta.get("n_ctx_train"),
            f"{arch}.embedding_length": meta.get("n_embd"), f"{arch}.block_count": meta.get("n_layer"),
            f"{arch}.vocab_size": meta.get("n_vocab")}
    out = ShowResponse(modelfile=f"# configured in the server's model list as '{engine_id}'\nFROM {engine_id}\n",
                       parameters=f"num_ctx {meta.get('n_ctx_slot')}", template=str(meta.get("chat_template") or ""),
                       details=details(rec), model_info=info, capabilities=["completion", "tools"],
                       modified_at=timestamp(os.path.getmtime(rec.model_path)) if os.path.exists(rec.model_path)
                       else timestamp(rec.created))
    return jsonify(out.wire())


@api_route(bp, "/api/version", ["GET"], summary="The server version (Ollama)", response_model=VersionResponse,
           auth="public", listed=False)
def version():  # type: ignore[no-untyped-def]
    return jsonify(VersionResponse(version=OLLAMA_API_VERSION, server=f"kolosal {server_version()}").wire())


def _managed(what: str) -> ApiError:
    return ApiError(501, f"{what} is not supported: this server downloads and changes no models. Models are listed "
                         f"in its configuration (the 'models' section or models file: id and path of a GGUF file), "
                         f"or loaded by an admin with POST /engines.", code="model_management_not_supported")


@api_route(bp, "/api/pull", ["POST"], summary="Refused: models are configured, not downloaded", listed=False)
def pull():  # type: ignore[no-untyped-def]
    raise _managed("Pulling a model")


@api_route(bp, "/api/push", ["POST"], summary="Refused: models are configured, not uploaded", listed=False)
def push():  # type: ignore[no-untyped-def]
    raise _managed("Pushing a model")


@api_route(bp, "/api/create", ["POST"], summary="Refused: models are configured", listed=False)
def create():  # type: ignore[no-untyped-def]
    raise _managed("Creating a model")


@api_route(bp, "/api/copy", ["POST"], summary="Refused: models are configured", listed=False)
def copy():  # type: ignore[no-untyped-def]
    raise _managed("Copying a model")


@api_route(bp, "/api/delete", ["DELETE"], summary="Refused: models are configured", listed=False)
def delete():  # type: ignore[no-untyped-def]
    raise _managed("Deleting a model")

"""POST /v1/embeddings."""
from __future__ import annotations

from flask import jsonify

from ...openapi import api_route, parse_body
from ...protocol.openai.embeddings import EmbeddingRequest, EmbeddingResponse
from ...serving.embeddings import create_embeddings
from ...state import get_state
from . import bp
from .common import admit


@api_route(bp, "/embeddings", ["POST"], summary="Create embeddings", request_model=EmbeddingRequest,
           response_model=EmbeddingResponse)
def embeddings():  # type: ignore[no-untyped-def]
    state = get_state()
    req: EmbeddingRequest = parse_body(EmbeddingRequest)
    engine = admit(state, req.model)
    return jsonify(create_embeddings(engine, req, state.config.server.max_embedding_inputs).wire())

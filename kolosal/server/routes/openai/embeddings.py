"""POST /v1/embeddings."""
from __future__ import annotations

import base64
from typing import List

from flask import jsonify

from ...errors import ApiError
from ...openapi import api_route, parse_body
from ...protocol.openai.embeddings import EmbeddingRequest, EmbeddingResponse
from ...state import get_state
from . import bp
from .common import admit


@api_route(bp, "/embeddings", ["POST"], summary="Create embeddings", request_model=EmbeddingRequest,
           response_model=EmbeddingResponse)
def embeddings():  # type: ignore[no-untyped-def]
    state = get_state()
    req: EmbeddingRequest = parse_body(EmbeddingRequest)
    engine = admit(state, req.model)
    raw = req.input
    limit = state.config.server.max_embedding_inputs
    if isinstance(raw, list) and raw and not isinstance(raw[0], int) and len(raw) > limit:
        raise ApiError(400, f"'input' has {len(raw)} items but this server takes at most {limit} per request.",
                       param="input", code="invalid_value")
    if isinstance(raw, str):
        texts: List[str] = [raw]
    elif all(isinstance(x, int) for x in raw):
        texts = [engine.detokenize(raw, special=True)]  # type: ignore[arg-type]  # control tokens kept
    else:
        texts = [x if isinstance(x, str) else engine.detokenize(x, special=True) for x in raw]  # type: ignore[arg-type]
    n_embd = engine.metadata.get("n_embd")
    if req.dimensions is not None and req.dimensions != n_embd:
        raise ApiError(400, f"'dimensions' must be {n_embd} for this model (reduced dimensions are not supported).",
                       param="dimensions", code="invalid_value")
    n_tokens = 0
    for t in texts:
        k = len(engine.tokenize(t))
        if k > engine.n_ctx_slot:
            raise ApiError(400, f"An input has {k} tokens but the context of one request is {engine.n_ctx_slot} tokens.",
                           param="input", code="context_length_exceeded")
        n_tokens += k
    vectors = engine.embed(texts, normalize=True)
    data = []
    for i, vec in enumerate(vectors):
        value = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii") if req.encoding_format == "base64" \
            else vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return jsonify({"object": "list", "data": data, "model": req.model,
                    "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

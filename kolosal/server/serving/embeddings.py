"""Embeddings: texts or token ids in, one normalised vector each out (as
floats or base64 little-endian float32)."""
from __future__ import annotations

import base64
from typing import List

from kolosal.engine import Engine

from ..errors import ApiError
from ..protocol.openai.embeddings import EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage


def create_embeddings(engine: Engine, req: EmbeddingRequest, max_inputs: int) -> EmbeddingResponse:
    """The embeddings of ``req``'s inputs, at most ``max_inputs`` of them (``server.max_embedding_inputs``)."""
    raw = req.input
    if isinstance(raw, list) and raw and not isinstance(raw[0], int) and len(raw) > max_inputs:
        raise ApiError(400, f"'input' has {len(raw)} items but this server takes at most {max_inputs} per request.",
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
    data = [EmbeddingItem(index=i, embedding=base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
                          if req.encoding_format == "base64" else vec.tolist())
            for i, vec in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=req.model,
                             usage=EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens))

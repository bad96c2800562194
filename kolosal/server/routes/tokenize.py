"""POST /tokenize and /detokenize (llama-server shapes, optional "model")."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import ApiError
from ..openapi import api_route, parse_body
from ..protocol.admin import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse, TokenPiece
from ..state import get_state

bp = Blueprint("tokenize", __name__)


@api_route(bp, "/tokenize", ["POST"], summary="Tokenize text", request_model=TokenizeRequest,
           response_model=TokenizeResponse)
def tokenize():  # type: ignore[no-untyped-def]
    req: TokenizeRequest = parse_body(TokenizeRequest)
    engine = get_state().registry.engine(req.model)
    tokens = engine.tokenize(req.content, add_special=req.add_special, parse_special=req.parse_special)
    if req.with_pieces:
        return jsonify(TokenizeResponse(tokens=[TokenPiece(id=t, piece=engine.detokenize([t], special=True))
                                                for t in tokens]).wire())
    return jsonify(TokenizeResponse(tokens=tokens).wire())


@api_route(bp, "/detokenize", ["POST"], summary="Detokenize token ids", request_model=DetokenizeRequest,
           response_model=DetokenizeResponse)
def detokenize():  # type: ignore[no-untyped-def]
    req: DetokenizeRequest = parse_body(DetokenizeRequest)
    engine = get_state().registry.engine(req.model)
    n_vocab = engine.metadata.get("n_vocab", 0)
    bad = [t for t in req.tokens if not 0 <= t < n_vocab]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})", param="tokens",
                       code="invalid_value")
    return jsonify(DetokenizeResponse(content=engine.detokenize(req.tokens)).wire())

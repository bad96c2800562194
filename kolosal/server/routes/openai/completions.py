"""POST /v1/completions (text completions)."""
from __future__ import annotations

from flask import jsonify

from ...openapi import api_route, parse_body
from ...protocol.openai.completions import CompletionRequest, CompletionResponse
from ...serving.completions import start_completion
from ...state import get_state
from ..sse import data_events, sse_response
from . import bp
from .common import admit, watch


@api_route(bp, "/completions", ["POST"], summary="Create a text completion (streaming with \"stream\": true)",
           request_model=CompletionRequest, response_model=CompletionResponse, streams=CompletionResponse,
           generation="completion")
def completions():  # type: ignore[no-untyped-def]
    state = get_state()
    req: CompletionRequest = parse_body(CompletionRequest)
    run = start_completion(admit(state, req.model), req)
    w = watch(state, run.gens, run.prompts)
    if req.stream:
        return sse_response(data_events(run.chunks(w)), run.gens)
    return jsonify(run.response(w).wire())

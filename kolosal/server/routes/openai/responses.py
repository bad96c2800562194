"""POST /v1/responses: OpenAI's Responses API (see ``serving.responses``)."""
from __future__ import annotations

from flask import jsonify

from ...openapi import api_route, parse_body
from ...protocol.openai.responses import Response, ResponseRequest, ResponseStreamEvent
from ...serving.responses import chat_request, start_response
from ...state import get_state
from ..sse import sse_response, typed_events
from . import bp
from .common import admit, watch


@api_route(bp, "/responses", ["POST"], summary="Create a model response (Responses API; streaming with \"stream\": "
                                               "true)", request_model=ResponseRequest, response_model=Response,
           streams=ResponseStreamEvent, generation="response")
def create_response():  # type: ignore[no-untyped-def]
    state = get_state()
    req: ResponseRequest = parse_body(ResponseRequest)
    chat_req = chat_request(req)
    run = start_response(admit(state, req.model), req, chat_req)
    w = watch(state, run.gens)
    if req.stream:
        return sse_response(typed_events(run.events(w)), run.gens)
    return jsonify(run.response(w).wire())

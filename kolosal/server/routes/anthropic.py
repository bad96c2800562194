"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens
(see ``serving.anthropic``). Errors have Anthropic's shape
(``{"type": "error", "error": {"type", "message"}}``), 404 and 405 under
these paths included."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..openapi import api_route, parse_body
from ..protocol.anthropic.messages import CountTokensRequest, Message, MessagesRequest, MessageStreamEvent, TokenCount
from ..serving.anthropic import count_tokens, start_message, error_event
from ..state import get_state
from .openai.common import admit, watch
from .sse import sse_response, typed_events

bp = Blueprint("anthropic", __name__)

# URL prefixes whose errors take Anthropic's shape (with and without /v1)
PATHS = ("/v1/messages", "/messages")


@api_route(bp, "/messages", ["POST"], summary="Create a message (Anthropic's Messages API; streaming with "
                                             "\"stream\": true)", request_model=MessagesRequest,
           response_model=Message, streams=MessageStreamEvent, generation="chat", listed=False)
def create_message():  # type: ignore[no-untyped-def]
    state = get_state()
    req: MessagesRequest = parse_body(MessagesRequest)
    run = start_message(admit(state, req.model), req)
    w = watch(state, run.gens)
    if req.stream:
        return sse_response(typed_events(run.events(w)), run.gens, error_event=error_event)
    return jsonify(run.response(w).wire())


@api_route(bp, "/messages/count_tokens", ["POST"], summary="Count the tokens of a Messages prompt",
           request_model=CountTokensRequest, response_model=TokenCount, listed=False)
def messages_count_tokens():  # type: ignore[no-untyped-def]
    state = get_state()
    req: CountTokensRequest = parse_body(CountTokensRequest)
    return jsonify(count_tokens(admit(state, req.model), req).wire())

"""POST /v1/chat/completions."""
from __future__ import annotations

from flask import jsonify

from ...openapi import api_route, parse_body
from ...protocol.openai.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from ...serving.chat import start_chat
from ...state import get_state
from ..sse import data_events, sse_response
from . import bp
from .common import admit, watch


@api_route(bp, "/chat/completions", ["POST"], summary="Create a chat completion (streaming with \"stream\": true)",
           request_model=ChatCompletionRequest, response_model=ChatCompletionResponse, streams=ChatCompletionChunk,
           generation="chat")
def chat_completions():  # type: ignore[no-untyped-def]
    state = get_state()
    req: ChatCompletionRequest = parse_body(ChatCompletionRequest)
    run = start_chat(admit(state, req.model), req)
    w = watch(state, run.gens)
    if req.stream:
        return sse_response(data_events(run.events(w)), run.gens)
    return jsonify(run.response(w).wire())

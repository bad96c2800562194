"""Streamed events written once and filled per token (``serving.common.Spliced``)
are the bytes their model would dump, whatever the text holds."""
from __future__ import annotations

import pytest

from kolosal.server.protocol.anthropic.messages import ContentBlockDelta, TextDelta
from kolosal.server.protocol.ollama.api import ChatResponse, OutMessage
from kolosal.server.serving.common import Spliced, dumps, typed_event

TEXTS = ["", " hello", 'quote " and \\ backslash', "line\nbreak\ttab", "é 漢字 🙂", "\x00kolosal-splice-0\x00",
         "</script>", "\u2028"]


def anthropic_delta(text: str, index: int = 2) -> str:
    return typed_event(ContentBlockDelta(index=index, delta=TextDelta(text=text)))


def ollama_line(created_at: str, text: str) -> str:
    return dumps(ChatResponse(model="m", created_at=created_at, message=OutMessage(content=text), done=False).wire())


@pytest.mark.parametrize("text", TEXTS)
def test_one_field(text):
    spliced = Spliced(anthropic_delta)
    assert spliced.ok and spliced.fill(text) == anthropic_delta(text)


@pytest.mark.parametrize("text", TEXTS)
def test_two_fields_in_their_order(text):
    spliced = Spliced(ollama_line, 2)
    assert spliced.ok and spliced.fill("2026-01-02T03:04:05.000006Z", text) == ollama_line(
        "2026-01-02T03:04:05.000006Z", text)


def test_fields_that_cannot_be_told_apart_are_refused():
    assert not Spliced(lambda text: dumps({"a": text, "b": text})).ok  # the field twice
    assert not Spliced(lambda text: dumps({"a": "fixed"})).ok  # the field left out
    assert not Spliced(lambda a, b: dumps({"b": b, "a": a}), 2).ok  # out of order

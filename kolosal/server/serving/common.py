"""Identifiers and fields shared by the generation endpoints' answers."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, List, Tuple

from kolosal._native import __version__ as _version
from kolosal.tool_calls import AnswerStream

FINGERPRINT = f"kolosal-{_version}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def include_usage(req: Any) -> bool:
    """A streamed request asked for a last chunk with the usage (and ``"usage": null`` on the others)."""
    return bool(req.stream and req.stream_options and req.stream_options.include_usage)


def dumps(obj: Any) -> str:
    """Compact JSON, as the streamed events carry it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def typed_event(reply: Any) -> str:
    """A server-sent event named by the reply's ``type`` (``event:`` line, then ``data:``)."""
    return f"event: {reply.type}\ndata: {dumps(reply.wire())}\n\n"


_SPLICE = "\x00kolosal-splice-{}\x00"  # no model, id or name holds it: its JSON cuts a text in pieces


class Spliced:
    """The text of a streamed event with ``n`` string fields left open, made
    once and then filled per event: ``render(*marks)`` is called once with
    stand-ins for the fields, and ``fill(*values)`` gives the text ``render``
    would give for the values (each as its JSON string), without building and
    dumping a model per token. ``ok`` is False when the stand-ins cannot be
    told apart in the rendered text (then render each event instead)."""

    def __init__(self, render: Callable[..., str], n: int = 1) -> None:
        marks = [dumps(_SPLICE.format(k)) for k in range(n)]
        rest = render(*(_SPLICE.format(k) for k in range(n)))
        self.pieces: List[str] = []
        for mark in marks:  # in the order render puts them
            before, found, rest = rest.partition(mark)
            if not found or any(m in before for m in marks):
                self.pieces = []
                break
            self.pieces.append(before)
        self.pieces.append(rest)
        self.ok = len(self.pieces) == n + 1 and not any(m in rest for m in marks)

    def fill(self, *values: str) -> str:
        out = self.pieces[0]
        for value, piece in zip(values, self.pieces[1:]):
            out += dumps(value) + piece
        return out


def cut_short_answer(text: str) -> Tuple[str, List[Tuple[str, str]]]:
    """A tool-call answer's JSON form (models without their own tool-call format)
    cut off by the token limit: its text and the calls begun (name, arguments so
    far), as its stream gave them; other text as it is."""
    answer = AnswerStream()
    answer.feed(text)
    if answer.broken:
        return text, []
    return answer.content, [(c["function"]["name"], c["function"]["arguments"]) for c in answer.calls]

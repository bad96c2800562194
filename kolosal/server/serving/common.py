"""Identifiers and fields shared by the generation endpoints' answers."""
from __future__ import annotations

import time
import uuid
from typing import Any, List, Tuple

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


def cut_short_answer(text: str) -> Tuple[str, List[Tuple[str, str]]]:
    """A tool-call answer's JSON form (models without their own tool-call format)
    cut off by the token limit: its text and the calls begun (name, arguments so
    far), as its stream gave them; other text as it is."""
    answer = AnswerStream()
    answer.feed(text)
    if answer.broken:
        return text, []
    return answer.content, [(c["function"]["name"], c["function"]["arguments"]) for c in answer.calls]

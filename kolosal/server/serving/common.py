"""Identifiers and fields shared by the generation endpoints' answers."""
from __future__ import annotations

import time
import uuid
from typing import Any

from kolosal._native import __version__ as _version

FINGERPRINT = f"kolosal-{_version}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def include_usage(req: Any) -> bool:
    """A streamed request asked for a last chunk with the usage (and ``"usage": null`` on the others)."""
    return bool(req.stream and req.stream_options and req.stream_options.include_usage)

"""Server-sent events: ``data:`` lines, comment pings, ``[DONE]``, errors
mid-stream as an error event, and cancellation when the stream is closed."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from flask import Response

from ...engine import Generation
from ..errors import ApiError, from_engine_error
from ..monitoring import current_track
from ..protocol.base import Reply
from ..serving.common import dumps, typed_event
from ..serving.runner import ClientGone, cancel_all

log = logging.getLogger("kolosal.server.sse")

PING = ": ping\n\n"
DONE = "data: [DONE]\n\n"


def event(obj: Any) -> str:
    return _frame(dumps(obj))


def _frame(text: str) -> str:
    """One ``data:`` event holding ``text`` (JSON already written)."""
    return "data: " + text + "\n\n"


def data_events(chunks: Iterator[Union[None, Reply, str]], done: bool = True) -> Iterator[str]:
    """Each chunk (a reply, or its JSON text) as a ``data:`` event, ``None`` as
    a keep-alive comment, then ``[DONE]``."""
    for c in chunks:
        yield PING if c is None else _frame(c) if isinstance(c, str) else event(c.wire())
    if done:
        yield DONE


def typed_events(events: Iterator[Union[None, Reply, str]]) -> Iterator[str]:
    """Events named by their ``type`` (``event:`` line, then ``data:``), as the Responses API sends them;
    a str is such an event already written."""
    for e in events:
        yield PING if e is None else e if isinstance(e, str) else typed_event(e)


def sse_response(events: Iterator[str], gens: Sequence[Generation],
                 error_event: Optional[Callable[[ApiError], str]] = None,
                 mimetype: str = "text/event-stream") -> Response:
    """Wrap ``events`` (already formatted) as a streaming response. ``error_event``
    formats a failure mid-stream (default: a ``data:`` event with OpenAI's envelope);
    ``mimetype``: another line format (Ollama's NDJSON)."""
    track = current_track()
    if track is not None:
        track.streaming = True
    status = 499  # until the stream has ended well or with an error

    def body() -> Iterator[bytes]:
        nonlocal status
        try:
            for item in events:
                yield item.encode("utf-8")
            status = 200
        except ClientGone:
            log.info("client disconnected; generation cancelled")
        except Exception as e:  # reported in-band: the status line is long gone
            err = from_engine_error(e)
            status = err.status
            yield (error_event(err) if error_event is not None else event(err.body())).encode("utf-8")
        finally:
            cancel_all(gens)
            if track is not None:
                track.finish(status)

    resp = Response(body(), status=200, mimetype=mimetype)
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    resp.call_on_close(lambda: cancel_all(gens))
    if track is not None:
        resp.call_on_close(lambda: track.finish(status))
    return resp

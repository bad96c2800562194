"""Per-request logging: the ``X-Request-ID`` (accepted or generated, returned,
and attached to every log line written while the request runs), the access
log line, and the completion line with token counts and timings."""
from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from flask import request

from .serving.runner import usage
from .state import ClosingBody

log_access = logging.getLogger("kolosal.access")
log_completion = logging.getLogger("kolosal.completion")

_request_id: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("kolosal_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ENV_ID = "kolosal.request_id"
ENV_GENS = "kolosal.generations"


def current_request_id() -> Optional[str]:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def track_generations(gens: Sequence[Any], n_prompts: int = 1) -> None:
    """Called when a generation request has started its generations, so that
    the completion line can be written when the response ends."""
    request.environ[ENV_GENS] = (list(gens), n_prompts, _json_body())


def _json_body() -> Dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    return body if isinstance(body, dict) else {}


def _completion_fields(environ: Dict[str, Any], t0: float, status: int, log_prompts: bool) -> Optional[Dict[str, Any]]:
    tracked = environ.get(ENV_GENS)
    if not tracked:
        return None
    gens, n_prompts, body = tracked
    model = body.get("model")
    prompt = body.get("messages", body.get("prompt"))
    fields: Dict[str, Any] = {"component": "completion_route", "model": model, "input_tokens": None,
                              "output_tokens": None, "ttft_ms": None,
                              "total_time_ms": round((time.perf_counter() - t0) * 1000, 3),
                              "success": status < 400 and all(g.finish_reason in ("stop", "length", "tool_calls")
                                                              for g in gens)}
    try:
        u = usage(gens, n_prompts)
        fields["input_tokens"], fields["output_tokens"] = u["prompt_tokens"], u["completion_tokens"]
        ttft = [g.timings.get("ttft_ms") for g in gens]
        ttft = [t for t in ttft if t is not None]
        fields["ttft_ms"] = round(min(ttft), 3) if ttft else None
    except Exception:  # a generation torn down with its engine
        fields["success"] = False
    if log_prompts and prompt is not None:
        fields["prompt"] = prompt
    return fields


class RequestLogMiddleware:
    """Outermost WSGI layer: request id in and out, one access line per request
    (after the body, streams included, has been sent)."""

    def __init__(self, wsgi_app: Callable, client: Callable[[Dict[str, Any]], str], access_log: bool,
                 log_prompts: bool) -> None:
        self.wsgi_app = wsgi_app
        self.client = client
        self.access_log = access_log
        self.log_prompts = log_prompts

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        rid = given if _VALID_ID.match(given) else "req_" + uuid.uuid4().hex
        environ[ENV_ID] = rid
        _request_id.set(rid)
        t0 = time.perf_counter()
        seen: Dict[str, Any] = {"status": 500}

        def start(status: str, headers: List, exc_info: Any = None) -> Callable:
            seen["status"] = int(status[:3])
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"] + [("X-Request-ID", rid)]
            return start_response(status, headers, exc_info)

        try:
            result = self.wsgi_app(environ, start)
        except BaseException:
            self._finish(environ, rid, t0, seen["status"], 0)
            raise
        return ClosingBody(result, lambda n: self._finish(environ, rid, t0, seen["status"], n))

    def _finish(self, environ: Dict[str, Any], rid: str, t0: float, status: int, n_bytes: int) -> None:
        _request_id.set(rid)
        try:
            fields = _completion_fields(environ, t0, status, self.log_prompts)
            if fields is not None:
                log_completion.info("completion %s", "finished" if fields["success"] else "failed", extra=fields)
            if self.access_log:
                path = environ.get("PATH_INFO", "")
                method = environ.get("REQUEST_METHOD", "")
                log_access.info("%s %s %d", method, path, status, extra={
                    "component": "access", "method": method, "path": path, "status": status, "bytes": n_bytes,
                    "duration_ms": round((time.perf_counter() - t0) * 1000, 3), "client": self.client(environ),
                    "scheme": environ.get("wsgi.url_scheme"),
                    "key_id": environ.get("kolosal.key_id")})
        finally:
            _request_id.set(None)



"""The one OpenAI error envelope, and the mapping of every failure onto it."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from flask import Flask, Response, current_app, has_request_context, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from .. import errors as kerr
from .config import clean_loc, format_loc
from .protocol.errors import ErrorDetail, ErrorResponse

log = logging.getLogger("kolosal.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error",
          501: "not_implemented_error", 503: "server_busy_error", 504: "timeout_error"}


class ClientGone(Exception):
    """The client disconnected; its generations were cancelled."""


class ApiError(Exception):
    """An error to report to the client with ``status``."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 type: Optional[str] = None, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: Optional[str] = None, code: Optional[str] = None) -> Dict[str, Any]:
    """The envelope itself: ``{"error": {"message", "type", "param", "code"}}`` (``protocol.errors``)."""
    return ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code)).wire()


# app.extensions key of ``message -> message`` hiding file paths from this caller
REDACT = "kolosal_redact"

# Seconds a client should wait before retrying these (sent as Retry-After).
RETRY_AFTER = {"server_busy": 1, "server_draining": 5}


# app.extensions key of [(URL path prefixes, ApiError -> body)]: the error shapes of other API dialects
# (Anthropic's, Ollama's) for requests under their paths, 404 and 405 included
ERROR_SHAPES = "kolosal_error_shapes"


def dialect_body(err: ApiError) -> Dict[str, Any]:
    """``err`` in the shape of the API the current request's path belongs to (OpenAI's by default)."""
    if has_request_context():
        from flask import request
        for prefixes, shape in current_app.extensions.get(ERROR_SHAPES, ()):
            if request.path.startswith(prefixes):
                return shape(err)
    return err.body()


def error_response(err: ApiError) -> Response:
    if has_request_context():  # file paths only for admin keys
        redact = current_app.extensions.get(REDACT)
        if redact is not None:
            err.message = redact(err.message)
    body = dialect_body(err)
    resp = jsonify(body)
    resp.status_code = err.status
    retry = err.retry_after or RETRY_AFTER.get(err.code or "")
    if retry:
        resp.headers["Retry-After"] = str(retry)
    return resp


def from_validation(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0]
    if first["type"].endswith("_type") and len(errors) > 1:
        # a union: prefer the branch of the right type that failed on its content ([] for a non-empty list)
        where = clean_loc(first["loc"])
        first = next((e for e in errors if not e["type"].endswith("_type") and clean_loc(e["loc"]) == where), first)
    param = format_loc(clean_loc(first["loc"])) or None
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"Unsupported parameter: '{param}' is not supported by this server.",
                        param=param, code="unsupported_parameter")
    if first["type"] == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    msg = first.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ApiError(400, f"Invalid value for '{param}': {msg}" if param else msg, param=param,
                    code="invalid_value")


def from_engine_error(exc: BaseException) -> ApiError:
    """Map a kolosal exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, kerr.ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, kerr.InvalidParameterError):
        return ApiError(400, str(exc), param=exc.param, code="invalid_value")
    if isinstance(exc, kerr.EngineClosedError):
        return ApiError(503, "the model was unloaded while serving this request", code="engine_closed")
    if isinstance(exc, kerr.OutOfMemoryError):
        return ApiError(503, f"out of memory: {exc}", code="out_of_memory")
    if isinstance(exc, kerr.WorkerUnreachableError):
        return ApiError(503, str(exc), code="worker_unreachable")
    if isinstance(exc, kerr.ModelLoadError):
        return ApiError(503, f"the model could not be loaded: {exc}", code="model_load_failed")
    if isinstance(exc, kerr.GenerationError):
        return ApiError(500, f"generation failed: {exc}", code="generation_failed", type="server_error")
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    log.exception("unhandled error", exc_info=exc)
    return ApiError(500, "internal server error", code="internal_error", type="server_error")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(e: ApiError) -> Response:
        return error_response(e)

    @app.errorhandler(ValidationError)
    def _validation(e: ValidationError) -> Response:
        return error_response(from_validation(e))

    @app.errorhandler(kerr.KolosalError)
    def _kolosal(e: kerr.KolosalError) -> Response:
        return error_response(from_engine_error(e))

    @app.errorhandler(ClientGone)
    def _gone(e: ClientGone) -> Response:
        log.info("client disconnected; generation cancelled")
        return Response(status=499)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> Response:
        status = e.code or 500
        if status == 404:
            msg = "Unknown endpoint: no route matches this URL."
        elif status == 405:
            msg = "Method not allowed for this endpoint."
        else:
            msg = e.description or e.name
        resp = error_response(ApiError(status, msg, code=e.name.lower().replace(" ", "_")))
        if status == 405 and hasattr(e, "valid_methods") and e.valid_methods:
            resp.headers["Allow"] = ", ".join(e.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _other(e: Exception) -> Response:
        return error_response(from_engine_error(e))

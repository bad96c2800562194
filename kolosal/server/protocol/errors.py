"""The one error envelope every failure is answered with, as OpenAI sends it."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from .base import Reply


class ErrorDetail(Reply):
    message: str
    type: str = Field(..., description="invalid_request_error, authentication_error, rate_limit_error, ...")
    param: Optional[str] = Field(..., description="the request field at fault, when one is")
    code: Optional[str]


class ErrorResponse(Reply):
    """``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail

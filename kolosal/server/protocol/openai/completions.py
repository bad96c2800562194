"""POST /v1/completions (legacy text completions) request and response."""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator

from ..base import Reply

from .common import FinishReason, NonEmpty, SamplingFields, Timings, TokenIds, Usage


class CompletionRequest(SamplingFields):
    prompt: Union[NonEmpty[str], NonEmpty[List[NonEmpty[str]]], TokenIds, NonEmpty[List[TokenIds]]]
    echo: Optional[bool] = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Optional[str] = Field(None, json_schema_extra={"maxLength": 0})  # no fill-in-the-middle

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v):  # type: ignore[no-untyped-def]
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: Optional[str]) -> Optional[str]:
        if v:
            raise ValueError("'suffix' (fill-in-the-middle) is not supported")
        return v


class CompletionLogprobs(Reply):
    tokens: List[str]
    token_logprobs: List[float]
    top_logprobs: Optional[List[Dict[str, float]]]
    text_offset: List[int]


class CompletionChoice(Reply):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs]
    finish_reason: FinishReason


class CompletionResponse(Reply):
    """Also the shape of each streamed chunk: with
    ``stream_options.include_usage`` every chunk has ``usage``: null but the
    last, which has no choices and the usage of the request."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: List[CompletionChoice]
    usage: Optional[Usage] = None
    # llama-server's, of the first choice: in the answer, and in the last chunk of a stream
    timings: Optional[Timings] = None

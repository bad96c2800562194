"""POST /v1/embeddings request and response."""
from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator

from ..base import Reply, Strict
from .common import NonEmpty, TokenIds


class EmbeddingRequest(Strict):
    model: str = Field(..., min_length=1)
    input: Union[NonEmpty[str], NonEmpty[List[NonEmpty[str]]], TokenIds, NonEmpty[List[TokenIds]]]
    encoding_format: Optional[Literal["float", "base64"]] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v):  # type: ignore[no-untyped-def]
        if isinstance(v, list) and not v:
            raise ValueError("input must not be empty")
        return v


class EmbeddingItem(Reply):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[List[float], str]


class EmbeddingUsage(Reply):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Reply):
    object: Literal["list"] = "list"
    data: List[EmbeddingItem]
    model: str
    usage: EmbeddingUsage

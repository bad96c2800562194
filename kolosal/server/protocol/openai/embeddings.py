"""POST /v1/embeddings and GET /v1/models shapes."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator

from .common import NonEmpty, Strict, TokenIds


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


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[List[float], str]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: List[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kolosal"
    status: str
    context_length: Optional[int] = Field(None, description="tokens of context one request can use (per slot)")
    aliases: List[str] = Field(default_factory=list, description="other names requests may use for this model")
    meta: Optional[Dict[str, Any]] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: List[ModelCard]

"""GET /v1/models and /v1/models/{id} responses."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import Field

from ..base import Reply


class ModelCard(Reply):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kolosal"
    status: str
    context_length: Optional[int] = Field(description="tokens of context one request can use (per slot)")
    aliases: List[str] = Field(default_factory=list, description="other names requests may use for this model")
    instances: Optional[List[str]] = Field(None, description="in a cluster (docs/scaling.md): the instances serving "
                                                             "this model; status 'remote' when this one does not")
    meta: Optional[Dict[str, Any]] = None  # in GET /v1/models/{id} only


class ModelList(Reply):
    object: Literal["list"] = "list"
    data: List[ModelCard]

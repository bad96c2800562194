"""Engine management, tokenizer and health shapes (not OpenAI)."""
from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import Field

from ..config_schema import LoadParams
from .base import Reply, Strict


class CreateEngineRequest(Strict):
    engine_id: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@+-]+$")
    model_path: str = Field(..., min_length=1)
    load_immediately: Optional[bool] = True
    main_gpu_id: Optional[int] = Field(None, ge=0)
    priority: Optional[Union[Literal["high", "medium", "low"], int]] = None
    pinned: Optional[bool] = False
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    replace: Optional[bool] = Field(False, description="swap the model of an existing engine_id without failing requests")
    loading_parameters: Optional[LoadParams] = Field(default_factory=LoadParams)


class EngineMemory(Reply):
    estimated_bytes: Optional[int]
    measured_bytes: Optional[int]
    prompt_cache_bytes: int


class EngineInfo(Reply):
    engine_id: str
    model_path: str = Field(..., description="the file; its name only, for keys other than admin keys")
    status: str
    created: int
    loading_parameters: Dict[str, Any]
    priority: Union[str, int]
    pinned: bool
    last_used: Optional[float]
    requests_in_flight: int
    memory: EngineMemory
    load_seconds: Optional[float]
    progress: Optional[float] = Field(None, ge=0, le=1, description="0..1 while loading (weights read), 1 once loaded")
    error: Optional[str] = None  # when the last load failed
    error_code: Optional[str] = None
    context_length: Optional[int] = None  # when loaded
    metadata: Optional[Dict[str, Any]] = None  # when loaded, in the detailed answers
    stats: Optional[Dict[str, int]] = None
    devices: Optional[List[Dict[str, Any]]] = None  # when loaded: the local CPU, then each RPC worker's device


class EngineList(Reply):
    object: Literal["list"] = "list"
    engines: List[EngineInfo]


class EngineDeleted(Reply):
    engine_id: str
    status: Literal["removed"] = "removed"


class TokenizeRequest(Strict):
    content: str
    model: Optional[str] = None
    add_special: Optional[bool] = False
    parse_special: Optional[bool] = True
    with_pieces: Optional[bool] = False


class TokenPiece(Reply):
    id: int
    piece: str


class TokenizeResponse(Reply):
    tokens: List[Union[int, TokenPiece]]


class DetokenizeRequest(Strict):
    tokens: List[Annotated[int, Field(ge=0)]]  # below the vocabulary size, stated in /openapi.json
    model: Optional[str] = None


class DetokenizeResponse(Reply):
    content: str


class EngineHealth(Reply):
    engine_id: str
    status: str
    progress: Optional[float] = Field(None, ge=0, le=1, description="while loading: the share of the weights read")


class ProcessStatus(Reply):
    pid: int
    priority: Optional[str] = Field(None, description="server.process_priority as configured (None: not set)")
    nice: Optional[int] = Field(None, description="the nice value (POSIX) or priority class (Windows) in force")
    cpu_affinity: Optional[List[int]] = Field(None, description="the CPUs the server may run on")


class HealthResponse(Reply):
    status: str = Field(..., description="ok, loading, draining or error")
    version: str
    uptime_seconds: float
    active_requests: int
    engines: List[EngineHealth]
    process: Optional[ProcessStatus] = None

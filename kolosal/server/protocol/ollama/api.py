"""Ollama's API: the request and answer shapes of /api/chat, /api/generate,
/api/embed (and the older /api/embeddings), /api/tags, /api/show, /api/ps
and /api/version. Option names are Ollama's (``options.num_predict``...)."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field

from ..base import Reply, Strict


class Options(Strict):
    """``options``: sampling settings are honoured; settings fixed when a model
    is loaded (``num_ctx``, ``num_gpu``, ``num_thread``...) are accepted and come
    from the configuration instead; an unknown name is refused."""

    # honoured
    num_predict: Optional[int] = None  # -1 / -2: until the context is full
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=0, le=1)
    seed: Optional[int] = None
    stop: Optional[List[str]] = None
    repeat_penalty: Optional[float] = Field(None, ge=0)
    repeat_last_n: Optional[int] = Field(None, ge=-1)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    mirostat: Optional[int] = Field(None, ge=0, le=2, description="0: off, 1: Mirostat, 2: Mirostat 2.0")
    mirostat_tau: Optional[float] = None
    mirostat_eta: Optional[float] = None
    tfs_z: Optional[float] = None
    penalize_newline: Optional[bool] = None
    # set by the model's configuration (load_params), accepted and ignored here
    num_ctx: Optional[int] = None
    num_batch: Optional[int] = None
    num_gpu: Optional[int] = None
    main_gpu: Optional[int] = None
    low_vram: Optional[bool] = None
    f16_kv: Optional[bool] = None
    logits_all: Optional[bool] = None
    vocab_only: Optional[bool] = None
    use_mmap: Optional[bool] = None
    use_mlock: Optional[bool] = None
    embedding_only: Optional[bool] = None
    num_thread: Optional[int] = None
    numa: Optional[bool] = None
    num_keep: Optional[int] = None


KeepAlive = Optional[Union[float, int, str]]  # seconds, or a duration such as "5m", "1h30m", "-1"
Format = Optional[Union[Literal["", "json"], Dict[str, Any]]]  # "json" or a JSON schema


class CalledFunction(Strict):
    name: str = Field(..., min_length=1)
    arguments: Union[Dict[str, Any], str] = Field(default_factory=dict)
    index: Optional[int] = None


class ToolCall(Strict):
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: CalledFunction


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Optional[str] = ""
    thinking: Optional[str] = None  # an earlier answer's reasoning: left out of the prompt
    images: Optional[List[str]] = None  # refused unless empty: text-only server
    tool_calls: Optional[List[ToolCall]] = None
    tool_name: Optional[str] = None
    tool_call_id: Optional[str] = None


class Tool(Strict):
    type: Optional[Literal["function"]] = "function"
    function: Dict[str, Any]


class GenerationFields(Strict):
    model: str = Field(..., min_length=1)
    format: Format = None
    options: Optional[Options] = None
    stream: Optional[bool] = True
    keep_alive: KeepAlive = None
    think: Optional[Union[bool, str]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class ChatRequest(GenerationFields):
    messages: Optional[List[ChatMessage]] = None  # none: only load (or, with keep_alive 0, unload) the model
    tools: Optional[List[Tool]] = None


class GenerateRequest(GenerationFields):
    prompt: Optional[str] = None  # none or empty: only load (or unload) the model
    system: Optional[str] = None
    raw: Optional[bool] = None
    # refused unless empty: no templates per request, no fill-in-the-middle, no stored contexts, text only
    template: Optional[str] = None
    suffix: Optional[str] = None
    context: Optional[List[int]] = None
    images: Optional[List[str]] = None


class EmbedRequest(Strict):
    model: str = Field(..., min_length=1)
    input: Union[str, List[str]]
    truncate: Optional[bool] = True
    options: Optional[Options] = None
    keep_alive: KeepAlive = None
    dimensions: Optional[int] = Field(None, ge=1)


class EmbeddingsRequest(Strict):
    """The older ``/api/embeddings``: one prompt, one vector."""

    model: str = Field(..., min_length=1)
    prompt: str
    options: Optional[Options] = None
    keep_alive: KeepAlive = None


class ShowRequest(Strict):
    model: Optional[str] = Field(None, min_length=1)
    name: Optional[str] = Field(None, min_length=1)  # the older spelling
    verbose: Optional[bool] = None


# -- answers -------------------------------------------------------------------


class OutFunction(Reply):
    name: str
    arguments: Dict[str, Any]


class OutToolCall(Reply):
    function: OutFunction


class OutMessage(Reply):
    role: Literal["assistant"] = "assistant"
    content: str
    thinking: Optional[str] = None
    tool_calls: Optional[List[OutToolCall]] = None


class TopLogprob(Reply):
    token: str
    logprob: float


class Logprob(Reply):
    token: str
    logprob: float
    top_logprobs: Optional[List[TopLogprob]] = None


class _Answer(Reply):
    """What a chat or generate answer, or one line of its stream, holds besides
    its text; the last (``done: true``) has the counts and durations
    (nanoseconds)."""

    model: str
    created_at: str
    done: bool
    done_reason: Optional[str] = None
    total_duration: Optional[int] = None
    load_duration: Optional[int] = None
    prompt_eval_count: Optional[int] = None
    prompt_eval_duration: Optional[int] = None
    eval_count: Optional[int] = None
    eval_duration: Optional[int] = None
    logprobs: Optional[List[Logprob]] = None


class ChatResponse(_Answer):
    """One ``/api/chat`` answer, or one line of its stream."""

    message: OutMessage


class GenerateResponse(_Answer):
    """As ``ChatResponse``, with the text in ``response``."""

    response: str
    thinking: Optional[str] = None


class EmbedResponse(Reply):
    model: str
    embeddings: List[List[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(Reply):
    embedding: List[float]


class ModelDetails(Reply):
    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: List[str]
    parameter_size: str
    quantization_level: str


class ListedModel(Reply):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class ListResponse(Reply):
    models: List[ListedModel]


class RunningModel(Reply):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class PsResponse(Reply):
    models: List[RunningModel]


class ShowResponse(Reply):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: Dict[str, Any]
    capabilities: List[str]
    modified_at: str


class VersionResponse(Reply):
    """``version``: the Ollama API level this server follows (apps compare it with
    the Ollama they need); ``server``: this server and its own version."""

    version: str
    server: str


class ErrorResponse(Reply):
    """``{"error": "..."}``."""

    error: str

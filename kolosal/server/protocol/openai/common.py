"""Fields shared by the chat and text completion requests, and the usage and log-probability answers."""
from __future__ import annotations

from typing import Annotated, Dict, List, Literal, Optional, TypeVar, Union

from pydantic import Field

from ....engine import SAMPLER_LETTERS
from ..base import Reply, Strict

T = TypeVar("T")
NonEmpty = Annotated[T, Field(min_length=1)]
# token ids as a prompt or input; the upper bound (the vocabulary) is stated per server in /openapi.json
TokenIds = Annotated[List[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class StreamOptions(Strict):
    include_usage: Optional[bool] = False
    include_obfuscation: Optional[bool] = None  # accepted, ignored: no obfuscation padding is sent


class Timings(Reply):
    """llama-server's ``timings`` of a generation: prompt tokens computed
    (``prompt_n``; ``cache_n`` came from the cache) and tokens generated, with
    their times; with speculative decoding also the tokens proposed
    (``draft_n``) and accepted (``draft_n_accepted``)."""

    cache_n: int
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float
    draft_n: Optional[int] = None
    draft_n_accepted: Optional[int] = None


class LoraScale(Strict):
    """One LoRA adapter's scale for a request (llama-server's shape; ids from GET /lora-adapters)."""

    id: int = Field(..., ge=0)
    scale: float


INT32_MAX = 2**31 - 1

# llama.cpp's sampler names and the aliases it reads (common_sampler_types_from_names)
SamplerName = Literal["penalties", "dry", "top_n_sigma", "top-n-sigma", "topnsigma", "top_k", "top-k", "topk",
                      "typ_p", "typ-p", "typp", "typ", "top_p", "top-p", "topp", "nucleus", "min_p", "min-p", "minp",
                      "xtc", "temperature", "temp", "adaptive_p", "adaptive-p", "adaptivep"]


class SamplingFields(Strict):
    """OpenAI sampling fields plus the llama.cpp extensions we support."""

    model: str = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=1e-6, le=1)  # > 0 as a float32
    n: Optional[int] = Field(1, ge=1, le=16)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[Dict[Annotated[str, Field(pattern=r"^(0|[1-9][0-9]*)$")],
                              Annotated[float, Field(ge=-100, le=100)]]] = None  # token id -> bias
    user: Optional[str] = None  # accepted, ignored
    # extensions
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=1e-6, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=1e-6, le=3.4e38)  # a finite float32
    repeat_last_n: Optional[int] = Field(None, ge=-1)
    grammar: Optional[str] = Field(None, min_length=1)
    ignore_eos: Optional[bool] = None
    # the request's LoRA adapter scales; adapters not listed are off for it (default: the global scales)
    lora: Optional[List[LoraScale]] = None
    # llama.cpp's other samplers and slot fields, under llama-server's names (docs/server.md)
    dry_multiplier: Optional[float] = Field(None, ge=0, le=3.4e38)
    dry_base: Optional[float] = Field(None, ge=1, le=3.4e38)
    dry_allowed_length: Optional[int] = Field(None, ge=0, le=INT32_MAX)
    dry_penalty_last_n: Optional[int] = Field(None, ge=-1, le=INT32_MAX)  # -1: the whole context
    dry_sequence_breakers: Optional[List[Annotated[str, Field(min_length=1)]]] = Field(None, min_length=1)
    xtc_probability: Optional[float] = Field(None, ge=0, le=1)
    xtc_threshold: Optional[float] = Field(None, ge=0, le=1)
    mirostat: Optional[int] = Field(None, ge=0, le=2)  # 0: off, 1: Mirostat, 2: Mirostat 2.0
    mirostat_tau: Optional[float] = Field(None, ge=0, le=3.4e38)
    mirostat_eta: Optional[float] = Field(None, ge=1e-6, le=1)  # > 0 as a float32
    top_n_sigma: Optional[Union[Annotated[float, Field(ge=0, le=3.4e38)], Literal[-1]]] = None  # -1: off
    min_keep: Optional[int] = Field(None, ge=0, le=INT32_MAX)
    # the sampler chain in order, by name (penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc,
    # temperature) or as llama-server's letters ("edskypmxt")
    samplers: Optional[Union[List[SamplerName], Annotated[str, Field(pattern=f"^[{''.join(SAMPLER_LETTERS)}]+$")]]] = None
    cache_prompt: Optional[bool] = None  # false: no cached prefix is reused
    id_slot: Optional[int] = Field(None, ge=-1, le=INT32_MAX)  # run in this slot (-1: any); /openapi.json states the slots
    t_max_predict_ms: Optional[int] = Field(None, ge=0, le=INT32_MAX)  # stop this long after the first token
    n_keep: Optional[int] = Field(None, ge=-1, le=INT32_MAX)  # context shift: prompt tokens kept (-1: all)


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Dict[str, int] = Field(default_factory=dict)


class TopLogprob(Reply):
    token: str
    logprob: float
    bytes: Optional[List[int]]  # the raw bytes: a token may hold part of a UTF-8 character


class TokenLogprobOut(TopLogprob):
    top_logprobs: List[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(Reply):
    content: Optional[List[TokenLogprobOut]]


FinishReason = Optional[Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]]

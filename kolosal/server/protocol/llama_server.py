"""llama-server's own request and response shapes: ``/completion``,
``/props``, ``/slots`` and ``/apply-template`` (for clients written against
llama.cpp's server). Fields of llama-server that this server cannot honour
are not declared: a request that sends one gets a 400 naming it."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, RootModel, field_validator, model_validator

from .base import Reply, Strict
from .openai.chat import Message, Tool
from .openai.common import LoraScale, Timings


class LlamaCompletionRequest(Strict):
    """POST /completion: llama-server's request fields, under its names."""

    model: Optional[str] = Field(None, min_length=1, description="the model (engine id or alias); default: the "
                                                                   "server's default or first loaded model")
    prompt: Union[str, List[Union[str, int]]] = Field(..., description="text, token ids, or a list mixing both")
    n_predict: Optional[int] = Field(-1, ge=-1, description="tokens to generate; -1: until the end or the slot's "
                                                            "context is full")
    max_tokens: Optional[int] = Field(None, ge=1, description="OpenAI's name for n_predict (n_predict wins)")
    stream: Optional[bool] = False
    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=1e-6, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=0)
    repeat_last_n: Optional[int] = Field(None, ge=-1)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = Field(None, ge=-1, le=0xFFFFFFFF, description="-1 (or 4294967295): random")
    stop: Optional[List[str]] = None
    ignore_eos: Optional[bool] = None
    logit_bias: Optional[Union[List[List[Union[str, int, float, bool]]], Dict[str, Union[float, bool]]]] = Field(
        None, description="[[token id, bias], ...] or {\"token id\": bias}; false for a bias bans the token")
    grammar: Optional[str] = Field(None, min_length=1)
    json_schema: Optional[Dict[str, Any]] = None
    n_probs: Optional[int] = Field(0, ge=0, le=20, description="top alternatives per generated token "
                                                                "(completion_probabilities)")
    post_sampling_probs: Optional[bool] = Field(False, description="only false: log-probabilities are before sampling")
    return_tokens: Optional[bool] = False
    cache_prompt: Optional[bool] = True
    id_slot: Optional[int] = Field(-1, ge=-1)
    t_max_predict_ms: Optional[int] = Field(None, ge=0)
    n_keep: Optional[int] = Field(None, ge=-1)
    lora: Optional[List[LoraScale]] = None
    # llama.cpp's other samplers
    dry_multiplier: Optional[float] = None
    dry_base: Optional[float] = None
    dry_allowed_length: Optional[int] = None
    dry_penalty_last_n: Optional[int] = None
    dry_sequence_breakers: Optional[List[str]] = None
    xtc_probability: Optional[float] = None
    xtc_threshold: Optional[float] = None
    mirostat: Optional[Literal[0, 1, 2]] = None
    mirostat_tau: Optional[float] = None
    mirostat_eta: Optional[float] = None
    top_n_sigma: Optional[float] = None
    min_keep: Optional[int] = Field(None, ge=0)
    samplers: Optional[Union[str, List[str]]] = None
    timings_per_token: Optional[bool] = Field(False, description="only false: timings come with the last chunk")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: Union[str, List[Union[str, int]]]) -> Union[str, List[Union[str, int]]]:
        if isinstance(v, str):
            if not v:
                raise ValueError("prompt must not be empty")
            return v
        if not v:
            raise ValueError("prompt must not be empty")
        if all(isinstance(p, str) for p in v) and len(v) > 1:
            raise ValueError("several prompts in one request are not supported here; send one request per prompt "
                             "(or use /v1/completions, which takes a list of prompts)")
        if any(isinstance(p, int) and p < 0 for p in v):
            raise ValueError("token ids must be >= 0")
        return v

    @field_validator("post_sampling_probs", "timings_per_token")
    @classmethod
    def _only_false(cls, v: Optional[bool], info: Any) -> Optional[bool]:
        if v:
            why = {"post_sampling_probs": "probabilities after the sampler chain are not available; "
                                          "completion_probabilities hold log-probabilities before sampling",
                   "timings_per_token": "timings are sent with the last chunk only"}[info.field_name]
            raise ValueError(f"true is not supported: {why}")
        return v

    @model_validator(mode="after")
    def _grammar_or_schema(self) -> "LlamaCompletionRequest":
        if self.grammar and self.json_schema is not None:
            raise ValueError("'grammar' and 'json_schema' cannot be combined")
        return self


class TopProb(Reply):
    id: int
    token: str
    bytes: List[int]
    logprob: float


class TokenProbs(TopProb):
    top_logprobs: List[TopProb]


class LlamaCompletionResponse(Reply):
    """The answer of ``/completion``; streamed, each chunk has ``content``,
    ``stop`` (false) and the token counts so far, and the last one ``stop``:
    true with the fields of the whole answer."""

    index: int = 0
    content: str
    tokens: List[int]
    id_slot: int
    stop: bool
    model: Optional[str] = None
    tokens_predicted: int
    tokens_evaluated: int
    generation_settings: Optional[Dict[str, Any]] = None
    prompt: Optional[str] = None
    has_new_line: Optional[bool] = None
    truncated: Optional[bool] = None
    stop_type: Optional[Literal["none", "eos", "limit", "word"]] = None
    stopping_word: Optional[str] = None
    tokens_cached: Optional[int] = None
    timings: Optional[Timings] = None
    completion_probabilities: Optional[List[TokenProbs]] = None


class DefaultGenerationSettings(Reply):
    n_ctx: int
    params: Dict[str, Any]


class Modalities(Reply):
    vision: bool = False
    audio: bool = False
    video: bool = False


class PropsResponse(Reply):
    default_generation_settings: DefaultGenerationSettings
    total_slots: int
    model_alias: str
    model_path: str = Field(..., description="the file; its name only, for keys other than admin keys")
    modalities: Modalities
    chat_template: str
    chat_template_caps: Dict[str, Any]
    endpoint_slots: bool
    endpoint_props: bool
    endpoint_metrics: bool
    build_info: str
    is_sleeping: bool


class SlotNextToken(Reply):
    has_next_token: bool
    n_decoded: int


class SlotInfo(Reply):
    id: int
    n_ctx: int
    speculative: bool
    is_processing: bool
    id_task: Optional[int] = Field(None, description="the request the slot is serving (absent when idle)")
    n_prompt_tokens: Optional[int] = None
    n_tokens_cached: int = Field(..., description="tokens whose KV the slot holds (its cached prompt and output)")
    params: Optional[Dict[str, Any]] = Field(None, description="the parameters of the request it is serving "
                                                                "(absent when idle)")
    generating: bool = Field(..., description="false while the prompt is being evaluated")
    next_token: List[SlotNextToken]


class SlotList(RootModel[List[SlotInfo]]):
    def wire(self) -> list:
        return [s.wire() for s in self.root]


class ApplyTemplateRequest(Strict):
    model: Optional[str] = Field(None, min_length=1)
    messages: List[Message] = Field(..., min_length=1)
    tools: Optional[List[Tool]] = None
    add_generation_prompt: Optional[bool] = True
    chat_template_kwargs: Optional[Dict[str, Any]] = None
    reasoning_format: Optional[Literal["none", "deepseek", "auto"]] = None


class ApplyTemplateResponse(Reply):
    prompt: str

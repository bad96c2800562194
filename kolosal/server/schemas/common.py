"""Fields shared by the chat and text completion requests."""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Unknown fields are rejected (400 naming the field). An explicit
    ``null`` for an optional field means its default, as in OpenAI's API."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _null_means_default(self):  # type: ignore[no-untyped-def]
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is None and not info.is_required():
                default = info.get_default(call_default_factory=True)
                if default is not None:
                    object.__setattr__(self, name, default)
        return self


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(Strict):
    include_usage: Optional[bool] = False
    include_obfuscation: Optional[bool] = None  # accepted, ignored: no obfuscation padding is sent


class SamplingFields(Strict):
    """OpenAI sampling fields plus the llama.cpp extensions we support."""

    model: str = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    n: Optional[int] = Field(1, ge=1, le=16)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[Dict[str, float]] = None
    user: Optional[str] = None  # accepted, ignored
    # extensions
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=0)
    repeat_last_n: Optional[int] = Field(None, ge=-1)
    grammar: Optional[str] = Field(None, min_length=1)
    ignore_eos: Optional[bool] = None

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, v: Optional[Union[str, List[str]]]) -> Optional[Union[str, List[str]]]:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, v: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
        for key, bias in (v or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got '{key}'")
            if not -100 <= bias <= 100:
                raise ValueError("biases must be between -100 and 100")
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Dict[str, int] = Field(default_factory=dict)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[List[int]] = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: List[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: Optional[List[TokenLogprobOut]] = None


FinishReason = Optional[Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]]

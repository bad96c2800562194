"""From a validated request to engine sampling kwargs, with the context check."""
from __future__ import annotations

from typing import Any, Dict, Optional

from flask import current_app, has_app_context

from ...engine import Engine
from ..errors import ApiError
from ..policy.quota import fit_to_quota
from ..protocol.openai.common import SamplingFields

_PASS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
         "presence_penalty", "frequency_penalty", "seed", "stop", "ignore_eos",
         "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
         "xtc_probability", "xtc_threshold", "mirostat", "mirostat_tau", "mirostat_eta", "top_n_sigma", "min_keep",
         "samplers", "cache_prompt", "id_slot", "t_max_predict_ms", "n_keep")


def fit_max_tokens(engine: Engine, n_prompt: int, requested: Optional[int], param: str) -> int:
    """``requested`` (or all the room left) after checking it fits one slot."""
    slot = engine.n_ctx_slot
    cap = _max_tokens_limit()
    if cap is not None and requested is not None and requested > cap:
        raise ApiError(400, f"max_tokens is {requested} but this server allows at most {cap} per request.",
                       param="max_tokens", code="invalid_value")
    want = requested if requested is not None else 0
    if engine.metadata.get("context_shift"):
        want = 0  # the context shifts to make room: only the prompt has to fit
    if n_prompt + want > slot or n_prompt >= slot:
        asked = f"{n_prompt + want} tokens ({n_prompt} in the {param}, {want} for the completion)" if want else \
            f"{n_prompt} tokens in the {param}"
        raise ApiError(400, f"This model's maximum context length is {slot} tokens per request (per slot: "
                            f"n_ctx {engine.n_ctx} shared by {engine.n_parallel} parallel slots). However, you "
                            f"requested {asked}. Please reduce the length of the {param} or the completion.",
                       param=param, code="context_length_exceeded")
    fitted = requested if requested is not None else \
        slot - n_prompt if cap is None else min(cap, slot - n_prompt)
    return fit_to_quota(n_prompt, fitted, explicit=requested is not None)  # reserved in the caller's token quota


def capped_default(default: int) -> int:
    """A default ``max_tokens`` within ``server.max_tokens_limit``."""
    cap = _max_tokens_limit()
    return default if cap is None else min(default, cap)


def _max_tokens_limit() -> Optional[int]:
    """``server.max_tokens_limit`` of the app serving this request."""
    if not has_app_context():
        return None
    state = current_app.extensions.get("kolosal")
    return state.config.server.max_tokens_limit if state is not None else None


def sampling_kwargs(req: SamplingFields, engine: Engine, max_tokens: int) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"max_tokens": max_tokens}
    for key in _PASS:
        value = getattr(req, key)
        if value is not None:
            kw[key] = value
    if req.lora is not None:
        kw["lora"] = [{"id": item.id, "scale": item.scale} for item in req.lora]
    if req.logit_bias:
        n_vocab = engine.metadata.get("n_vocab", 0)
        bias = {}
        for key, value in req.logit_bias.items():
            tok = int(key)
            if not 0 <= tok < n_vocab:
                raise ApiError(400, f"Invalid 'logit_bias': token id {tok} is outside the vocabulary (0..{n_vocab - 1}).",
                               param="logit_bias", code="invalid_value")
            bias[tok] = value
        kw["logit_bias"] = bias
    return kw


def per_choice(kw: Dict[str, Any], index: int) -> Dict[str, Any]:
    """Choice ``index`` of ``n``: a distinct seed so the choices differ."""
    if index and kw.get("seed") is not None and kw["seed"] >= 0:
        return {**kw, "seed": kw["seed"] + index}
    return kw

"""llama-server's dialect over the engine: ``/completion`` requests mapped
onto engine parameters, its answer and stream chunks, and the ``/props``,
``/slots`` and ``/apply-template`` answers."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

from kolosal import _native
from kolosal.engine import Engine, Generation, TokenLogprob

from .._version import server_version
from ..errors import ApiError
from ..limits import check_json_schema
from ..models.registry import EngineRecord
from ..protocol.llama_server import (ApplyTemplateRequest, ApplyTemplateResponse, DefaultGenerationSettings,
                                     LlamaCompletionRequest, LlamaCompletionResponse, Modalities,
                                     PropsResponse, SlotInfo, SlotNextToken, TokenProbs, TopProb)
from ..state import ServerState
from .chat import message_dict
from .runner import Watch, cancel_all, timings
from .sampling import fit_max_tokens

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a random seed per request

# llama.cpp's sampling defaults (common_params_sampling), the engine's too.
_BASE_SETTINGS: Dict[str, Any] = {
    "seed": RANDOM_SEED, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "top_n_sigma": -1.0,
    "xtc_probability": 0.0, "xtc_threshold": 0.1, "typical_p": 1.0, "repeat_last_n": 64, "repeat_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0, "dry_base": 1.75,
    "dry_allowed_length": 2, "dry_penalty_last_n": 64, "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
    "max_tokens": -1, "n_predict": -1, "n_keep": 0, "ignore_eos": False, "stream": False, "n_probs": 0,
    "min_keep": 0, "post_sampling_probs": False, "timings_per_token": False,
}

# Request fields passed to the engine under the same name when given.
_PASS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
         "presence_penalty", "frequency_penalty", "ignore_eos", "grammar", "t_max_predict_ms", "n_keep",
         "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
         "xtc_probability", "xtc_threshold", "mirostat", "mirostat_tau", "mirostat_eta", "top_n_sigma", "min_keep",
         "samplers")


def model_name(state: ServerState, name: Optional[str]) -> Optional[str]:
    """The model a request names; without one, ``server.default_model`` or
    the first loaded (else first configured) model, as llama-server serves
    its one model."""
    if name:
        return name
    if state.config.server.default_model:
        return state.config.server.default_model
    return None


def default_settings(engine: Engine) -> Dict[str, Any]:
    """llama.cpp's defaults under the engine's own (``sampling`` at load)."""
    out = dict(_BASE_SETTINGS)
    out.update(getattr(engine, "sampling_defaults", None) or {})
    out.setdefault("samplers", list(_native.default_samplers()))
    out["lora"] = [{"id": a["id"], "scale": a["scale"]} for a in _lora_adapters(engine)]
    return out


def _lora_adapters(engine: Engine) -> List[Dict[str, Any]]:
    lister = getattr(engine, "lora_adapters", None)
    return lister() if lister is not None else []


# -- /completion ---------------------------------------------------------------

def _prompt_tokens(engine: Engine, prompt: Any) -> List[int]:
    if isinstance(prompt, str):
        return engine.tokenize(prompt)
    tokens: List[int] = []
    for i, piece in enumerate(prompt):  # a mixed prompt: text pieces tokenized, special tokens only first
        tokens.extend(engine.tokenize(piece, add_special=i == 0) if isinstance(piece, str) else [piece])
    n_vocab = engine.metadata.get("n_vocab", 0)
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        raise ApiError(400, f"Invalid value for 'prompt': token id {bad[0]} is outside the vocabulary "
                            f"(0..{n_vocab - 1}).", param="prompt", code="invalid_value")
    return tokens


def _logit_bias(engine: Engine, value: Any) -> Dict[int, float]:
    """llama-server's forms: ``[[token, bias], ...]`` (a token as an id or a
    text, every token of the text biased) or ``{"token id": bias}``; a bias
    of ``false`` bans the token."""
    n_vocab = engine.metadata.get("n_vocab", 0)
    pairs = list(value.items()) if isinstance(value, dict) else value
    out: Dict[int, float] = {}
    for i, pair in enumerate(pairs):
        if isinstance(value, list) and (len(pair) != 2 or isinstance(pair[0], (bool, float))
                                        or isinstance(pair[1], str)):
            raise ApiError(400, f"Invalid value for 'logit_bias[{i}]': expected [token, bias].", param="logit_bias",
                           code="invalid_value")
        tok, bias = pair
        if isinstance(bias, bool):
            if bias:
                raise ApiError(400, "Invalid value for 'logit_bias': a bias is a number, or false to ban a token.",
                               param="logit_bias", code="invalid_value")
            bias = -math.inf
        ids = engine.tokenize(tok, add_special=False) if isinstance(tok, str) and not tok.isdigit() else [int(tok)]
        for t in ids:
            if not 0 <= t < n_vocab:
                raise ApiError(400, f"Invalid value for 'logit_bias': token id {t} is outside the vocabulary "
                                    f"(0..{n_vocab - 1}).", param="logit_bias", code="invalid_value")
            out[t] = float(bias)
    return out


def engine_kwargs(engine: Engine, req: LlamaCompletionRequest, n_prompt: int) -> Dict[str, Any]:
    """The request as engine parameters; 400 naming the field for what cannot be honoured."""
    n_predict = req.n_predict if req.n_predict is not None and req.n_predict != -1 else \
        (req.max_tokens if req.max_tokens is not None else -1)
    if n_predict == 0:
        raise ApiError(400, "n_predict 0 (evaluate the prompt, generate nothing) is not supported; ask for at least "
                            "one token or -1.", param="n_predict", code="invalid_value")
    try:
        max_tokens = fit_max_tokens(engine, n_prompt, n_predict if n_predict > 0 else None, "prompt")
    except ApiError as e:
        if e.param == "max_tokens":
            raise ApiError(e.status, e.message.replace("max_tokens", "n_predict"), param="n_predict",
                           code=e.code) from None
        raise
    kw: Dict[str, Any] = {"max_tokens": max_tokens}
    for key in _PASS:
        value = getattr(req, key)
        if value is not None:
            kw[key] = value
    if req.seed is not None and req.seed not in (-1, RANDOM_SEED):
        kw["seed"] = req.seed
    if req.stop:
        kw["stop"] = list(req.stop)
    if req.logit_bias:
        kw["logit_bias"] = _logit_bias(engine, req.logit_bias)
    if req.json_schema is not None:
        check_json_schema(req.json_schema, "json_schema")  # the server's size and depth limits
        kw["json_schema"] = json.dumps(req.json_schema)
    if req.n_probs:
        kw["top_logprobs"] = req.n_probs  # the chosen token's and the top n log-probabilities
    if req.cache_prompt is False:
        kw["cache_prompt"] = False
    if req.id_slot is not None and req.id_slot >= 0:
        if req.id_slot >= engine.n_parallel:
            raise ApiError(400, f"Invalid value for 'id_slot': {req.id_slot} is not a slot "
                                f"(0..{engine.n_parallel - 1}).", param="id_slot", code="invalid_value")
        kw["id_slot"] = req.id_slot
    if req.lora is not None:
        kw["lora"] = [{"id": item.id, "scale": item.scale} for item in req.lora]
    return kw


def generation_settings(engine: Engine, req: LlamaCompletionRequest, kw: Dict[str, Any]) -> Dict[str, Any]:
    """What the request runs with, llama-server's ``generation_settings``."""
    out = default_settings(engine)
    for key in _PASS:
        if key in kw:
            out[key] = kw[key]
    n_predict = req.n_predict if req.n_predict is not None and req.n_predict != -1 else \
        (req.max_tokens if req.max_tokens is not None else -1)
    out.update({"n_predict": n_predict, "max_tokens": n_predict, "seed": kw.get("seed", RANDOM_SEED),
                "stream": bool(req.stream), "n_probs": req.n_probs or 0, "stop": list(req.stop or []),
                "cache_prompt": req.cache_prompt is not False, "id_slot": kw.get("id_slot", -1)})
    if req.grammar:
        out["grammar"] = req.grammar
    if req.lora is not None:
        out["lora"] = kw["lora"]
    return out


def start_llama_completion(engine: Engine, req: LlamaCompletionRequest) -> "LlamaRun":
    tokens = _prompt_tokens(engine, req.prompt)
    kw = engine_kwargs(engine, req, len(tokens))
    settings = generation_settings(engine, req, kw)
    prompt = req.prompt if isinstance(req.prompt, str) else engine.detokenize(tokens, special=True)
    gen = engine.generate(tokens, **kw)
    return LlamaRun(engine, req, gen, settings, prompt, len(tokens))


def _top(lp: TokenLogprob) -> TopProb:
    return TopProb(id=lp.token, token=lp.text, bytes=list(lp.bytes), logprob=lp.logprob)


def token_probs(lps: Sequence[TokenLogprob], n: int) -> List[TokenProbs]:
    return [TokenProbs(id=lp.token, token=lp.text, bytes=list(lp.bytes), logprob=lp.logprob,
                       top_logprobs=[_top(t) for t in lp.top[:n]]) for lp in lps]


def stop_type(gen: Generation) -> str:
    reason = gen.finish_reason
    if reason == "length":
        return "limit"
    if reason == "stop":
        return "word" if gen.stop_word else "eos"
    return "none"


@dataclass
class LlamaRun:
    """One ``/completion`` generation and its answers."""

    engine: Engine
    req: LlamaCompletionRequest
    gen: Generation
    settings: Dict[str, Any]
    prompt: str
    n_prompt: int

    @property
    def gens(self) -> List[Generation]:
        return [self.gen]

    def _slot(self) -> int:
        return int(self.gen.timings.get("slot", -1))

    def _final(self, content: str, tokens: List[int], probs: Optional[List[TokenProbs]]) -> LlamaCompletionResponse:
        g, u = self.gen, self.gen.usage
        extra: Dict[str, Any] = {}
        if probs is not None:
            extra["completion_probabilities"] = probs
        return LlamaCompletionResponse(
            content=content, tokens=tokens, id_slot=self._slot(), stop=True, model=self.engine.model_id,
            tokens_predicted=u["completion_tokens"], tokens_evaluated=u["prompt_tokens"],
            generation_settings=self.settings, prompt=self.prompt, has_new_line="\n" in g.text,
            truncated=bool(g.timings.get("context_shifts", 0)), stop_type=stop_type(g),
            stopping_word=g.stop_word or "", tokens_cached=u["prompt_tokens"] + u["completion_tokens"],
            timings=timings(g), **extra)

    def response(self, w: Watch) -> LlamaCompletionResponse:
        w.finish(self.gens)
        g, req = self.gen, self.req
        probs = token_probs(g.logprobs, req.n_probs or 0) if req.n_probs else None
        return self._final(g.text, g.tokens if req.return_tokens else [], probs)

    def chunks(self, w: Watch) -> Iterator[Optional[LlamaCompletionResponse]]:
        """``content`` pieces as they come, then the last chunk (``stop``:
        true, no content: it was all sent) with the settings and timings."""
        req = self.req
        predicted = 0
        try:
            for c in w.chunks(self.gen):
                if c is None:
                    yield None
                    continue
                text, toks, lps = c
                if not (text or toks):
                    continue
                predicted += len(toks)
                extra: Dict[str, Any] = {}
                if req.n_probs and lps:
                    extra["completion_probabilities"] = token_probs(lps, req.n_probs)
                yield LlamaCompletionResponse(content=text, tokens=list(toks) if req.return_tokens else [],
                                              id_slot=self._slot(), stop=False, tokens_predicted=predicted,
                                              tokens_evaluated=self.n_prompt, **extra)
        except BaseException:
            cancel_all(self.gens)
            raise
        yield self._final("", [], None)


# -- /props, /slots, /apply-template --------------------------------------------

def build_info() -> str:
    info = json.loads(_native.build_info_json())
    backends = ",".join(info.get("backends", []))
    return f"kolosal {server_version()} (llama.cpp {info.get('llama_cpp_commit', '?')}; {backends})"


def props(engine: Engine, rec: Optional[EngineRecord], admin: bool, metrics: bool) -> PropsResponse:
    meta = engine.metadata
    path = rec.model_path if rec is not None else engine.model_path
    caps = engine._native.chat_template_caps() if hasattr(engine, "_native") else {}
    return PropsResponse(
        default_generation_settings=DefaultGenerationSettings(n_ctx=engine.n_ctx_slot,
                                                              params=default_settings(engine)),
        total_slots=engine.n_parallel, model_alias=engine.model_id,
        model_path=path if admin else os.path.basename(path), modalities=Modalities(),
        chat_template=str(meta.get("chat_template") or ""), chat_template_caps=dict(caps),
        endpoint_slots=True, endpoint_props=True, endpoint_metrics=metrics, build_info=build_info(),
        is_sleeping=False)


def _speculative(rec: Optional[EngineRecord]) -> bool:
    params = rec.params if rec is not None else {}
    return bool(params.get("draft_model") or params.get("spec_type"))


def slots(engine: Engine, rec: Optional[EngineRecord]) -> List[SlotInfo]:
    states = getattr(engine._native, "slots", None)
    if states is None:
        raise ApiError(501, "This build's engine does not report its slots.", code="not_supported")
    out = []
    for s in states():
        busy = bool(s["busy"])
        extra: Dict[str, Any] = {"id_task": int(s["request_id"]), "n_prompt_tokens": int(s["n_prompt"])} if busy else {}
        if busy and "params" in s:
            params = dict(s["params"])
            params["max_tokens"] = params["n_predict"]
            extra["params"] = params
        out.append(SlotInfo(id=int(s["id"]), n_ctx=engine.n_ctx_slot, speculative=_speculative(rec),
                            is_processing=busy, n_tokens_cached=int(s["n_cached"]),
                            generating=bool(s["generating"]),
                            next_token=[SlotNextToken(has_next_token=busy, n_decoded=int(s["n_generated"]))],
                            **extra))
    return out


def apply_template(engine: Engine, req: ApplyTemplateRequest) -> ApplyTemplateResponse:
    messages = [message_dict(m, f"messages[{i}]") for i, m in enumerate(req.messages)]
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    rendered = engine.apply_chat_template(messages, tools=tools, add_generation_prompt=req.add_generation_prompt
                                          is not False, reasoning_format=req.reasoning_format,
                                          chat_template_kwargs=req.chat_template_kwargs)
    return ApplyTemplateResponse(prompt=rendered.prompt)

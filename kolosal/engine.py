"""Python face of the native engine: argument handling, generation handles
and chat. All model work happens in the native scheduler thread."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Union

import numpy as np
import psutil

from . import _native, tool_calls
from .errors import GenerationError, InvalidParameterError, KolosalError, WorkerUnreachableError
from .rpc_endpoints import check_endpoints, connection_states, handshake


REASONING_FORMATS = ("none", "deepseek", "auto")

__all__ = ["Engine", "LoadProgress", "Generation", "ChatGeneration", "Completion", "ChatCompletion", "RenderedChat", "TokenLogprob"]

Prompt = Union[str, Sequence[int]]
LoadProgress = _native.LoadProgress

_SAMPLING_KEYS = {
    "max_tokens", "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
    "presence_penalty", "frequency_penalty", "repeat_last_n", "seed", "stop", "ignore_eos",
    "logit_bias", "grammar", "json_schema", "logprobs", "top_logprobs", "preserved_tokens",
    # llama.cpp's other samplers, under llama-server's names
    "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
    "xtc_probability", "xtc_threshold", "mirostat", "mirostat_tau", "mirostat_eta", "top_n_sigma", "min_keep",
    "samplers",
    # slot and cache handling (llama-server's request fields)
    "cache_prompt", "id_slot", "t_max_predict_ms", "n_keep", "n_probs",
}

#: Sampling parameters an Engine may be given as defaults for every request.
DEFAULT_SAMPLING_KEYS = _SAMPLING_KEYS - {"max_tokens", "stop", "logit_bias", "grammar", "json_schema", "logprobs",
                                          "top_logprobs", "preserved_tokens", "seed", "id_slot", "n_probs"}


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one generated token, with the top alternatives.
    ``bytes`` is the token's raw text: a byte-level token may hold part of a
    UTF-8 character, which ``text`` shows as U+FFFD."""

    token: int
    text: str
    logprob: float
    top: List["TokenLogprob"] = field(default_factory=list)
    bytes: bytes = b""


def _check_reasoning_format(value: Any) -> str:
    if value not in REASONING_FORMATS:
        raise InvalidParameterError(f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}; got {value!r}",
                                    param="reasoning_format")
    return value


def _template_kwargs(value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidParameterError("chat_template_kwargs must be an object of template variables",
                                    param="chat_template_kwargs")
    try:
        json.dumps(dict(value))
    except (TypeError, ValueError) as e:
        raise InvalidParameterError(f"chat_template_kwargs is not JSON-serialisable: {e}",
                                    param="chat_template_kwargs") from None
    return dict(value)


def _lora_specs(value: Any) -> List[tuple]:
    """A model's adapters: ``[{"path", "scale"}]`` (scale defaults to 1) or paths."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidParameterError("lora must be a list of {path, scale} adapters", param="lora")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, (str, os.PathLike)):
            item = {"path": item}
        if not isinstance(item, Mapping) or "path" not in item or set(item) - {"path", "scale"}:
            raise InvalidParameterError(f"lora[{i}] must be an object with 'path' and optionally 'scale'", param="lora")
        scale = item.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise InvalidParameterError(f"lora[{i}].scale must be a number", param="lora")
        out.append((os.fspath(item["path"]), float(scale)))
    return out


def _lora_request(value: Any) -> Optional[List[tuple]]:
    """A request's adapter scales, llama-server's shape: ``[{"id", "scale"}]``."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidParameterError("lora must be a list of {id, scale} objects", param="lora")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) - {"id", "scale"} or "id" not in item:
            raise InvalidParameterError(f"lora[{i}] must be an object with 'id' and 'scale'", param="lora")
        ident, scale = item["id"], item.get("scale", 0.0)
        if not isinstance(ident, int) or isinstance(ident, bool):
            raise InvalidParameterError(f"lora[{i}].id must be an integer adapter id", param="lora")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise InvalidParameterError(f"lora[{i}].scale must be a number", param="lora")
        out.append((ident, float(scale)))
    return out


SPEC_TYPES = ("draft", "ngram")


def _spec_args(draft_model: Any, spec_type: Optional[str], n_draft: Any, draft_min: Any, p_min: Any,
               spec_ngram_n: Any) -> Dict[str, Any]:
    """Speculative decoding settings for the native engine (``spec_type`` "": off)."""
    if spec_type is None:
        spec_type = "draft" if draft_model is not None else ""
    if spec_type and spec_type not in SPEC_TYPES:
        raise InvalidParameterError(f"spec_type must be one of {', '.join(SPEC_TYPES)}; got {spec_type!r}",
                                    param="spec_type")
    if spec_type == "draft" and draft_model is None:
        raise InvalidParameterError("spec_type 'draft' needs a draft_model", param="draft_model")
    if spec_type != "draft" and draft_model is not None:
        raise InvalidParameterError("draft_model is only used with spec_type 'draft'", param="spec_type")
    for name, value, low, high in (("n_draft", n_draft, 1, 256), ("draft_min", draft_min, 0, 256),
                                   ("spec_ngram_n", spec_ngram_n, 1, 1024)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidParameterError(f"{name} must be an integer in [{low}, {high}]", param=name)
    if not isinstance(p_min, (int, float)) or isinstance(p_min, bool) or not 0.0 <= p_min <= 1.0:
        raise InvalidParameterError("p_min must be a number in [0, 1]", param="p_min")
    return {"spec_type": spec_type, "draft_model": os.fspath(draft_model) if draft_model is not None else "",
            "n_draft": n_draft, "draft_min": draft_min, "p_min": float(p_min), "spec_ngram_n": spec_ngram_n}


def _native_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    unknown = set(params) - _SAMPLING_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidParameterError(f"unknown generation parameter '{name}'", param=name)
    out: Dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "stop":
            out["stop"] = [value] if isinstance(value, str) else list(value)
        elif key == "logit_bias":
            if not isinstance(value, Mapping):
                raise InvalidParameterError("invalid 'logit_bias': expected a mapping of token id to bias", "logit_bias")
            try:
                out["logit_bias"] = [(int(k), float(v)) for k, v in value.items()]
            except (TypeError, ValueError):
                raise InvalidParameterError("invalid 'logit_bias': keys must be token ids and values numbers", "logit_bias") from None
        elif key == "json_schema":
            out["json_schema"] = value if isinstance(value, str) else json.dumps(value)
        elif key == "top_logprobs":
            out["n_probs"] = value
            out["logprobs"] = True
        elif key == "seed" and isinstance(value, int) and value < 0:
            continue  # negative seed: random, as in llama.cpp
        elif key in ("preserved_tokens", "dry_sequence_breakers"):
            if isinstance(value, str) or not all(isinstance(t, str) for t in value):
                raise InvalidParameterError(f"invalid '{key}': expected a list of strings", key)
            out[key] = list(value)
        elif key == "samplers":
            # llama-server also takes one letter per sampler ("edkypmxt")
            out[key] = _sampler_names(value)
        elif key == "n_probs":
            out["n_probs"] = value
            if value:
                out["logprobs"] = True
        else:
            out[key] = value
    return out


SAMPLER_LETTERS = {"d": "dry", "k": "top_k", "p": "top_p", "m": "min_p", "y": "typ_p", "t": "temperature",
                    "x": "xtc", "s": "top_n_sigma", "e": "penalties", "a": "adaptive_p"}


def _sampler_names(value: Any) -> List[str]:
    if isinstance(value, str):
        unknown = [c for c in value if c not in SAMPLER_LETTERS]
        if unknown:
            raise InvalidParameterError(f"invalid 'samplers': unknown sampler letter '{unknown[0]}' (known: "
                                        f"{''.join(SAMPLER_LETTERS)})", "samplers")
        return [SAMPLER_LETTERS[c] for c in value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise InvalidParameterError("invalid 'samplers': expected a list of sampler names", "samplers")
    return list(value)


class Generation:
    """A running generation. Iterate it for text pieces (always whole UTF-8
    characters); ``cancel()`` stops it; ``text``, ``finish_reason``, ``usage``
    and ``timings`` are final once iteration ends (or after ``wait()``).
    Dropping the handle (an abandoned iteration, the last reference gone)
    cancels the generation: nobody could read the rest."""

    def __init__(self, native: "_native.Generation", engine: "Engine") -> None:
        self._native = native
        self._engine = engine
        self._pieces: List[str] = []
        self._tokens: List[int] = []
        self._logprobs: List[TokenLogprob] = []
        self._lock = threading.Lock()

    # -- iteration -------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            chunk = self.next_chunk()
            if chunk is None:
                raise StopIteration
            text = chunk[0]
            if text:
                return text

    def next_chunk(self, timeout: Optional[float] = None):
        """The next (text, token_ids, logprobs) chunk, or None at the end.
        Raises TimeoutError if nothing arrives within ``timeout`` seconds."""
        item = self._native.next_chunk(timeout)
        if item is None:
            return None
        text, tokens, lps = item
        logprobs = [
            TokenLogprob(t, s, lp, [TokenLogprob(tt, ts, tlp, bytes=tb) for tt, ts, tlp, tb in top], raw)
            for t, s, lp, top, raw in lps
        ]
        with self._lock:
            self._pieces.append(text)
            self._tokens.extend(tokens)
            self._logprobs.extend(logprobs)
        return text, tokens, logprobs

    def wait(self) -> "Generation":
        """Consume the rest of the output; returns self."""
        while self.next_chunk() is not None:
            pass
        return self

    def cancel(self) -> None:
        self._native.cancel()

    def exception(self) -> KolosalError:
        """What a generation that ended with ``finish_reason == "error"``
        raises: WorkerUnreachableError when its engine lost an RPC worker,
        else GenerationError."""
        msg = self.error or "generation failed"
        if self._engine.failure:
            return WorkerUnreachableError(msg)
        return GenerationError(msg)

    # -- results ---------------------------------------------------------
    @property
    def id(self) -> int:
        return self._native.id

    @property
    def done(self) -> bool:
        return self._native.done

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._pieces)

    @property
    def tokens(self) -> List[int]:
        with self._lock:
            return list(self._tokens)

    @property
    def logprobs(self) -> List[TokenLogprob]:
        with self._lock:
            return list(self._logprobs)

    @property
    def finish_reason(self) -> Optional[str]:
        return self._native.finish_reason

    @property
    def error(self) -> Optional[str]:
        return self._native.error

    @property
    def stop_word(self) -> Optional[str]:
        return self._native.stop_word

    @property
    def usage(self) -> Dict[str, int]:
        return self._native.usage

    @property
    def timings(self) -> Dict[str, float]:
        return self._native.timings


class ChatGeneration(Generation):
    """A generation from ``Engine.chat``: once finished, ``message`` holds the
    assistant message with tool calls parsed by the model's chat format."""

    def __init__(self, native, engine, chat_prompt, generic_tools: bool = False) -> None:
        super().__init__(native, engine)
        self._chat_prompt = chat_prompt
        self._message: Optional[Dict[str, Any]] = None
        #: True when tools were offered through the JSON fallback (the template has no tool support):
        #: the streamed text is then that JSON, and ``message`` holds the parsed result.
        self.generic_tools = generic_tools

    @property
    def message(self) -> Dict[str, Any]:
        if self._message is None:
            self.wait()
            content, reasoning, calls_json = self._engine._native.parse_chat_output(self.text, self._chat_prompt)
            calls = json.loads(calls_json)
            if self.generic_tools:
                content, calls = tool_calls.parse_answer(content)
            msg: Dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
            if reasoning:
                msg["reasoning_content"] = reasoning
            if calls:
                msg["tool_calls"] = calls
            self._message = msg
        return self._message

    def partial_message(self, text: str) -> Dict[str, Any]:
        """The message so far in ``text``, a prefix of this answer, read by the
        model's chat format (for streaming): content, reasoning and the tool
        calls begun, with the arguments generated so far."""
        content, reasoning, calls_json = self._engine._native.parse_chat_output(text, self._chat_prompt, True)
        return {"content": content, "reasoning_content": reasoning, "tool_calls": json.loads(calls_json)}

    @property
    def tool_calls(self) -> List[Dict[str, Any]]:
        return self.message.get("tool_calls", [])

    @property
    def finish_reason(self) -> Optional[str]:
        reason = self._native.finish_reason
        if reason == "stop" and self.done and self.tool_calls:
            return "tool_calls"
        return reason


@dataclass(frozen=True)
class RenderedChat:
    """A chat rendered by the model's template (see ``Engine.render_chat``)."""

    chat_prompt: "_native.ChatPrompt"
    tokens: List[int]
    generic_tools: bool
    #: A caller's GBNF grammar the template did not take over (applied as is).
    grammar: Optional[str] = None

    @property
    def prompt(self) -> str:
        return self.chat_prompt.prompt


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    usage: Dict[str, int]
    timings: Dict[str, float]
    tokens: List[int]
    logprobs: List[TokenLogprob]


@dataclass(frozen=True)
class ChatCompletion(Completion):
    message: Dict[str, Any] = field(default_factory=dict)

    @property
    def tool_calls(self) -> List[Dict[str, Any]]:
        return self.message.get("tool_calls", [])


def _finished(gen: Generation) -> Generation:
    gen.wait()
    if gen.finish_reason == "error":
        raise gen.exception()
    return gen


def _mark_closed_workers(endpoints: List[str], states: Dict[str, Set[str]]) -> List[str]:
    """The RPC workers among ``endpoints`` that closed this process's
    connection (``states``: from ``connection_states``), marked lost: the
    engines using them fail now and the addresses are refused until restart."""
    gone = [e for e in endpoints if "CLOSE_WAIT" in states[e]]
    if gone:
        _native.rpc_mark_lost(gone, "closed its connection (stopped or restarted)")
    return gone


def _weights_fit_huge_pages(path: str, huge_pages: bool, n_gpu_layers: int, rpc_servers: Sequence[str]) -> bool:
    """Whether ``use_mmap`` None reads the weights into memory: they stay on the
    CPU (no layers offloaded, no RPC workers), huge pages are on and available,
    and the file takes at most half the memory available now."""
    if not huge_pages or n_gpu_layers != 0 or rpc_servers or not _native.huge_pages_available():
        return False
    try:
        size = os.path.getsize(path)
    except OSError:
        return False  # the load reports the file
    return size <= psutil.virtual_memory().available // 2


class Engine:
    """A GGUF model loaded for continuous-batching generation.

    Up to ``n_parallel`` requests share every decode step; each gets
    ``n_ctx // n_parallel`` tokens of context (``n_ctx_slot``). A step
    decodes at most ``n_batch`` tokens: one for every generating request,
    then chunks of the prompts being read. The default (512, one ``n_ubatch``)
    keeps the generating requests going while long prompts are read, and of
    several prompts that arrive together the first is answered before the
    others are read; a larger ``n_batch`` reads several prompts in one step
    and answers them all at its end.

    A request goes to the free slot whose cached prompt covers more than
    ``slot_prompt_similarity`` of its own (0: never chosen that way), else to
    the least recently used free slot. What that slot held is then saved to
    a host-memory prompt cache of at most ``cache_ram_mib`` MiB (0: off, -1:
    no limit), and a saved state the new prompt extends is restored instead
    of prefilling it again.

    ``rpc_servers`` (``["host:port", ...]``, workers started with
    ``python -m kolosal.rpc_worker``) puts the model's layers on those
    workers (all of them unless ``n_gpu_layers`` says how many); only
    loopback and private addresses are accepted unless ``allow_public_rpc``.
    A worker that does not accept a connection within ``rpc_timeout``
    seconds fails the load with WorkerUnreachableError. A worker lost later
    fails the engine for good (``failure``; its requests end with an error)
    without affecting other engines.

    On Linux the large CPU buffers (the KV cache, the compute buffers, and
    the weights when they are read into memory) get transparent huge pages
    unless ``huge_pages`` is False: fewer TLB misses, faster generation.
    ``use_mmap`` None (the default) reads the weights of a model that runs on
    the CPU into such memory when huge pages are available and the file takes
    at most half the available memory, and maps the file otherwise (True:
    always map it, shared with other processes and the page cache; False:
    always read it).

    Where ggml multiplies a mostly Q4_1 model on the CPU with kolosal's own
    kernel (``kolosal.build_info()["cpu_kernels"]``; x86-64 with AVX2), which takes two
    columns at a time and so wants ubatches of an even number of tokens, a
    prompt chunk may leave one token for the next step to make them even
    (``metadata["pair_ubatches"]``). Like any other chunking (``n_batch``,
    ``n_ubatch``), that moves the logits by llama.cpp's usual batch-to-batch
    rounding; ``pair_ubatches=False`` cuts prompts as llama-server does.

    ``load_progress`` (a ``LoadProgress``) is updated while the weights are
    read: another thread may read its ``value`` (0 to 1) during the load.

    ``lora`` (``[{"path", "scale"}]``) loads LoRA adapters with their global
    scales; a request's ``lora=[{"id", "scale"}]`` sets its own (see
    ``lora_adapters``). ``draft_model`` (or ``spec_type="ngram"``) turns on
    speculative decoding for every request in flight: up to ``n_draft``
    proposed tokens per request and step, checked in the same batch as the
    other requests' tokens (``p_min``:
    the draft model's least top-token probability; ``draft_min``: fewer are
    not checked; ``spec_ngram_n``: n-gram length of the lookup)."""

    def __init__(
        self,
        model_path: Union[str, "os.PathLike[str]"],
        *,
        n_ctx: int = 4096,
        n_parallel: int = 4,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        n_gpu_layers: int = 0,
        main_gpu: int = 0,
        tensor_split: Optional[Sequence[float]] = None,
        use_mmap: Optional[bool] = None,
        use_mlock: bool = False,
        huge_pages: bool = True,
        pair_ubatches: bool = True,
        embeddings: bool = False,
        seed: Optional[int] = None,
        flash_attn: str = "auto",
        kv_unified: bool = False,
        chat_template: Optional[str] = None,
        model_id: Optional[str] = None,
        slot_prompt_similarity: float = 0.1,
        cache_ram_mib: int = 2048,
        rpc_servers: Optional[Sequence[str]] = None,
        allow_public_rpc: bool = False,
        rpc_timeout: float = 3.0,
        reasoning_format: str = "auto",
        chat_template_kwargs: Optional[Mapping[str, Any]] = None,
        load_progress: Optional["_native.LoadProgress"] = None,
        lora: Optional[Sequence[Union[Mapping[str, Any], str]]] = None,
        draft_model: Optional[Union[str, "os.PathLike[str]"]] = None,
        spec_type: Optional[str] = None,
        n_draft: int = 16,
        draft_min: int = 0,
        p_min: float = 0.0,
        spec_ngram_n: int = 12,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        context_shift: bool = False,
        sampling: Optional[Mapping[str, Any]] = None,
    ) -> None:
        for name, value, low in (("n_ctx", n_ctx, 0), ("n_parallel", n_parallel, 1), ("n_batch", n_batch, 1),
                                 ("n_ubatch", n_ubatch, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidParameterError(f"{name} must be an integer >= {low}", param=name)
        if not isinstance(cache_ram_mib, int) or isinstance(cache_ram_mib, bool) or cache_ram_mib < -1:
            raise InvalidParameterError("cache_ram_mib must be an integer >= -1 (0: off, -1: no limit)",
                                        param="cache_ram_mib")
        if (not isinstance(slot_prompt_similarity, (int, float)) or isinstance(slot_prompt_similarity, bool)
                or not 0.0 <= slot_prompt_similarity <= 1.0):
            raise InvalidParameterError("slot_prompt_similarity must be a number in [0, 1]",
                                        param="slot_prompt_similarity")
        #: Default of ``chat``'s ``reasoning_format`` and the template variables every chat gets.
        self.reasoning_format = _check_reasoning_format(reasoning_format)
        self.chat_template_kwargs = _template_kwargs(chat_template_kwargs)
        for name, value in (("cache_type_k", cache_type_k), ("cache_type_v", cache_type_v)):
            if not isinstance(value, str):
                raise InvalidParameterError(f"{name} must be a string such as 'f16' or 'q8_0'", param=name)
        for name, value in (("context_shift", context_shift), ("huge_pages", huge_pages), ("use_mlock", use_mlock),
                            ("pair_ubatches", pair_ubatches)):
            if not isinstance(value, bool):
                raise InvalidParameterError(f"{name} must be true or false", param=name)
        if use_mmap is not None and not isinstance(use_mmap, bool):
            raise InvalidParameterError("use_mmap must be true, false or null (automatic)", param="use_mmap")
        #: Sampling defaults of every request (llama-server's names); a request's own values win.
        self.sampling_defaults = self._check_defaults(sampling)
        self.model_path = os.fspath(model_path)
        self.model_id = model_id or os.path.basename(self.model_path)
        endpoints = self._rpc_endpoints(rpc_servers, allow_public_rpc, rpc_timeout)
        if use_mmap is None:
            use_mmap = not _weights_fit_huge_pages(self.model_path, huge_pages, n_gpu_layers, endpoints)
        self._native = _native.Engine(
            model_path=self.model_path,
            model_id=self.model_id,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_threads=n_threads or 0,
            n_threads_batch=n_threads_batch or 0,
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            tensor_split=list(tensor_split or []),
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            huge_pages=huge_pages,
            pair_ubatches=pair_ubatches,
            embeddings=embeddings,
            seed=seed if seed is None or seed >= 0 else None,
            flash_attn=flash_attn,
            kv_unified=kv_unified,
            chat_template=chat_template or "",
            slot_prompt_similarity=float(slot_prompt_similarity),
            cache_ram_mib=cache_ram_mib,
            rpc_servers=endpoints,
            progress=load_progress,
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            context_shift=context_shift,
            lora=_lora_specs(lora),
            **_spec_args(draft_model, spec_type, n_draft, draft_min, p_min, spec_ngram_n),
        )
        #: The RPC workers holding the model's layers (host:port).
        self.rpc_servers: List[str] = endpoints
        self._info = self._native.info()
        self._chat_caps = self._native.chat_template_caps()

    @staticmethod
    def _check_defaults(sampling: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        if sampling is None:
            return {}
        if not isinstance(sampling, Mapping):
            raise InvalidParameterError("sampling must be a mapping of sampling parameters", param="sampling")
        unknown = sorted(set(sampling) - DEFAULT_SAMPLING_KEYS)
        if unknown:
            raise InvalidParameterError(f"sampling: '{unknown[0]}' cannot be an engine default (allowed: "
                                        f"{', '.join(sorted(DEFAULT_SAMPLING_KEYS))})", param=f"sampling.{unknown[0]}")
        defaults = {k: v for k, v in sampling.items() if v is not None}
        try:
            _native.check_params(_native_params(defaults))
        except InvalidParameterError as e:
            raise InvalidParameterError(f"sampling: {e}", param=f"sampling.{e.param}") from None
        return defaults

    def _params(self, params: Mapping[str, Any]) -> Dict[str, Any]:
        """A request's parameters over the engine's defaults, for the native core."""
        if self.sampling_defaults:
            params = {**self.sampling_defaults, **{k: v for k, v in params.items() if v is not None}}
        return _native_params(params)

    # -- metadata ----------------------------------------------------------
    @property
    def metadata(self) -> Dict[str, Any]:
        """Architecture, parameter count, size, training context, vocabulary,
        chat template and the context each slot gets."""
        return dict(self._info)

    @property
    def n_ctx(self) -> int:
        return self._info["n_ctx"]

    @property
    def n_ctx_slot(self) -> int:
        return self._info["n_ctx_slot"]

    @property
    def n_parallel(self) -> int:
        return self._info["n_parallel"]

    @property
    def profiler(self) -> "_native.Profiler":
        return self._native.profiler

    @staticmethod
    def _rpc_endpoints(rpc_servers: Optional[Sequence[str]], allow_public: bool, timeout: float) -> List[str]:
        if not rpc_servers:
            return []
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise InvalidParameterError("rpc_timeout must be a number of seconds > 0", param="rpc_timeout")
        try:
            endpoints = check_endpoints(rpc_servers, allow_public=bool(allow_public), resolve=True)
        except ValueError as e:
            raise InvalidParameterError(f"invalid 'rpc_servers': {e}", param="rpc_servers") from None
        if not _native.rpc_available():
            raise InvalidParameterError("rpc_servers needs a build with the RPC backend (-DUSE_RPC=ON)",
                                        param="rpc_servers")
        # ggml's RPC client aborts the process when it cannot connect or the
        # handshake fails, and waits for good on a worker busy with another
        # client or gone from a connection it keeps: check first. A
        # connection this process keeps (another engine uses the worker) is
        # reused, and a probe would only queue behind it on the worker.
        version = _native.rpc_protocol_version()
        states = connection_states(endpoints)
        gone = _mark_closed_workers(endpoints, states)
        if gone:
            raise WorkerUnreachableError(f"the RPC worker {gone[0]} closed this server's connection (stopped or "
                                         f"restarted); it can be used again after a server restart")
        for e in endpoints:
            why = None if "ESTABLISHED" in states[e] else handshake(e, timeout, version)
            if why is not None:
                raise WorkerUnreachableError(f"the RPC worker {e} is unreachable ({why}); is "
                                             f"`python -m kolosal.rpc_worker` running there?")
        return endpoints

    def devices(self) -> List[Dict[str, Any]]:
        """The devices the model runs on: the local CPU, then each RPC
        worker's device with its ``endpoint`` (memory as at load time)."""
        self.check_workers()
        return self._native.devices()

    def check_workers(self) -> None:
        """Fails the engine now if an RPC worker closed its connection while
        idle (stopped or restarted): llama.cpp would otherwise notice only
        when it next sends there, and a load or close would wait for good."""
        if not self.rpc_servers or self._native.failure:
            return
        _mark_closed_workers(self.rpc_servers, connection_states(self.rpc_servers))

    @property
    def failure(self) -> Optional[str]:
        """Why the engine failed for good (an RPC worker was lost), else None."""
        return self._native.failure or None

    def stats(self) -> Dict[str, int]:
        """Slots in use, queued requests, token counters and the host-memory
        prompt cache (``prompt_cache_bytes``, ``prompt_cache_entries``,
        ``prompt_cache_limit_bytes``, ``prompt_cache_saves``/``_restores``)."""
        return self._native.stats()

    def slots(self) -> List[Dict[str, Any]]:
        """Every slot now: ``id``, ``busy``, its ``request_id`` (0 when idle),
        ``n_cached`` (tokens whose KV it holds), ``n_prompt``, ``n_generated``
        and ``generating`` (false while its prompt is prefilled)."""
        return self._native.slots()

    @property
    def supports_tool_calls(self) -> bool:
        """Whether the chat template renders tools and tool calls itself (else
        ``chat`` offers tools through a system message and a JSON answer)."""
        return bool(self._chat_caps.get("supports_tool_calls", False))

    # -- LoRA adapters ----------------------------------------------------------
    def lora_adapters(self) -> List[Dict[str, Any]]:
        """The model's LoRA adapters (``lora=`` at load) with their global
        scales, as llama-server's ``GET /lora-adapters`` lists them: ``id``,
        ``path``, ``scale``, ``task_name``, ``prompt_prefix``."""
        return self._native.lora_adapters()

    def set_lora_adapters(self, scales: Sequence[Mapping[str, Any]]) -> None:
        """Set the global scales, llama-server's ``POST /lora-adapters``:
        ``[{"id", "scale"}]``; adapters not listed get 0. Requests that give
        their own ``lora`` list use theirs instead."""
        self._native.set_lora_adapters(_lora_request(scales) or [])

    # -- tokenizer -----------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> List[int]:
        if not isinstance(text, str):
            raise InvalidParameterError("text must be a string", param="text")
        return self._native.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return self._native.detokenize(list(tokens), special)

    # -- generation ------------------------------------------------------------
    def _prompt_tokens(self, prompt: Prompt) -> List[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt)
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return list(prompt)
        raise InvalidParameterError("prompt must be a string or a list of token ids", param="prompt")

    def generate(self, prompt: Prompt, **params: Any) -> Generation:
        """Start generating; returns at once with an iterable handle."""
        tokens = self._prompt_tokens(prompt)
        lora = _lora_request(params.pop("lora", None))
        return Generation(self._native.submit(tokens, self._params(params), None, lora), self)

    def generate_many(self, prompts: Sequence[Prompt], **params: Any) -> List[Generation]:
        """Start several generations with the same parameters at once: they are
        admitted together and their prompts share the first decode calls."""
        if isinstance(prompts, str) or not prompts:
            raise InvalidParameterError("prompts must be a non-empty list of prompts", param="prompts")
        tokens = [self._prompt_tokens(p) for p in prompts]
        lora = _lora_request(params.pop("lora", None))
        return [Generation(n, self) for n in self._native.submit_many(tokens, self._params(params), lora)]

    def complete(self, prompt: Prompt, **params: Any) -> Completion:
        """Generate to the end and return the result."""
        g = _finished(self.generate(prompt, **params))
        return Completion(g.text, g.finish_reason or "stop", g.usage, g.timings, g.tokens, g.logprobs)

    @staticmethod
    def _chosen_tool(tools: Optional[Sequence[Mapping[str, Any]]], tool_choice: Mapping[str, Any]) -> List[Mapping[str, Any]]:
        name = (tool_choice.get("function") or {}).get("name")
        if not name or not tools:
            raise InvalidParameterError("tool_choice names no tool from 'tools'", param="tool_choice")
        chosen = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not chosen:
            raise InvalidParameterError(f"tool_choice names unknown tool '{name}'", param="tool_choice")
        return chosen

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        parallel_tool_calls: bool = False,
        add_generation_prompt: bool = True,
        json_schema: Union[str, Mapping[str, Any], None] = None,
        grammar: Optional[str] = None,
        reasoning_format: Optional[str] = None,
        chat_template_kwargs: Optional[Mapping[str, Any]] = None,
        reasoning_effort: Optional[str] = None,
    ) -> "_native.ChatPrompt":
        """Render messages with the model's chat template.

        ``reasoning_format`` (``none``, ``deepseek`` or ``auto``; default: the
        engine's) says whether a think block the template knows is read into
        ``reasoning_content``. ``chat_template_kwargs`` are extra template
        variables, over the engine's (``enable_thinking`` also switches the
        reasoning of templates that have it). ``reasoning_effort`` is passed to
        the template as a variable of that name (templates that do not read it
        ignore it); ``"none"`` turns thinking off, as in llama-server."""
        fmt = _check_reasoning_format(self.reasoning_format if reasoning_format is None else reasoning_format)
        kwargs = {**self.chat_template_kwargs, **_template_kwargs(chat_template_kwargs)}
        thinking = kwargs.get("enable_thinking", True)
        if not isinstance(thinking, bool):
            raise InvalidParameterError("chat_template_kwargs.enable_thinking must be a boolean",
                                        param="chat_template_kwargs")
        if reasoning_effort is not None:
            if not isinstance(reasoning_effort, str):
                raise InvalidParameterError("reasoning_effort must be a string", param="reasoning_effort")
            if reasoning_effort == "none":
                thinking = False
                kwargs.pop("reasoning_effort", None)
            elif reasoning_effort:
                kwargs["reasoning_effort"] = reasoning_effort
        try:
            messages_json = json.dumps(list(messages))
            tools_json = json.dumps(list(tools)) if tools else ""
        except (TypeError, ValueError) as e:
            raise InvalidParameterError(f"messages are not JSON-serialisable: {e}", param="messages") from None
        if isinstance(tool_choice, Mapping):
            # {"type": "function", "function": {"name": ...}}: only that tool, and it is required.
            tools_json = json.dumps(self._chosen_tool(tools, tool_choice))
            tool_choice = "required"
        schema = json_schema if json_schema is None or isinstance(json_schema, str) else json.dumps(json_schema)
        return self._native.apply_chat_template(
            messages_json, tools_json, tool_choice or "", parallel_tool_calls, add_generation_prompt,
            schema or "", grammar or "", fmt, thinking, json.dumps(kwargs) if kwargs else "",
        )

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        parallel_tool_calls: bool = False,
        json_schema: Union[str, Mapping[str, Any], None] = None,
        grammar: Optional[str] = None,
        reasoning_format: Optional[str] = None,
        chat_template_kwargs: Optional[Mapping[str, Any]] = None,
        reasoning_effort: Optional[str] = None,
    ) -> RenderedChat:
        """The prompt ``chat`` would run, tokenized: render once, then pass it
        to ``chat(rendered=...)`` as often as needed (e.g. for n choices)."""
        generic = bool(tools) and tool_choice != "none" and not self._chat_caps.get("supports_tool_calls", False)
        if generic:
            if json_schema is not None or grammar is not None:
                raise InvalidParameterError("tools cannot be combined with a grammar or JSON schema", param="tools")
            if isinstance(tool_choice, Mapping):
                tools = self._chosen_tool(tools, tool_choice)
            required = tool_choice is not None and tool_choice != "auto"
            messages = tool_calls.render_messages(messages, tools or [], required)
            json_schema = tool_calls.answer_schema(tools or [], required, parallel_tool_calls)
            tools, tool_choice = None, None
        cp = self.apply_chat_template(messages, tools=tools, tool_choice=tool_choice,
                                      parallel_tool_calls=parallel_tool_calls,
                                      json_schema=json_schema, grammar=grammar, reasoning_format=reasoning_format,
                                      chat_template_kwargs=chat_template_kwargs, reasoning_effort=reasoning_effort)
        tokens = self.tokenize(cp.prompt, add_special=True, parse_special=True)
        return RenderedChat(cp, tokens, generic, grammar if grammar and not cp.grammar else None)

    def chat(
        self,
        messages: Optional[Sequence[Mapping[str, Any]]] = None,
        *,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
        tool_choice: Union[str, Mapping[str, Any], None] = None,
        parallel_tool_calls: bool = False,
        stream: bool = False,
        rendered: Optional[RenderedChat] = None,
        **params: Any,
    ) -> Union[ChatGeneration, ChatCompletion]:
        """Chat with the model's own template. With ``stream=True`` returns a
        ChatGeneration to iterate; otherwise the finished ChatCompletion.
        ``json_schema`` and ``grammar`` constrain the answer; ``tools`` offer
        function calls (parsed into ``message["tool_calls"]``). ``reasoning_format``,
        ``chat_template_kwargs`` and ``reasoning_effort`` are as in ``apply_chat_template``:
        a think block goes to ``message["reasoning_content"]``."""
        json_schema = params.pop("json_schema", None)
        grammar = params.pop("grammar", None)
        template_options = {k: params.pop(k) for k in ("reasoning_format", "chat_template_kwargs", "reasoning_effort")
                             if k in params}
        if rendered is None:
            if messages is None:
                raise InvalidParameterError("'messages' is required", param="messages")
            rendered = self.render_chat(messages, tools=tools, tool_choice=tool_choice,
                                        parallel_tool_calls=parallel_tool_calls, json_schema=json_schema,
                                        grammar=grammar, **template_options)
        if rendered.grammar:
            params["grammar"] = rendered.grammar
        lora = _lora_request(params.pop("lora", None))
        native = self._native.submit(rendered.tokens, self._params(params), rendered.chat_prompt, lora)
        gen = ChatGeneration(native, self, rendered.chat_prompt, generic_tools=rendered.generic_tools)
        if stream:
            return gen
        _finished(gen)
        return ChatCompletion(gen.text, gen.finish_reason or "stop", gen.usage, gen.timings, gen.tokens,
                              gen.logprobs, gen.message)

    # -- embeddings ------------------------------------------------------------
    def embed(self, texts: Union[str, Sequence[str]], *, normalize: bool = True) -> np.ndarray:
        """Embeddings of one text (1-D) or several (2-D float32 array)."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts) if isinstance(texts, (list, tuple)) else []
        if not items or not all(isinstance(t, str) for t in items):
            raise InvalidParameterError("input must be a string or a non-empty list of strings", param="input")
        arr = np.asarray(self._native.embed(items, normalize), dtype=np.float32)
        return arr[0] if single else arr

    # -- lifetime --------------------------------------------------------------
    def close(self) -> None:
        """Free the model now; generations in flight end as ``cancelled``.

        Safe while other threads use the engine: calls in flight finish first
        (a running decode or embedding is interrupted and raises
        ``EngineClosedError``), later calls raise ``EngineClosedError``."""
        self.check_workers()  # freeing buffers on a worker that is gone would wait for good
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine({self.model_id!r}, n_ctx={self.n_ctx}, n_parallel={self.n_parallel})"

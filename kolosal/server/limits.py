"""Bounds on what one request may cost, checked before any of it reaches
the engine: the JSON body's nesting, prompts x n, stop strings, grammars
(llama.cpp's GBNF parser recurses once per nested group, without a limit)
and JSON schemas (converted to grammars the same way).

The numbers live in the ``server`` section of the configuration
(:class:`RequestLimits` reads them); ``/openapi.json`` states them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from flask import current_app, g, has_app_context, request

from .config_schema import ConfigFile, ServerSection
from .errors import ApiError

_G_BODY = "kolosal_json_body"
_G_GENERATIONS = "kolosal_generations"
EXT = "kolosal_limits"


@dataclass(frozen=True)
class RequestLimits:
    body_bytes: int
    json_depth: int
    prompts: int
    generations: int
    stop_sequences: int
    stop_chars: int
    grammar_chars: int
    grammar_depth: int
    schema_chars: int
    schema_depth: int
    queued: int
    max_tokens: Optional[int]
    embedding_inputs: int

    @classmethod
    def of(cls, s: ServerSection) -> "RequestLimits":
        return cls(body_bytes=int(s.max_request_body_mb * 1024 * 1024), json_depth=s.max_json_depth,
                   prompts=s.max_prompts, generations=s.max_generations_per_request,
                   stop_sequences=s.max_stop_sequences, stop_chars=s.max_stop_chars,
                   grammar_chars=s.max_grammar_chars, grammar_depth=s.max_grammar_depth,
                   schema_chars=s.max_json_schema_chars, schema_depth=s.max_json_schema_depth,
                   queued=s.max_queued_requests, max_tokens=s.max_tokens_limit,
                   embedding_inputs=s.max_embedding_inputs)


DEFAULTS = RequestLimits.of(ServerSection())


def install_limits(app: Any, cfg: ConfigFile) -> RequestLimits:
    limits = RequestLimits.of(cfg.server)
    app.extensions[EXT] = limits
    app.config["MAX_CONTENT_LENGTH"] = limits.body_bytes
    return limits


def current_limits() -> RequestLimits:
    if has_app_context():
        found = current_app.extensions.get(EXT)
        if found is not None:
            return found
    return DEFAULTS


# -- the JSON body -------------------------------------------------------------

def json_depth(value: Any, stop_at: int) -> int:
    """Nesting depth of arrays and objects in ``value`` (a scalar is 0); stops
    counting once past ``stop_at``. Iterative, so any depth is safe to measure."""
    deepest = 0
    stack: List[Tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > stop_at:
                return deepest
        stack.extend((c, depth) for c in children if isinstance(c, (dict, list)))
    return deepest


def _number(text: str) -> Any:
    """JSON numbers with an integral value are integers (``2.0`` is a valid
    ``n``, as JSON Schema says); others stay floats."""
    value = float(text)
    return int(value) if value.is_integer() else value


def request_json() -> Dict[str, Any]:
    """The request body as a JSON object, parsed once per request. Raises 400
    ``invalid_json`` when it is empty, malformed, not an object, or nested
    deeper than ``server.max_json_depth``."""
    if _G_BODY in g:
        return g.get(_G_BODY)
    limit = current_limits().json_depth
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = json.loads(raw, parse_float=_number)
    except RecursionError:
        data = None
        depth = limit + 1
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"The request body is not valid JSON: {e}", code="invalid_json") from None
    else:
        depth = json_depth(data, limit)
    if depth > limit:
        raise ApiError(400, f"The request body nests arrays and objects more than {limit} levels deep.",
                       code="invalid_json")
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    setattr(g, _G_BODY, data)
    return data


# -- checks on a validated request ----------------------------------------------

def _too_long(param: str, what: str, size: int, limit: int, unit: str = "characters") -> ApiError:
    return ApiError(400, f"'{param}' {what} {size} {unit}; this server accepts at most {limit}.", param=param,
                    code="string_above_max_length")


def check_stop(stop: Any, param: str = "stop", limits: Optional[RequestLimits] = None) -> None:
    lim = limits or current_limits()
    if stop is None:
        return
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > lim.stop_sequences:
        raise ApiError(400, f"'{param}' has {len(items)} sequences; this server accepts at most "
                            f"{lim.stop_sequences}.", param=param, code="array_above_max_length")
    for i, s in enumerate(items):
        if len(s) > lim.stop_chars:
            where = param if isinstance(stop, str) else f"{param}[{i}]"
            raise _too_long(where, "has", len(s), lim.stop_chars)


def grammar_depth(text: str) -> int:
    """Deepest nesting of ``( ... )`` groups in a GBNF grammar, outside string
    literals, character classes and comments: how deep llama.cpp's parser recurses."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "[":
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
        elif c == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def check_grammar(grammar: Optional[str], param: str = "grammar", limits: Optional[RequestLimits] = None) -> None:
    lim = limits or current_limits()
    if grammar is None:
        return
    if len(grammar) > lim.grammar_chars:
        raise _too_long(param, "has", len(grammar), lim.grammar_chars)
    depth = grammar_depth(grammar)
    if depth > lim.grammar_depth:
        raise ApiError(400, f"'{param}' nests groups {depth} levels deep; this server accepts at most "
                            f"{lim.grammar_depth}.", param=param, code="nesting_above_max_depth")


def check_json_schema(schema: Any, param: str, limits: Optional[RequestLimits] = None) -> None:
    lim = limits or current_limits()
    if schema is None:
        return
    depth = json_depth(schema, lim.schema_depth)
    if depth > lim.schema_depth:
        raise ApiError(400, f"'{param}' nests more than {lim.schema_depth} levels deep; this server accepts at most "
                            f"{lim.schema_depth}.", param=param, code="nesting_above_max_depth")
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    if size > lim.schema_chars:
        raise _too_long(param, "is", size, lim.schema_chars, "characters of JSON")


def prompt_count(prompt: Any) -> int:
    """How many prompts a completions ``prompt`` holds (a string or a list of
    token ids is one, as is llama-server's list mixing text and token ids)."""
    if isinstance(prompt, list) and prompt and not any(isinstance(p, int) for p in prompt):
        return len(prompt)
    return 1


def _choices(req: Any) -> int:
    n = getattr(req, "n", None)
    return n if isinstance(n, int) and n > 0 else 1


def _schemas(req: Any) -> Iterable[Tuple[str, Any]]:
    """The JSON schemas of a request that become grammars: ``response_format``
    (chat), ``text.format`` (responses) and every tool's parameters."""
    rf = getattr(req, "response_format", None)
    js = getattr(rf, "json_schema", None)
    if js is not None:
        yield "response_format.json_schema.schema", getattr(js, "schema_", None)
    fmt = getattr(getattr(req, "text", None), "format", None)
    if fmt is not None and getattr(fmt, "schema_", None) is not None:
        yield "text.format.schema", fmt.schema_
    for i, tool in enumerate(getattr(req, "tools", None) or []):
        fn = getattr(tool, "function", None)
        if fn is not None:
            yield f"tools[{i}].function.parameters", getattr(fn, "parameters", None)
        elif getattr(tool, "parameters", None) is not None:
            yield f"tools[{i}].parameters", tool.parameters


def check_request(req: Any, limits: Optional[RequestLimits] = None) -> int:
    """Every bound a validated request model is subject to; returns the number
    of generations it asks for (prompts x n), also kept for the queue check."""
    lim = limits or current_limits()
    check_stop(getattr(req, "stop", None), "stop", lim)
    check_grammar(getattr(req, "grammar", None), "grammar", lim)
    for param, schema in _schemas(req):
        check_json_schema(schema, param, lim)
    prompts = prompt_count(getattr(req, "prompt", None))
    if prompts > lim.prompts:
        raise ApiError(400, f"'prompt' has {prompts} prompts; this server accepts at most {lim.prompts} per request.",
                       param="prompt", code="array_above_max_length")
    generations = prompts * _choices(req)
    most = min(lim.generations, lim.queued)
    if generations > most:
        what = f"{prompts} prompts x n={_choices(req)}" if prompts > 1 else f"n={_choices(req)}"
        raise ApiError(400, f"This request asks for {generations} generations ({what}); this server runs at most "
                            f"{most} per request.", param="n", code="too_many_generations")
    if has_app_context():
        setattr(g, _G_GENERATIONS, generations)
        g.kolosal_choices = _choices(req)
    return generations


def request_generations() -> int:
    """Generations the current request asks for (1 until its body was checked)."""
    return g.get(_G_GENERATIONS, 1) if has_app_context() else 1


def check_queue(queued: int, generations: Optional[int] = None, limits: Optional[RequestLimits] = None) -> None:
    """503 ``server_busy`` when the engine's queue cannot take all of this
    request's generations (``server.max_queued_requests``)."""
    lim = limits or current_limits()
    gens = request_generations() if generations is None else generations
    if queued + gens > lim.queued:
        raise ApiError(503, f"The server is busy ({queued} generations queued, this request adds {gens}, the limit "
                            f"is {lim.queued}); retry later.", code="server_busy")

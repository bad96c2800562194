"""Route declarations that also feed the generated ``/openapi.json``.

Each view is declared once with ``api_route(bp, rule, ...)`` naming its
request and response models; the document is built from the app's URL map
and the pydantic models' JSON schemas."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from flask import Blueprint, Flask, current_app, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from .errors import ApiError
from .config_schema import ServerSection
from .limits import EXT as LIMITS_EXT
from .limits import RequestLimits, check_request, request_json
from .protocol.errors import ErrorResponse


AUTH_LEVELS = ("public", "health", "metrics", "user", "admin")


@dataclass(frozen=True)
class RouteSpec:
    """A view's declaration: what ``/openapi.json`` says of it, and the policy
    the request hook (``policy/__init__.py``) applies to it."""
    summary: str
    tag: str
    request: Optional[Type[BaseModel]] = None
    response: Optional[Type[BaseModel]] = None
    status: int = 200
    streams: Optional[Type[BaseModel]] = None  # SSE event model when "stream": true
    generation: Optional[str] = None  # a generation endpoint of this kind ("chat", "completion"): token quota, tracks
    auth: str = "user"  # "public", "user", "admin", or "health"/"metrics": public unless security.public_* is false
    limit: Optional[str] = "default"  # rate-limit class; None: not rate limited
    listed: bool = True  # an operation of /openapi.json
    rule: str = ""  # the URL rule as declared, without the /v1 prefix (the monitoring label)


def api_route(bp: Blueprint, rule: str, methods: Sequence[str], *, summary: str, request_model=None,
              response_model=None, status: int = 200, streams=None, generation: Optional[str] = None,
              auth: str = "user", limit: Optional[str] = "default", listed: bool = True) -> Callable:
    """Register the view on ``bp`` with its declaration (documentation and policy). ``listed=False``: not
    in ``/openapi.json`` (the Anthropic and Ollama dialects, whose errors have their own shapes)."""
    spec = RouteSpec(summary, bp.name, request_model, response_model, status, streams, generation, auth, limit,
                     listed, rule=rule)

    def deco(fn: Callable) -> Callable:
        declare(spec)(fn)
        bp.add_url_rule(rule, view_func=fn, methods=list(methods))
        return fn
    return deco


def declare(spec: RouteSpec) -> Callable:
    """Attach ``spec`` to a view registered some other way (``app.get``)."""
    if spec.auth not in AUTH_LEVELS:
        raise ValueError(f"auth={spec.auth!r}: not one of {AUTH_LEVELS}")

    def deco(fn: Callable) -> Callable:
        fn._api_spec = spec  # type: ignore[attr-defined]
        return fn
    return deco


# A client may also name the model in this header: a load balancer routes a
# body of any size by it (kolosal.cluster.haproxy) without reading the body.
MODEL_HEADER = "X-Kolosal-Model"

PUBLIC_EXT = "kolosal_public_route"  # set when keys are required: RouteSpec -> needs no key


def route_spec(endpoint: Optional[str]) -> Optional[RouteSpec]:
    """The declaration of the current app's view ``endpoint`` (``request.endpoint``), if it has one."""
    return getattr(current_app.view_functions.get(endpoint or ""), "_api_spec", None)


def parse_body(model: Type[BaseModel], untyped: bool = False) -> Any:
    """The JSON body validated as ``model``: 415 unless sent as
    ``application/json``; 400 on malformed or too deeply nested JSON, schema
    errors, or a request over the server's limits (``limits.check_request``).
    ``untyped``: a body with another content type (``curl -d``) is read as JSON
    too, unless a web page sent it (an ``Origin`` header: no form posts)."""
    if request.mimetype != "application/json" and not (untyped and "Origin" not in request.headers):
        raise ApiError(415, "Send the request body as JSON with 'Content-Type: application/json'.",
                       code="unsupported_media_type")
    data = request_json()
    check_model_header(data)
    try:
        req = model.model_validate(data, strict=True)  # JSON types as declared: no "1" for 1, no 0 for false
    except ValidationError as e:
        from .errors import from_validation
        raise from_validation(e) from None
    check_request(req)
    return req


def check_model_header(data: Any) -> None:
    """400 ``model_mismatch`` when the ``X-Kolosal-Model`` header names
    another model than the body's ``model``: a load balancer routed the
    request by the header, so the body's model may not be one this server
    was meant to answer for. Names are compared as written, as the load
    balancer compares them."""
    named = request.headers.get(MODEL_HEADER)
    if named is None or not isinstance(data, dict):
        return
    body = data.get("model")
    if isinstance(body, str) and body != named:
        raise ApiError(400, f"The {MODEL_HEADER} header names the model '{named}' and the request body "
                            f"'{body}': name the same model in both.", param="model", code="model_mismatch")


def int_range_pattern(top: int) -> str:
    """A regular expression for the decimal integers 0..``top`` (no leading zeros)."""
    digits = str(top)
    alts = ["[0-9]"] if len(digits) > 1 else []
    alts += [f"[1-9][0-9]{{{k - 1}}}" for k in range(2, len(digits))]
    for i, d in enumerate(digits):
        lo = 1 if i == 0 and len(digits) > 1 else 0
        if int(d) > lo:
            rest = len(digits) - i - 1
            alts.append(digits[:i] + f"[{lo}-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    alts.append(digits)
    return "^(" + "|".join(alts) + ")$"


def _branches(schema: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``schema`` and the members of its ``anyOf``, recursively."""
    out = [schema]
    for sub in schema.get("anyOf", []):
        out.extend(_branches(sub))
    return out


def _of_type(schema: Optional[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [b for b in _branches(schema or {}) if b.get("type") == kind]


def _loaded_metadata(app: Flask, key: str) -> List[int]:
    """``key`` of every loaded model's metadata (``n_vocab``, ``n_embd``)."""
    state = app.extensions.get("kolosal")
    values = []
    for rec in state.registry.records() if state is not None else []:
        eng = rec.engine
        if eng is not None:
            try:
                values.append(int(eng.metadata[key]))
            except Exception:
                pass
    return values


def _vocabulary(app: Flask) -> Optional[int]:
    """The smallest vocabulary of the loaded models (token ids are below it)."""
    sizes = _loaded_metadata(app, "n_vocab")
    return min(sizes) if sizes else None


def _slots(app: Flask) -> Optional[int]:
    """The fewest slots a loaded model has (request ``id_slot`` values are below it)."""
    counts = _loaded_metadata(app, "n_parallel")
    return min(counts) if counts else None


def _lora_adapters(app: Flask) -> Optional[int]:
    """The fewest LoRA adapters a loaded model has (request ``lora`` ids are below it)."""
    state = app.extensions.get("kolosal")
    counts = []
    for rec in state.registry.records() if state is not None else []:
        if rec.engine is not None:
            try:
                counts.append(len(rec.engine.lora_adapters()))
            except Exception:
                pass
    return min(counts) if counts else None


def _lora_ids(schema: Dict[str, Any], n_lora: Optional[int]) -> None:
    """An array of ``{id, scale}``: ids of the served adapters only (none: the array is empty)."""
    if n_lora is None:
        return
    if n_lora == 0:
        schema["maxItems"] = 0
    else:
        schema["items"] = {"allOf": [schema.get("items", {}),
                                     {"properties": {"id": {"type": "integer", "maximum": n_lora - 1}}}]}


def _model_names(app: Flask) -> Optional[List[str]]:
    """The names ``model`` may take (ids and aliases), or None when any name
    is answered (``server.default_model``)."""
    state = app.extensions.get("kolosal")
    if state is None or getattr(state.config.server, "default_model", None):
        return None
    names = [r.engine_id for r in state.registry.records()]
    names += [a for m in state.config.models for a in getattr(m, "aliases", [])]
    return sorted(set(names))


def _state_limits(schema: Dict[str, Any], lim: RequestLimits, n_vocab: Optional[int],
                  models: Optional[List[str]] = None, n_lora: Optional[int] = None,
                  n_slots: Optional[int] = None) -> None:
    """Write the server's configured limits (and served models) into a request body schema."""
    props = schema.get("properties", {})
    for b in _of_type(props.get("lora"), "array"):
        _lora_ids(b, n_lora)
    if schema.get("type") == "array" and schema.get("items", {}).get("$ref", "").endswith("/LoraScale"):
        _lora_ids(schema, n_lora)  # the body of POST /lora-adapters
    if models and "engine_id" not in props:
        for b in _of_type(props.get("model"), "string"):
            b["enum"] = models
            b.pop("minLength", None)
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        for b in _of_type(props.get(name), "integer"):
            if lim.max_tokens is not None:
                b["maximum"] = lim.max_tokens
    for b in _of_type(props.get("id_slot"), "integer"):
        if n_slots:
            b["maximum"] = n_slots - 1
    for b in _of_type(props.get("n"), "integer"):
        b["maximum"] = min(b.get("maximum", lim.generations), lim.generations, lim.queued)
    for b in _of_type(props.get("stop"), "string"):
        b.update(minLength=1, maxLength=lim.stop_chars)
    for b in _of_type(props.get("stop"), "array"):
        b["maxItems"] = lim.stop_sequences
        b.setdefault("items", {}).update(minLength=1, maxLength=lim.stop_chars)
    for b in _of_type(props.get("grammar"), "string"):
        b["maxLength"] = lim.grammar_chars
        b["format"] = "gbnf"
        b["description"] = f"a GBNF grammar; ( ) groups nest at most {lim.grammar_depth} deep"
    many = {"prompt": lim.prompts, "input": lim.embedding_inputs if "encoding_format" in props else None}
    for name, most in many.items():
        if name not in props or "messages" in props:
            continue
        for b in _of_type(props[name], "array"):
            items = b.get("items", {})
            if items.get("type") == "string" or items.get("type") == "array":
                if most is not None:
                    b["maxItems"] = most
            for ids in [items] + _of_type(items, "array"):
                leaf = ids.get("items", ids) if ids.get("type") == "array" else ids
                if leaf.get("type") == "integer" and n_vocab:
                    leaf["maximum"] = n_vocab - 1
    for b in _of_type(props.get("tokens"), "array"):
        if b.get("items", {}).get("type") == "integer" and n_vocab:
            b["items"]["maximum"] = n_vocab - 1
    for b in _of_type(props.get("logit_bias"), "object"):
        if n_vocab:
            b.setdefault("propertyNames", {})["pattern"] = int_range_pattern(n_vocab - 1)


def _limits_summary(lim: RequestLimits) -> Dict[str, Any]:
    return {"max_request_body_bytes": lim.body_bytes, "max_json_depth": lim.json_depth, "max_prompts": lim.prompts,
            "max_generations_per_request": min(lim.generations, lim.queued), "max_stop_sequences": lim.stop_sequences,
            "max_stop_chars": lim.stop_chars, "max_grammar_chars": lim.grammar_chars,
            "max_grammar_depth": lim.grammar_depth, "max_json_schema_chars": lim.schema_chars,
            "max_json_schema_depth": lim.schema_depth, "max_tokens": lim.max_tokens,
            "max_embedding_inputs": lim.embedding_inputs, "max_queued_requests": lim.queued}


def _sse_event(payload: Dict[str, Any]) -> Dict[str, Any]:
    """One server-sent event: ``data`` holds ``payload`` (or an error) as JSON, or ``[DONE]``."""
    data = {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [payload, {"$ref": "#/components/schemas/Error"}]}}
    return {"type": "object", "required": ["data"],
            "properties": {"data": {"anyOf": [{"const": "[DONE]"}, data]}, "event": {"type": "string"},
                           "id": {"type": "string"}, "retry": {"type": "integer"}}}


def _error(description: str) -> Dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def build_openapi(app: Flask, version: str) -> Dict[str, Any]:
    """The document of the running server: its routes, their models, and the
    limits, key requirements and error answers it enforces."""
    lim: RequestLimits = app.extensions.get(LIMITS_EXT) or RequestLimits.of(ServerSection())
    public = app.extensions.get(PUBLIC_EXT)  # None: no keys, everything open
    ops: List[tuple] = []
    models: Dict[Type[BaseModel], None] = {}
    for rule in app.url_map.iter_rules():
        spec: Optional[RouteSpec] = getattr(app.view_functions.get(rule.endpoint), "_api_spec", None)
        if spec is None or not spec.listed:
            continue
        for m in (spec.request, spec.response, spec.streams):
            if m is not None:
                models[m] = None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            ops.append((rule, method.lower(), spec))
    pairs = [(m, "validation") for m in models] + [(m, "serialization") for m in models]
    keys, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    error = ErrorResponse.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["Error"] = error
    n_vocab, names = _vocabulary(app), _model_names(app)
    n_lora, n_slots = _lora_adapters(app), _slots(app)
    dims = set(_loaded_metadata(app, "n_embd"))
    for m in models:
        if (m, "validation") in keys and any(spec.request is m for _, _, spec in ops):
            name = keys[(m, "validation")]["$ref"].rsplit("/", 1)[1]
            _state_limits(schemas[name], lim, n_vocab, names, n_lora, n_slots)
            if len(dims) == 1:  # embeddings: only the model's own size (no reduced dimensions)
                for b in _of_type(schemas[name].get("properties", {}).get("dimensions"), "integer"):
                    b["enum"] = sorted(dims)

    def ref(m: Type[BaseModel], mode: str) -> Dict[str, Any]:
        return keys[(m, mode)]

    paths: Dict[str, Dict[str, Any]] = {}
    for rule, method, spec in ops:
        path = rule.rule
        params = []
        for arg in sorted(rule.arguments):
            path = path.replace(f"<{arg}>", "{%s}" % arg).replace(f"<path:{arg}>", "{%s}" % arg)
            params.append({"name": arg, "in": "path", "required": True, "schema": {"type": "string"}})
        op: Dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag], "operationId": f"{method}_{rule.endpoint}"}
        if params:
            op["parameters"] = params
        content: Dict[str, Any] = {}
        if spec.response is not None:
            content["application/json"] = {"schema": ref(spec.response, "serialization")}
        if spec.streams is not None:
            content["text/event-stream"] = {"schema": _sse_event(ref(spec.streams, "serialization")),
                                            "description": "with \"stream\": true: one JSON event per data line "
                                                           "(an error event if the stream fails), [DONE] at the end "
                                                           "of chat and text completions"}
        op["responses"] = {str(spec.status): {"description": "success", **({"content": content} if content else {})},
                           "4XX": _error("error"), "5XX": _error("error")}
        if spec.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(spec.request, "validation")}}}
            op["responses"].update({
                "400": _error("invalid JSON, nested more than max_json_depth, a schema violation, or over a limit "
                              "of x-limits"),
                "413": _error(f"the body is larger than {lim.body_bytes} bytes"),
                "415": _error("the body was not sent as Content-Type: application/json")})
        if public is not None:
            op["security"] = [] if public(spec) else [{"bearer": []}]
            if op["security"]:
                op["responses"]["401"] = _error("no or a wrong API key")
            if spec.auth == "admin":
                op["responses"]["403"] = _error("the API key is not an admin key")
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kolosal server", "version": version,
                 "description": "OpenAI-compatible inference API with engine management. Every error is "
                                "{\"error\": {message, type, param, code}}. Methods a path does not list answer "
                                "405 with Allow; the Host header must name the server (400 host_not_allowed); "
                                "request bodies must be application/json (415) within the limits in x-limits."},
        "x-limits": _limits_summary(lim),
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

"""Route declarations that also feed the generated ``/openapi.json``.

Each view is declared once with ``api_route(bp, rule, ...)`` naming its
request and response models; the document is built from the app's URL map
and the pydantic models' JSON schemas."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from flask import Blueprint, Flask, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from .errors import ApiError
from .limits import check_request, request_json


@dataclass(frozen=True)
class RouteSpec:
    summary: str
    tag: str
    request: Optional[Type[BaseModel]] = None
    response: Optional[Type[BaseModel]] = None
    status: int = 200
    streams: Optional[Type[BaseModel]] = None  # SSE event model when "stream": true


def api_route(bp: Blueprint, rule: str, methods: Sequence[str], *, summary: str, request_model=None,
              response_model=None, status: int = 200, streams=None) -> Callable:
    def deco(fn: Callable) -> Callable:
        fn._api_spec = RouteSpec(summary, bp.name, request_model, response_model, status, streams)  # type: ignore[attr-defined]
        bp.add_url_rule(rule, view_func=fn, methods=list(methods))
        return fn
    return deco


def parse_body(model: Type[BaseModel]) -> Any:
    """The JSON body validated as ``model``: 415 unless sent as
    ``application/json``; 400 on malformed or too deeply nested JSON, schema
    errors, or a request over the server's limits (``limits.check_request``)."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Send the request body as JSON with 'Content-Type: application/json'.",
                       code="unsupported_media_type")
    data = request_json()
    try:
        req = model.model_validate(data)
    except ValidationError as e:
        from .errors import from_validation
        raise from_validation(e) from None
    check_request(req)
    return req


_ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}


def build_openapi(app: Flask, version: str) -> Dict[str, Any]:
    ops: List[tuple] = []
    models: Dict[Type[BaseModel], None] = {}
    for rule in app.url_map.iter_rules():
        spec: Optional[RouteSpec] = getattr(app.view_functions.get(rule.endpoint), "_api_spec", None)
        if spec is None:
            continue
        for m in (spec.request, spec.response, spec.streams):
            if m is not None:
                models[m] = None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            ops.append((rule, method.lower(), spec))
    pairs = [(m, "validation") for m in models] + [(m, "serialization") for m in models]
    keys, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    schemas["Error"] = _ERROR_SCHEMA

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
        if spec.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(spec.request, "validation")}}}
        content: Dict[str, Any] = {}
        if spec.response is not None:
            content["application/json"] = {"schema": ref(spec.response, "serialization")}
        if spec.streams is not None:
            content["text/event-stream"] = {"schema": ref(spec.streams, "serialization"),
                                            "description": "with \"stream\": true, SSE data events then [DONE]"}
        err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        op["responses"] = {str(spec.status): {"description": "success", **({"content": content} if content else {})},
                           "4XX": err, "5XX": err}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kolosal server", "version": version,
                 "description": "OpenAI-compatible inference API with engine management."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

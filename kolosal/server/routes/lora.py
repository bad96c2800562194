"""llama-server's LoRA adapter endpoints: the adapters a model was loaded
with (``load_params.lora``) and their global scales.

``?model=`` names the model (an engine id or alias); without it, the first
loaded one. Changing the global scales needs an admin key: they apply to
every later request that does not send its own ``lora`` list."""
from __future__ import annotations

import json
import os

from flask import Blueprint, current_app, jsonify, request
from pydantic import ValidationError

from kolosal.engine import Engine
from kolosal.errors import EngineClosedError, InvalidParameterError

from ..errors import ApiError
from ..openapi import api_route
from ..protocol.lora import LoraAdapterInfo, LoraAdapterList, LoraApplied, LoraScales
from ..security import security_of
from ..state import get_state
from .openai.common import resolve_model

bp = Blueprint("lora", __name__)


def _engine() -> Engine:
    state = get_state()
    name = request.args.get("model")
    try:
        return state.registry.engine(resolve_model(state, name) if name else None)
    except ApiError as e:
        if e.status == 404:
            raise ApiError(404, e.message, param="model", code=e.code) from None
        raise


def _scales() -> LoraScales:
    """The body: a JSON array of ``{id, scale}`` (llama-server's shape, not an object)."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Send the request body as JSON with 'Content-Type: application/json'.",
                       code="unsupported_media_type")
    try:
        data = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, list):
        raise ApiError(400, "The request body must be a JSON array of {\"id\", \"scale\"} objects.", code="invalid_json")
    try:
        return LoraScales.model_validate(data, strict=True)
    except ValidationError as e:
        from ..errors import from_validation
        raise from_validation(e) from None


@api_route(bp, "/lora-adapters", ["GET"], summary="A model's LoRA adapters and their global scales (llama-server)",
           response_model=LoraAdapterList)
def list_lora_adapters():  # type: ignore[no-untyped-def]
    engine = _engine()
    try:
        adapters = engine.lora_adapters()
    except EngineClosedError:
        raise ApiError(503, "The model is being unloaded.", code="engine_closed") from None
    if not security_of(current_app).is_admin():
        for a in adapters:
            a["path"] = os.path.basename(a["path"])
    return jsonify(LoraAdapterList([LoraAdapterInfo(**a) for a in adapters]).wire())


@api_route(bp, "/lora-adapters", ["POST"], summary="Set the global LoRA scales (llama-server); unlisted adapters get 0",
           request_model=LoraScales, response_model=LoraApplied, auth="admin")
def set_lora_adapters():  # type: ignore[no-untyped-def]
    scales = _scales()
    engine = _engine()
    try:
        engine.set_lora_adapters([{"id": s.id, "scale": s.scale} for s in scales.root])
    except InvalidParameterError as e:
        raise ApiError(400, str(e), param="lora", code="invalid_value") from None
    except EngineClosedError:
        raise ApiError(503, "The model is being unloaded.", code="engine_closed") from None
    return jsonify(LoraApplied().wire())

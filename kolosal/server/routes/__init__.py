"""Blueprints, one per API family, each served with and without ``/v1``."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask, metrics: bool = True, health: bool = True) -> None:
    """Every API family; the metrics endpoints only with ``metrics``
    (``features.metrics``; they read the app's ``Monitoring``), ``/health``
    only with ``health`` (``features.health_check``). Anthropic's Messages API
    is served like the OpenAI one; Ollama's under ``/api`` only. Errors under
    their paths take their shapes."""
    from ..errors import ERROR_SHAPES
    from ..serving.anthropic import error_body as anthropic_error
    from ..serving.ollama import error_body as ollama_error
    from . import anthropic, ollama
    from .engines import bp as engines
    from .health import bp as health_bp
    from .llama_server import bp as llama_server
    from .lora import bp as lora
    from .metrics import bp as metrics_bp
    from .openai import bp as openai
    from .tokenize import bp as tokenize

    families = (openai, anthropic.bp, engines, tokenize, lora, llama_server) + ((health_bp,) if health else ()) + \
        ((metrics_bp,) if metrics else ())
    for bp in families:
        app.register_blueprint(bp, url_prefix="/v1")
        app.register_blueprint(bp, url_prefix="", name=f"{bp.name}_root")
    app.register_blueprint(ollama.bp, url_prefix="")
    app.extensions[ERROR_SHAPES] = [(anthropic.PATHS, anthropic_error), (ollama.PATHS, ollama_error)]

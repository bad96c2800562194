"""Blueprints, one per API family, each served with and without ``/v1``."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask, metrics: bool = True) -> None:
    """Every API family; the metrics endpoints only with ``metrics``
    (``features.metrics``); they read the app's ``Monitoring``."""
    from .engines import bp as engines
    from .health import bp as health
    from .metrics import bp as metrics_bp
    from .openai import bp as openai
    from .tokenize import bp as tokenize

    for bp in (openai, engines, health, tokenize) + ((metrics_bp,) if metrics else ()):
        app.register_blueprint(bp, url_prefix="/v1")
        app.register_blueprint(bp, url_prefix="", name=f"{bp.name}_root")

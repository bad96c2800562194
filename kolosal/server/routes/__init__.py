"""Blueprints, one per API family, each served with and without ``/v1``."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask, metrics: bool = True, health: bool = True) -> None:
    """Every API family; the metrics endpoints only with ``metrics``
    (``features.metrics``; they read the app's ``Monitoring``), ``/health``
    only with ``health`` (``features.health_check``)."""
    from .engines import bp as engines
    from .health import bp as health_bp
    from .metrics import bp as metrics_bp
    from .openai import bp as openai
    from .tokenize import bp as tokenize

    families = (openai, engines, tokenize) + ((health_bp,) if health else ()) + ((metrics_bp,) if metrics else ())
    for bp in families:
        app.register_blueprint(bp, url_prefix="/v1")
        app.register_blueprint(bp, url_prefix="", name=f"{bp.name}_root")

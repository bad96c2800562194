"""Blueprints, one per API family, each served with and without ``/v1``."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from .engines import bp as engines
    from .health import bp as health
    from .openai import bp as openai
    from .tokenize import bp as tokenize

    for bp in (openai, engines, health, tokenize):
        app.register_blueprint(bp, url_prefix="/v1")
        app.register_blueprint(bp, url_prefix="", name=f"{bp.name}_root")

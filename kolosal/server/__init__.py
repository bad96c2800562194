"""Kolosal's OpenAI-compatible HTTP server (Flask app served by Waitress).

``create_app(config)`` builds the WSGI app; ``python -m kolosal.server``
runs it (see ``kolosal.server.__main__``)."""
from __future__ import annotations

from .app import create_app
from .config import ConfigError, load_config

__all__ = ["create_app", "load_config", "ConfigError"]

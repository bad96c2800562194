"""The OpenAI-compatible API: chat, completions, responses, embeddings, models."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("openai", __name__)

from . import chat, completions, embeddings, models, responses  # noqa: E402,F401  (attach the routes)

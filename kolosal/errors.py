"""Exceptions raised by kolosal.

The native core raises these classes directly (one translator in
``csrc/bindings.cpp`` maps each C++ error type to one class here), so callers
can rely on the type, never on the message text.
"""
from __future__ import annotations

from typing import Optional

__all__ = [
    "KolosalError",
    "ModelLoadError",
    "ModelNotFoundError",
    "InvalidModelError",
    "UnsupportedArchitectureError",
    "ModelPermissionError",
    "WorkerUnreachableError",
    "OutOfMemoryError",
    "ContextOverflowError",
    "InvalidParameterError",
    "EngineClosedError",
    "GenerationError",
]


class KolosalError(RuntimeError):
    """Base class of every kolosal error."""


class ModelLoadError(KolosalError):
    """The model could not be loaded."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist."""


class InvalidModelError(ModelLoadError):
    """The file is not a (complete, readable) GGUF model."""


class UnsupportedArchitectureError(ModelLoadError):
    """The GGUF file holds an architecture this build of llama.cpp does not know."""


class ModelPermissionError(ModelLoadError, PermissionError):
    """The model file exists but cannot be read."""


class WorkerUnreachableError(ModelLoadError):
    """An RPC worker (``rpc_servers``) cannot be reached: at load time, or the
    engine lost it while serving (the engine has then failed for good)."""


class OutOfMemoryError(KolosalError, MemoryError):
    """Not enough memory for the model or its context."""


class ContextOverflowError(KolosalError):
    """The prompt does not fit in the context available to one request."""


class InvalidParameterError(KolosalError, ValueError):
    """A request or engine parameter is invalid; ``param`` names it."""

    def __init__(self, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.param = param


class EngineClosedError(KolosalError):
    """The engine was closed."""


class GenerationError(KolosalError):
    """Generation failed after it started (for example a decode error)."""

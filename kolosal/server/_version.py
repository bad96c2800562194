"""The version reported by the server."""
from __future__ import annotations


def server_version() -> str:
    from kolosal import __version__
    return __version__

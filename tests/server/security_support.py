"""Helpers for the security tests: apps without models, key headers, a
throw-away redis-server (``procs.start_redis``)."""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional

from kolosal.server import create_app


def bare_app(**sections: Any):
    """An app with no models and the given config sections."""
    return create_app({"logging": {"level": "WARNING"}, **sections})


def bearer(key: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sha256_line(key: str, role: str = "") -> str:
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {role}".strip()


def error_code(resp: Any) -> Optional[str]:
    return resp.get_json()["error"]["code"]

"""Helpers for the security tests: apps without models, key headers, a
throw-away redis-server."""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from kolosal.server import create_app

from .conftest import free_port


def bare_app(**sections: Any):
    """An app with no models and the given config sections."""
    return create_app({"logging": {"level": "WARNING"}, **sections})


def bearer(key: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sha256_line(key: str, role: str = "") -> str:
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {role}".strip()


def error_code(resp: Any) -> Optional[str]:
    return resp.get_json()["error"]["code"]


def start_redis(tmp: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, no persistence; yields its URI."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/setup-env.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)

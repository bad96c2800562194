"""Fixtures: an in-process app (Flask test client) and a live server
(``python -m kolosal.server`` under Waitress on a free port), both serving
the real SmolLM2 model with n_ctx 2048 and 4 slots."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import httpx
import pytest
import yaml

from kolosal.server import create_app
from procs import free_port, stop_process, wait_for_http

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "smollm2"
# One compute thread per engine: with every core busy, OpenMP's spinning
# threads can stall a decode for many seconds on a small shared machine.
THREADS = 1


def server_config(model_path: Path, **server: object) -> Dict[str, object]:
    return {
        "server": {"host": "127.0.0.1", "port": free_port(), "worker_threads": 8, **server},
        "logging": {"level": "WARNING"},
        "inference": {"job_timeout_seconds": 120},
        "models": [{"id": MODEL_ID, "path": str(model_path), "load_at_startup": True,
                    "load_params": {"n_ctx": 2048, "n_parallel": 4, "seed": 42, "n_threads": THREADS}}],
    }


@dataclass
class LiveServer:
    proc: subprocess.Popen
    base_url: str
    config_path: Path

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def log(self) -> str:
        return (self.config_path.parent / "server.log").read_text()

    def slots_busy(self) -> int:
        r = httpx.get(f"{self.base_url}/engines/{MODEL_ID}/status", timeout=10)
        return r.json()["stats"]["slots_busy"]

    def wait_slots_busy(self, busy: int, timeout: float = 10) -> int:
        """Polls until ``slots_busy() == busy`` or ``timeout`` passes; returns the last value."""
        deadline = time.monotonic() + timeout
        value = self.slots_busy()
        while value != busy and time.monotonic() < deadline:
            time.sleep(0.05)
            value = self.slots_busy()
        return value

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.proc, sig, timeout)

    def access_lines(self, where: Callable[[dict], bool], count: int, timeout: float = 30) -> List[dict]:
        """The access lines of its log (under ``logs/`` beside its config) for which ``where`` holds, once
        ``count`` are written (a line is written when its response has been sent, so it may trail the
        client's read by a moment) or ``timeout`` seconds have passed."""
        path = self.config_path.parent / "logs" / "kolosal.log"
        deadline = time.monotonic() + timeout
        while True:
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            mine = [x for x in lines if x["component"] == "access" and where(x)]
            if len(mine) >= count or time.monotonic() > deadline:
                return mine
            time.sleep(0.05)


def start_server(config: Dict[str, object], tmp: Path, extra_args: Optional[List[str]] = None,
                 wait: bool = True) -> LiveServer:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = config["server"]["port"]  # type: ignore[index]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "kolosal.server", "--config", str(path), *(extra_args or [])],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    server = LiveServer(proc, f"http://127.0.0.1:{port}", path)
    if wait:
        wait_healthy(server)
    return server


def wait_healthy(server: LiveServer, timeout: float = 90, log: Optional[Callable[[], str]] = None,
                 path: str = "/health", **get: object) -> None:
    """Until ``path`` answers 200 (``get``: headers...); a server that does
    not by ``timeout`` is killed. ``log``: its output (default ``server.log``)."""
    try:
        wait_for_http(server.base_url + path, "server", timeout, proc=server.proc, log=log or server.log, **get)
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise


@pytest.fixture(scope="session")
def live_server(model_path, tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(server_config(model_path), tmp_path_factory.mktemp("live"))
    yield server
    code = server.stop()
    assert code == 0, server.log()


@pytest.fixture(scope="session")
def app(model_path):
    application = create_app(server_config(model_path))
    yield application
    application.extensions["kolosal"].registry.close_all()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def oai(live_server):
    import openai
    with openai.OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def http(live_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=60) as c:
        yield c


def chat_body(content: str = "Say hello.", **extra: object) -> Dict[str, object]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


def raw_request(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send bytes on a fresh socket, return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def sse_events(lines: Iterator[str]) -> List[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

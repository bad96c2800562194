"""Real processes for the cluster tests: kolosal instances on 127.0.0.2-4,
HAProxy (with its admin socket), redis-server, and a steady mixed load."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx
import pytest
import yaml

from procs import stop_process, wait_for_http, wait_until

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# two slots of 512 tokens and one compute thread each: three instances share a small machine
LOAD_PARAMS = {"n_ctx": 1024, "n_parallel": 2, "seed": 42, "n_threads": 1}


def need(program: str) -> str:
    exe = shutil.which(program)
    if exe is None:
        pytest.skip(f"{program} is not installed (scripts/setup-env.sh installs it from Debian)")
    return exe


def model_entry(model_id: str, path: Path) -> Dict[str, Any]:
    return {"id": model_id, "path": str(path), "load_at_startup": True, "load_params": dict(LOAD_PARAMS)}


def instance_config(host: str, port: int, models: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    server = {"host": host, "port": port, "worker_threads": 8, "drain_delay_seconds": 3,
              "shutdown_grace_seconds": 60}
    server.update(extra.pop("server", {}))
    return {"server": server, "logging": {"level": "WARNING"}, "inference": {"job_timeout_seconds": 60},
            "models": models, **extra}


@dataclass
class Instance:
    """One ``python -m kolosal.server`` process; ``start()`` again after a stop reuses its address."""
    name: str
    host: str
    port: int
    config: Dict[str, Any]
    workdir: Path
    args: List[str] = field(default_factory=list)
    proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, wait: bool = True) -> "Instance":
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(self.config))
        log = (self.workdir / "server.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "kolosal.server", "--config", str(path), *self.args],
                                     cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        assert self.proc is not None
        wait_for_http(self.url + "/v1/health", self.name, timeout, proc=self.proc, log=self.log)

    def log(self) -> str:
        p = self.workdir / "server.log"
        return p.read_text() if p.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> Optional[int]:
        if self.proc is None:
            return None
        return stop_process(self.proc, sig, timeout)

    def wait_exit(self, timeout: float = 90) -> int:
        """The exit status, once the process ends by itself (no further signal: a second one stops at once)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def requests_served(self) -> Dict[str, int]:
        """Per engine, the generation requests this instance counted (its own completion metrics)."""
        body = httpx.get(self.url + "/v1/completion-metrics", timeout=10).json()["completion_metrics"]
        return {e["engine_id"]: e["total_requests"] for e in body["per_engine"]}


class HAProxy:
    """``haproxy -db`` on a configuration file, with its admin socket for ``show stat``."""

    def __init__(self, config: Path, socket_path: Path, env: Optional[Dict[str, str]] = None) -> None:
        """``config`` may be the shipped file: the log goes beside the socket, in the test's directory."""
        self.exe = need("haproxy")
        self.config = config
        self.socket_path = socket_path
        self.stats_url: Optional[str] = None  # the stats page, when the test knows where the config puts it
        self.cluster_file: Optional[Path] = None  # the cluster file the config was written from
        self.env = {**os.environ, **(env or {})}
        check = subprocess.run([self.exe, "-c", "-f", str(config)], env=self.env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log_path = socket_path.parent / "haproxy.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([self.exe, "-db", "-f", str(config)], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(socket_path.exists, "haproxy", 10, proc=self.proc, log=self.log_path.read_text, interval=0.05)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def stats(self) -> List[Dict[str, str]]:
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def status(self, backend: str, server: str) -> str:
        """``UP``, ``DOWN``, ``MAINT``... as HAProxy's health checks see the server now."""
        for row in self.stats():
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"].split()[0]
        raise KeyError(f"{backend}/{server}")

    def wait_status(self, backend: str, server: str, want: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        status = self.status(backend, server)
        while status != want and time.monotonic() < deadline:
            time.sleep(0.1)
            status = self.status(backend, server)
        return status

    def close(self) -> None:
        stop_process(self.proc, timeout=10)
        self.log.close()


def chat(model: str, content: str = "Say hello.", max_tokens: int = 6, **extra: Any) -> Dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


@dataclass
class Outcome:
    kind: str  # "plain" or "stream"
    ok: bool
    detail: str = ""


class SteadyLoad:
    """Clients that send requests one after another until stopped: ``plain``
    non-streaming chat requests and ``streams`` streaming ones. A stream
    passes when it ends with ``[DONE]``; one cut off ends with an error event
    or a closed connection. Every client has a read timeout, so a hung stream
    shows up as a failure ("timeout") rather than hanging the test."""

    def __init__(self, base_url: str, model: str, plain: int = 2, streams: int = 2, read_timeout: float = 30,
                 headers: Optional[Dict[str, str]] = None) -> None:
        self.base_url = base_url
        self.model = model
        self.read_timeout = read_timeout
        self.headers = headers or {}
        self.outcomes: List[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=("plain",), daemon=True) for _ in range(plain)]
        self._threads += [threading.Thread(target=self._run, args=("stream",), daemon=True) for _ in range(streams)]

    def __enter__(self) -> "SteadyLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.read_timeout + 30)
        assert not any(t.is_alive() for t in self._threads), "a load client hung"

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _run(self, kind: str) -> None:
        timeout = httpx.Timeout(self.read_timeout, connect=5)
        with httpx.Client(base_url=self.base_url, timeout=timeout, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    self._record(self._plain(client) if kind == "plain" else self._stream(client))
                except httpx.TimeoutException as e:
                    self._record(Outcome(kind, False, f"timeout: {e!r}"))
                except httpx.HTTPError as e:  # connection closed mid-answer
                    self._record(Outcome(kind, False, f"closed: {e!r}"))

    def _plain(self, client: httpx.Client) -> Outcome:
        r = client.post("/v1/chat/completions", json=chat(self.model))
        ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return Outcome("plain", ok, "" if ok else f"{r.status_code} {r.text[:300]}")

    def _stream(self, client: httpx.Client) -> Outcome:
        with client.stream("POST", "/v1/chat/completions", json=chat(self.model, max_tokens=24, stream=True)) as r:
            if r.status_code != 200:
                return Outcome("stream", False, f"{r.status_code} {r.read()[:300]!r}")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        if events and events[-1] == "[DONE]":
            return Outcome("stream", True)
        errors = [e for e in events if e.startswith("{") and "error" in json.loads(e)]
        return Outcome("stream", False, f"error event: {errors[-1]}" if errors else "ended without [DONE]")

    def summary(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {"plain": {"ok": 0, "failed": 0}, "stream": {"ok": 0, "failed": 0}}
        for o in self.outcomes:
            out[o.kind]["ok" if o.ok else "failed"] += 1
        return out

    def failures(self, kind: str) -> List[str]:
        return [o.detail for o in self.outcomes if o.kind == kind and not o.ok]

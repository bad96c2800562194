"""Start and stop the two HTTP servers the benchmarks compare.

kolosal's server (``python -m kolosal.server`` with a one-model config) and
llama.cpp's ``llama-server`` built from the same vendored tree by
bench/build_llama_tools.sh. Both listen on a free loopback port; each is
started, waited for and stopped by :func:`running`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import httpx
import psutil

import kolosal

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER = ROOT / "build" / "llama-tools" / "bin" / "llama-server"
KINDS = ("llama-server", "kolosal")


def require_llama_server() -> None:
    if not LLAMA_SERVER.exists():
        sys.exit("build llama.cpp's tools first: bash bench/build_llama_tools.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str
    proc: subprocess.Popen
    url: str
    model: str          # the model name requests must carry
    log: Path

    def rss_mib(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def cpu_s(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(timeout: float = 900) -> httpx.Client:
    """An HTTP client that opens a new connection for every request: llama-server
    closes idle kept-alive connections, and a request sent on one just closed
    fails. Both servers are measured the same way."""
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=30), limits=httpx.Limits(max_keepalive_connections=0))


def wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            sys.exit(f"{server.kind} exited early with status {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    sys.exit(f"{server.kind} at {server.url} did not become ready:\n{server.log_tail()}")


def start_llama_server(model: str, *, threads: int, slots: int, ctx: int, workdir: Path,
                       http_threads: Optional[int] = None, extra: Sequence[str] = ()) -> Server:
    port = free_port()
    cmd = [str(LLAMA_SERVER), "-m", model, "-np", str(slots), "-c", str(ctx), "-t", str(threads),
           "--host", "127.0.0.1", "--port", str(port), "--no-webui", *extra]
    if http_threads:
        cmd += ["--threads-http", str(http_threads)]
    log = workdir / f"llama-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return Server("llama-server", proc, f"http://127.0.0.1:{port}", "model", log)


def start_kolosal(model: str, *, threads: int, slots: int, ctx: int, workdir: Path,
                  http_threads: Optional[int] = None, load_params: Optional[Dict[str, Any]] = None) -> Server:
    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "worker_threads": http_threads or 32},
        "logging": {"level": "WARNING"},
        "models": [{"id": "bench", "path": model, "load_at_startup": True,
                    "load_params": {"n_ctx": ctx, "n_parallel": slots, "n_threads": threads,
                                    **(load_params or {})}}],
    }
    path = workdir / f"kolosal-{port}.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "kolosal.server", "--config", str(path)]
    # Serve the same kolosal the benchmark imported.
    env = dict(os.environ, PYTHONPATH=str(Path(kolosal.__file__).resolve().parent.parent))
    log = workdir / f"kolosal-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    return Server("kolosal", proc, f"http://127.0.0.1:{port}", "bench", log)


@contextmanager
def running(kind: str, model: str, **kwargs: Any) -> Iterator[Server]:
    """A started, ready server of ``kind`` ("llama-server" or "kolosal"), stopped on exit."""
    start = start_llama_server if kind == "llama-server" else start_kolosal
    server = start(model, **kwargs)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()


def git_head() -> str:
    """The commit measured, marked when the engine or server sources differ
    from it, or when kolosal is not imported from this checkout."""
    if Path(kolosal.__file__).resolve().parent != ROOT / "kolosal":
        return "a kolosal outside this checkout"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "csrc", "kolosal")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes to csrc/ or kolosal/" if dirty else "")

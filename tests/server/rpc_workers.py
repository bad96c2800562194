"""RPC workers for the tests: ``python -m kolosal.rpc_worker`` processes on
loopback addresses (127.0.0.2, 127.0.0.3, ...) and free ports."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_endpoint(host: str = "127.0.0.2") -> str:
    """host:port where nothing listens."""
    return f"{host}:{free_port(host)}"


@dataclass
class Worker:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def start_worker(host: str, tmp: Path, *args: str, port: int = 0) -> Worker:
    """A worker on ``host`` and ``port`` (0: a free one), once it accepts connections."""
    port = port or free_port(host)
    log_path = tmp / f"rpc-worker-{host}-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kolosal.rpc_worker", "--host", host, "--port", str(port),
                                 "--threads", "1", *args], stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(proc, host, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rpc worker exited with {proc.returncode}: {worker.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return worker
        except OSError:
            time.sleep(0.05)
    worker.stop(signal.SIGKILL)
    raise RuntimeError(f"rpc worker on {worker.endpoint} did not start: {worker.log()}")

"""RPC workers for the tests: ``python -m kolosal.rpc_worker`` processes on
loopback addresses (127.0.0.2, 127.0.0.3, ...) and free ports."""
from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from procs import free_port, stop_process, wait_for_port


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
        return stop_process(self.proc, sig, timeout, kill_timeout=timeout)


def start_worker(host: str, tmp: Path, *args: str, port: int = 0) -> Worker:
    """A worker on ``host`` and ``port`` (0: a free one), once it accepts connections."""
    port = port or free_port(host)
    log_path = tmp / f"rpc-worker-{host}-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kolosal.rpc_worker", "--host", host, "--port", str(port),
                                 "--threads", "1", *args], stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(proc, host, port, log_path)
    try:
        wait_for_port(host, port, f"rpc worker on {worker.endpoint}", 30, proc=proc, log=worker.log)
    except RuntimeError:
        worker.stop(signal.SIGKILL)
        raise
    return worker

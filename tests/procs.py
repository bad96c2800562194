"""Processes the tests start: a free loopback port, waiting until a process
listens on a port or answers over HTTP, stopping it (a signal, a wait, then
SIGKILL), and a throw-away redis-server."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import httpx
import pytest


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _no_log() -> str:
    return ""


def wait_until(ready: Callable[[], bool], what: str, timeout: float, proc: Optional[subprocess.Popen] = None,
               log: Callable[[], str] = _no_log, interval: float = 0.1) -> None:
    """Polls ``ready()`` until it is true. Raises RuntimeError when ``proc``
    exits first ("<what> exited with N") or ``timeout`` passes ("<what> did
    not start"), with ``log()`` in the message."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s: {log()}")
        time.sleep(interval)


def wait_for_port(host: str, port: int, what: str = "process", timeout: float = 30, **kw: Any) -> None:
    """Until something accepts TCP connections on ``host:port`` (see ``wait_until`` for ``proc`` and ``log``)."""
    def ready() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(ready, what, timeout, interval=0.05, **kw)


def wait_for_http(url: str, what: str = "server", timeout: float = 90, status: Optional[int] = 200,
                  proc: Optional[subprocess.Popen] = None, log: Callable[[], str] = _no_log,
                  request_timeout: float = 2, **get: Any) -> None:
    """Until ``GET url`` answers ``status`` (None: any answer), each try given
    ``request_timeout`` seconds; ``get`` goes to ``httpx.get`` (headers, verify...)."""
    def ready() -> bool:
        try:
            r = httpx.get(url, timeout=request_timeout, **get)
        except httpx.TransportError:
            return False
        return status is None or r.status_code == status
    wait_until(ready, what, timeout, proc=proc, log=log)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30,
                 kill_timeout: float = 10) -> int:
    """Sends ``sig`` to a running ``proc`` and waits ``timeout`` seconds for it
    to end, then kills it; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_timeout)
    return proc.returncode


def start_redis(tmp: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, no persistence; yields its URI
    (a generator: use it as a fixture body with ``yield from``, or ``next()``
    it and ``close()`` it to stop the server)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/setup-env.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    try:
        wait_until(pong, "redis-server", 10, proc=proc, interval=0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc, signal.SIGTERM, timeout=10)

"""Per-app state kept in ``app.extensions["kolosal"]``."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterable

from flask import current_app

from .config_schema import ConfigFile
from .models.memory_policy import MemoryPolicy
from .models.registry import EngineRegistry

EXT = "kolosal"


class ServerState:
    def __init__(self, config: ConfigFile, version: str) -> None:
        self.config = config
        self.version = version
        self.registry = EngineRegistry(memory_policy(config))
        self.started = time.monotonic()
        self.draining = False  # new generation requests are refused (503 server_draining)
        self.stopping = False  # a stop signal came: /health answers 503, before draining (server.drain_delay_seconds)
        self._inflight = 0
        self._cv = threading.Condition()

    @property
    def inflight(self) -> int:
        with self._cv:
            return self._inflight

    def enter(self) -> None:
        with self._cv:
            self._inflight += 1

    def leave(self) -> None:
        with self._cv:
            self._inflight -= 1
            self._cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is in flight, False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True


def memory_policy(config: ConfigFile) -> MemoryPolicy:
    inf = config.inference
    budget = int(inf.model_cache_size_gb * 2**30) if inf.model_cache_size_gb is not None else None
    return MemoryPolicy(budget_bytes=budget, swap_threshold=inf.swap_threshold,
                        keep_alive_seconds=inf.keep_alive_seconds, load_wait_seconds=inf.model_load_timeout_seconds,
                        watch_files=inf.watch_model_files)


def get_state() -> ServerState:
    return current_app.extensions[EXT]


class InflightMiddleware:
    """Counts requests until their response body is closed (streams included);
    health and metadata requests are not counted."""

    SKIP = ("/health", "/v1/health", "/openapi.json", "/v1/models", "/models")

    def __init__(self, wsgi_app: Callable, state: ServerState) -> None:
        self.wsgi_app = wsgi_app
        self.state = state

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(self.SKIP) or environ.get("REQUEST_METHOD") in ("GET", "HEAD", "OPTIONS"):
            return self.wsgi_app(environ, start_response)
        self.state.enter()
        try:
            result = self.wsgi_app(environ, start_response)
        except BaseException:
            self.state.leave()
            raise
        return ClosingBody(result, lambda _sent: self.state.leave())


class ClosingBody:
    """A WSGI response body that calls ``on_close(bytes_sent)`` exactly once,
    when the server closes it (after the last chunk, or when the client left)."""

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[int], None]) -> None:
        self._inner = inner
        self._on_close = on_close
        self._bytes = 0
        self._closed = False

    def __iter__(self):  # type: ignore[no-untyped-def]
        for chunk in self._inner:
            self._bytes += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close(self._bytes)

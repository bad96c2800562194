"""Running the app under Waitress, with a graceful drain on SIGTERM/SIGINT."""
from __future__ import annotations

import _thread
import json
import logging
import signal
import threading
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from .app import create_app
from .config_schema import ConfigFile
from .errors import error_body
from .state import EXT, ServerState

log = logging.getLogger("kolosal.server")


class JsonErrorTask(ErrorTask):
    """Waitress' own refusals (body over ``max_request_body_size``, malformed
    requests, oversized headers) in the OpenAI error envelope, like every
    other error of the server."""

    def execute(self) -> None:
        e = self.request.error
        code = e.reason.lower().replace(" ", "_")
        kind = "server_error" if e.code >= 500 else "invalid_request_error"
        body = json.dumps(error_body(f"{e.reason}: {e.body}", kind, None, code)).encode("utf-8")
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def use_json_errors(server: Any) -> None:
    """Give every listening socket of a Waitress server the JSON error channel."""
    for srv in [server, *getattr(server, "map", {}).values()]:
        if hasattr(srv, "channel_class"):
            srv.channel_class = JsonErrorChannel


def waitress_options(cfg: ConfigFile) -> dict:
    s = cfg.server
    return {
        "host": s.host, "port": s.port, "threads": s.worker_threads, "connection_limit": s.max_connections,
        # Waitress refuses a larger body itself (413) before reading or buffering it; its limit is exclusive
        "max_request_body_size": int(s.max_request_body_mb * 1024 * 1024) + 1,
        "channel_timeout": s.keep_alive_timeout_seconds,
        # > 0 so that waitress reports gone clients (waitress.client_disconnected)
        "channel_request_lookahead": 5,
        "cleanup_interval": max(1, min(30, s.keep_alive_timeout_seconds // 2)),
        "send_bytes": 1, "ident": "kolosal",
        # forwarding headers reach the app, whose ForwardedMiddleware believes them only from
        # security.trusted_proxies (a list of addresses and networks; Waitress' trusted_proxy takes one)
        "clear_untrusted_proxy_headers": False,
    }


def serve(cfg: ConfigFile) -> int:
    from waitress import create_server

    app = create_app(cfg, load_models="background")
    state: ServerState = app.extensions[EXT]
    server = create_server(app, **waitress_options(cfg))
    use_json_errors(server)
    port = getattr(server, "effective_port", cfg.server.port)
    log.info("listening on http://%s:%s", cfg.server.host, port)
    print(f"kolosal server listening on http://{cfg.server.host}:{port}", flush=True)

    stop = threading.Event()

    def drain() -> None:
        delay = cfg.server.drain_delay_seconds
        if delay > 0:  # /health answers 503 already: a load balancer takes this instance out meanwhile
            log.info("draining: /health answers 503; new requests are still taken for %.1fs", delay)
            stop.wait(delay)
        state.draining = True
        grace = cfg.server.shutdown_grace_seconds
        log.info("draining: waiting up to %.0fs for %d in-flight request(s)", grace, state.inflight)
        if not state.wait_idle(grace):
            log.warning("grace period over; cancelling %d request(s)", state.inflight)
            state.registry.close_all()
            state.wait_idle(5.0)
        stop.set()
        _thread.interrupt_main(signal.SIGINT)

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set() or state.stopping:
            if stop.is_set():
                raise KeyboardInterrupt
            log.warning("second signal: stopping now")
            stop.set()
            raise KeyboardInterrupt
        state.stopping = True
        if cfg.server.drain_delay_seconds <= 0:
            state.draining = True
        threading.Thread(target=drain, name="kolosal-drain", daemon=True).start()

    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):  # Ctrl+Break / service stop on Windows
        signals.append(signal.SIGBREAK)
    for sig in signals:
        signal.signal(sig, on_signal)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            server.close()
        except Exception:
            pass
        state.registry.close_all()
        log.info("stopped")
    return 0 if stop.is_set() else 1



"""Running the app under Waitress, with a graceful drain on SIGTERM/SIGINT."""
from __future__ import annotations

import _thread
import logging
import signal
import threading
from typing import Any

from .app import create_app
from .config_schema import ConfigFile
from .state import EXT, ServerState

log = logging.getLogger("kolosal.server")


def waitress_options(cfg: ConfigFile) -> dict:
    s = cfg.server
    return {
        "host": s.host, "port": s.port, "threads": s.worker_threads, "connection_limit": s.max_connections,
        "channel_timeout": s.keep_alive_timeout_seconds,
        # > 0 so that waitress reports gone clients (waitress.client_disconnected)
        "channel_request_lookahead": 5,
        "cleanup_interval": max(1, min(30, s.keep_alive_timeout_seconds // 2)),
        "send_bytes": 1, "ident": "kolosal", "clear_untrusted_proxy_headers": True,
    }


def serve(cfg: ConfigFile) -> int:
    from waitress import create_server

    app = create_app(cfg, load_models="background")
    state: ServerState = app.extensions[EXT]
    server = create_server(app, **waitress_options(cfg))
    port = getattr(server, "effective_port", cfg.server.port)
    log.info("listening on http://%s:%s", cfg.server.host, port)
    print(f"kolosal server listening on http://{cfg.server.host}:{port}", flush=True)

    stop = threading.Event()

    def drain() -> None:
        grace = cfg.server.shutdown_grace_seconds
        log.info("draining: waiting up to %.0fs for %d in-flight request(s)", grace, state.inflight)
        if not state.wait_idle(grace):
            log.warning("grace period over; cancelling %d request(s)", state.inflight)
            state.registry.close_all()
            state.wait_idle(5.0)
        stop.set()
        _thread.interrupt_main(signal.SIGINT)

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set() or state.draining:
            if stop.is_set():
                raise KeyboardInterrupt
            log.warning("second signal: stopping now")
            stop.set()
            raise KeyboardInterrupt
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



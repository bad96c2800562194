"""Route llama.cpp's own log output into Python's logging.

By default llama.cpp writes to stderr (filtered by ``kolosal.set_log_level``).
``capture_llama_logs()`` queues its lines natively instead, and a daemon
thread hands them to the ``kolosal.llama`` logger, so they reach the same
handlers, format and files as everything else. No native thread ever calls
into Python.
"""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Optional

from . import _native

__all__ = ["capture_llama_logs"]

_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_thread: Optional[threading.Thread] = None
_lock = threading.Lock()


_stop = threading.Event()


def _pump(logger: logging.Logger) -> None:
    while not _stop.is_set():
        for level, text in _native.take_log_records(1.0):
            logger.log(_LEVELS.get(level, logging.INFO), text)


def _stop_pump() -> None:
    """At exit, before the interpreter tears down: a daemon thread still waiting
    in native code when Python finalizes would abort the process."""
    _stop.set()
    _native.set_log_capture(False)  # wakes the waiting reader
    if _thread is not None:
        _thread.join(5.0)


def capture_llama_logs(logger: str = "kolosal.llama") -> None:
    """Send llama.cpp's log lines to ``logging.getLogger(logger)`` from now on
    (idempotent). Which lines are produced still follows ``set_log_level``."""
    global _thread
    with _lock:
        _native.set_log_capture(True)
        if _thread is None:
            _thread = threading.Thread(target=_pump, args=(logging.getLogger(logger),), name="kolosal-llama-log",
                                       daemon=True)
            _thread.start()
            atexit.register(_stop_pump)

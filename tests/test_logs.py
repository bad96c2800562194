"""llama.cpp's log lines reach Python's logging when captured."""
from __future__ import annotations

import logging
import time

import kolosal
from kolosal.logs import capture_llama_logs


def test_llama_log_lines_reach_the_python_logger(model_path, caplog):
    capture_llama_logs()
    kolosal.set_log_level("info")
    try:
        with caplog.at_level(logging.INFO, logger="kolosal.llama"):
            with kolosal.Engine(model_path, n_ctx=512, n_parallel=1):
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any("llama_model_loader" in r.message for r in caplog.records):
                time.sleep(0.05)
    finally:
        kolosal.set_log_level("warn")
    lines = [r for r in caplog.records if r.name == "kolosal.llama"]
    assert any("llama_model_loader" in r.message for r in lines)
    assert all("\n" not in r.message for r in lines)  # whole lines, one record each
    assert {r.levelno for r in lines} <= {logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR}

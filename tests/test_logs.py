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


def test_process_with_captured_logs_exits_cleanly(model_path):
    # The log reader thread and a generation still running when the script
    # ends must not abort the process at exit.
    import os
    import subprocess
    import sys
    code = ("import kolosal, sys\n"
            "from kolosal.logs import capture_llama_logs\n"
            "capture_llama_logs(); kolosal.set_log_level('info')\n"
            "e = kolosal.Engine(sys.argv[1], n_ctx=512, n_parallel=1)\n"
            "g = e.generate('Hello', max_tokens=400, ignore_eos=True)\n"  # still running at exit
            "next(iter(g))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code, str(model_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr

"""Model load progress from llama.cpp's callback: the native LoadProgress,
the registry's log lines every 10 %, ``progress`` in /engines/{id}/status and
/health while loading, and the ``kolosal_model_load_progress`` gauge, with
the real SmolLM2 file."""
from __future__ import annotations

import logging
import re
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from kolosal import Engine
from kolosal.engine import LoadProgress
from kolosal.server import create_app
from kolosal.server.models.registry import LOADED, LOADING

PARAMS = {"n_ctx": 512, "n_parallel": 1, "n_threads": 1}


def test_engine_reports_progress_while_the_weights_load(model_path):
    progress = LoadProgress()
    assert (progress.value, progress.updates) == (0.0, 0)
    engine = Engine(model_path, load_progress=progress, **PARAMS)
    try:
        assert progress.value == 1.0
        # llama.cpp reports once per tensor, then 1.0: many intermediate values, not just the end.
        assert progress.updates > 10
    finally:
        engine.close()


def _gauge(text: str, engine: str):
    for fam in text_string_to_metric_families(text):
        if fam.name == "kolosal_model_load_progress":
            for s in fam.samples:
                if s.labels.get("engine") == engine:
                    return s.value
    return None


def test_server_shows_progress_while_loading_and_logs_each_tenth(model_path, caplog):
    cfg = {"logging": {"level": "INFO"},
           "models": [{"id": "m", "path": str(model_path), "load_at_startup": True, "load_params": PARAMS}]}
    caplog.set_level(logging.INFO, logger="kolosal.server.registry")
    app = None
    try:
        app = create_app(cfg, load_models="none")
        registry = app.extensions["kolosal"].registry
        rec = registry.record("m")
        client = app.test_client()
        assert "progress" not in client.get("/engines/m/status").get_json()  # registered: no load yet
        assert _gauge(client.get("/metrics/prometheus").get_data(as_text=True), "m") is None

        # Hold the load at the memory decision (after it started, before llama.cpp reads weights).
        with registry._memory_lock:
            loader = threading.Thread(target=registry.load, args=(rec,))
            loader.start()
            deadline = time.monotonic() + 30
            while rec.load_progress is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert rec.state == LOADING
            health = client.get("/health")
            assert health.status_code == 503
            assert health.get_json()["status"] == "loading"
            assert health.get_json()["engines"] == [{"engine_id": "m", "status": "loading", "progress": 0.0}]
            status = client.get("/engines/m/status").get_json()
            assert (status["status"], status["progress"]) == ("loading", 0.0)
            assert _gauge(client.get("/metrics/prometheus").get_data(as_text=True), "m") == 0.0
        loader.join(60)
        assert rec.state == LOADED

        assert rec.load_progress.value == 1.0 and rec.load_progress.updates > 10
        health = client.get("/health").get_json()
        assert health["status"] == "ok" and "progress" not in health["engines"][0]
        assert client.get("/engines/m/status").get_json()["progress"] == 1.0
        assert _gauge(client.get("/metrics/prometheus").get_data(as_text=True), "m") == 1.0
        steps = [int(m.group(1)) for r in caplog.records
                 if (m := re.fullmatch(r"loading m: (\d+)%", r.getMessage()))]
        assert steps == list(range(10, 101, 10))
    finally:
        if app is not None:
            app.extensions["kolosal"].registry.close_all()

"""Structured logs: JSON lines with the seed's fields, rotation, X-Request-ID
on every line of its request, the access log (key id, never the key or the
prompt unless log_prompts)."""
from __future__ import annotations

import json
import logging

import httpx
import pytest

from kolosal.server.config_schema import LoggingSection
from kolosal.server.logging_setup import JsonFormatter, configure_logging
from kolosal.server.request_log import RequestIdFilter

from .conftest import MODEL_ID, chat_body, server_config, start_server
from .security_support import bare_app, bearer, sha256_line

SEED_FIELDS = {"timestamp", "level", "component", "message", "request_id", "model", "input_tokens",
               "output_tokens", "ttft_ms", "total_time_ms", "success"}


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # a test-client response nobody closed leaves its request id set on this thread
    from kolosal.server.request_log import _request_id
    _request_id.set(None)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_formatter_fields():
    rec = logging.LogRecord("kolosal.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    rec.model, rec.component = "m", "completion_route"
    line = json.loads(JsonFormatter().format(rec))
    assert line["message"] == "hello you" and line["level"] == "INFO" and line["component"] == "completion_route"
    assert line["model"] == "m" and line["timestamp"].endswith("Z") and "request_id" in line


def test_rotation_keeps_max_files_of_json_lines(tmp_path, restore_root_logging):
    path = tmp_path / "logs" / "kolosal.log"
    configure_logging(LoggingSection(level="INFO", file_path=str(path), max_file_size_mb=0.002, max_files=3,
                                     console_output=False))
    log = logging.getLogger("kolosal.test")
    for i in range(200):
        log.info("line %d", i, extra={"n": i})
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["kolosal.log", "kolosal.log.1", "kolosal.log.2"]
    lines = [json.loads(x) for p in path.parent.iterdir() for x in p.read_text().splitlines()]
    assert all(x["component"] == "kolosal.test" and x["request_id"] is None for x in lines)
    assert max(x["n"] for x in lines) == 199


def test_request_id_accepted_generated_and_on_log_lines(caplog):
    app = bare_app(logging={"level": "INFO", "access_log": True})
    c = app.test_client()
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="kolosal.access"):
        def get(**headers: str) -> str:
            r = c.get("/v1/models", headers=headers)
            r.close()  # as a WSGI server does: the access line is written then
            return r.headers["X-Request-ID"]

        assert get(**{"X-Request-ID": "abc-123"}) == "abc-123"
        generated = get()
        assert generated.startswith("req_") and len(generated) > 10
        bad = get(**{"X-Request-ID": "bad id {\"x\": 1}"})
        assert bad.startswith("req_")
    access = [r for r in caplog.records if r.name == "kolosal.access"]
    assert [r.request_id for r in access] == ["abc-123", generated, bad]
    assert access[0].method == "GET" and access[0].path == "/v1/models" and access[0].status == 200
    assert access[0].bytes > 0 and access[0].duration_ms >= 0 and access[0].client


def test_live_server_json_log_of_a_completion(model_path, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(sha256_line("very-secret-key") + "\n")
    cfg = server_config(model_path)
    cfg["logging"] = {"level": "INFO", "file_path": str(tmp_path / "logs" / "kolosal.log"), "console_output": False,
                      "access_log": True}
    cfg["security"] = {"api_keys_file": str(keys)}
    server = start_server(cfg, tmp_path)
    try:
        secret_prompt = "Name a colour of the ocean sky"
        r = httpx.post(server.v1 + "/chat/completions", json=chat_body(secret_prompt, max_tokens=4),
                       headers={**bearer("very-secret-key"), "X-Request-ID": "trace-42"}, timeout=60)
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
        assert httpx.get(server.v1 + "/models", timeout=10).status_code == 401
        assert server.stop() == 0
    finally:
        server.stop()
    text = (tmp_path / "logs" / "kolosal.log").read_text()
    assert "very-secret-key" not in text and secret_prompt not in text
    lines = [json.loads(x) for x in text.splitlines()]
    mine = [x for x in lines if x["request_id"] == "trace-42"]
    done = [x for x in mine if x["component"] == "completion_route"]
    assert len(done) == 1 and SEED_FIELDS <= set(done[0])
    d = done[0]
    assert d["model"] == MODEL_ID and d["success"] is True and d["output_tokens"] == 4 and d["input_tokens"] > 4
    assert 0 < d["ttft_ms"] <= d["total_time_ms"]
    access = [x for x in mine if x["component"] == "access"]
    assert len(access) == 1
    a = access[0]
    assert (a["method"], a["path"], a["status"], a["client"]) == ("POST", "/v1/chat/completions", 200, "127.0.0.1")
    assert a["bytes"] == len(r.content) and a["duration_ms"] > 0 and a["key_id"].startswith("key_")
    refused = [x for x in lines if x["component"] == "access" and x["status"] == 401]
    assert refused and refused[0]["key_id"] is None and refused[0]["request_id"] != "trace-42"
    # llama.cpp's own output (model loading) is in the same file, as JSON lines at INFO.
    llama = [x for x in lines if x["component"] == "kolosal.llama"]
    assert any("llama_model_loader" in x["message"] for x in llama)
    assert {x["level"] for x in llama} <= {"INFO", "WARNING", "ERROR"}


def test_log_prompts_puts_the_prompt_on_the_completion_line(app_with_prompts, caplog):
    with caplog.at_level(logging.INFO, logger="kolosal.completion"):
        r = app_with_prompts.test_client().post("/v1/completions",
                                                json={"model": MODEL_ID, "prompt": "Once upon", "max_tokens": 2})
        r.close()  # the line is written when the response ends
    assert r.status_code == 200
    rec = [x for x in caplog.records if x.name == "kolosal.completion"][-1]
    assert rec.prompt == "Once upon" and rec.output_tokens == 2 and rec.success is True


@pytest.fixture
def app_with_prompts(model_path):
    from kolosal.server import create_app
    cfg = server_config(model_path)
    cfg["logging"] = {"level": "INFO", "log_prompts": True}
    cfg["models"][0]["load_params"].update(n_ctx=512, n_parallel=1)
    app = create_app(cfg)
    yield app
    app.extensions["kolosal"].registry.close_all()


def test_text_format_escapes_control_characters(tmp_path, restore_root_logging):
    path = tmp_path / "k.log"
    configure_logging(LoggingSection(level="INFO", file_path=str(path), console_output=False, format="text"))
    log = logging.getLogger("kolosal.test")
    log.warning("model %s not found", "x\n2026-01-01 00:00:00 CRITICAL forged line\x1b[2J\r\x00\x85")
    try:
        raise ValueError("bad\x1b[31m value")
    except ValueError:
        log.exception("failed")
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert "forged line" in first and "\\n2026-01-01" in first and "\\x1b[2J\\r\\x00\\x85" in first
    assert "\x1b" not in text and "\x00" not in text and "\r" not in text
    assert "Traceback (most recent call last):" in text and "\\x1b[31m" in text  # tracebacks keep their lines

"""GET /metrics (JSON), /completion-metrics and /metrics/profile, checked
against what the requests really did."""
from __future__ import annotations

import json
import logging
import time

import httpx
import psutil
import pytest

from kolosal.server import create_app

from .conftest import MODEL_ID, chat_body

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def completion_metrics(http: httpx.Client) -> dict:
    body = http.get("/completion-metrics").json()["completion_metrics"]
    body["engine"] = {e["engine_id"]: e for e in body["per_engine"]}
    return body


def test_system_metrics_json(http):
    for path in ("/metrics", "/v1/metrics"):
        r = http.get(path, headers={"Accept": "*/*"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        m = r.json()
        assert set(m) == {"timestamp", "cpu", "memory", "gpus", "gpu_monitoring_available", "summary"}
        assert abs(m["timestamp"] - time.time()) < 60
        assert m["memory"]["total_bytes"] == psutil.virtual_memory().total
        assert m["memory"]["used_bytes"] + m["memory"]["free_bytes"] == m["memory"]["total_bytes"]
        assert 0 < m["memory"]["utilization_percent"] < 100
        s = m["summary"]
        assert s["ram_utilization_percent"] == m["memory"]["utilization_percent"]
        assert s["gpu_count"] == len(m["gpus"])
        if not m["gpu_monitoring_available"]:  # no GPU or driver: nothing invented
            assert m["gpus"] == [] and s["average_gpu_utilization_percent"] is None
            assert s["average_vram_utilization_percent"] is None
        for g in m["gpus"]:
            assert set(g) == {"id", "name", "utilization", "memory", "temperature_celsius", "power_usage_watts"}


def test_cpu_is_sampled_in_the_background(http):
    deadline = time.monotonic() + 10
    while True:
        t0 = time.perf_counter()
        cpu = http.get("/metrics").json()["cpu"]["usage_percent"]
        assert time.perf_counter() - t0 < 0.9  # a scrape does not wait for a CPU interval
        if cpu is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cpu is not None and 0.0 <= cpu <= 100.0


@pytest.mark.parametrize("accept,kind", [
    ("*/*", "json"), (None, "json"), ("application/json", "json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
    (PROMETHEUS_ACCEPT, "openmetrics"), ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "text"),
    ("text/plain", "text"),
])
def test_content_negotiation(http, accept, kind):
    headers = {"Accept": accept} if accept else {}
    if accept is None:
        r = httpx.get(str(http.base_url) + "/metrics", headers={"Accept": ""})
    else:
        r = http.get("/metrics", headers=headers)
    ctype = r.headers["content-type"]
    assert r.status_code == 200 and "Accept" in r.headers.get("vary", "")
    if kind == "json":
        assert ctype.startswith("application/json") and "summary" in r.json()
    elif kind == "openmetrics":
        assert ctype.startswith("application/openmetrics-text") and r.text.rstrip().endswith("# EOF")
    else:
        assert ctype.startswith("text/plain; version=0.0.4") and "# TYPE kolosal_cpu_usage_percent gauge" in r.text


def test_prometheus_path_ignores_json_accept(http):
    r = http.get("/metrics/prometheus", headers={"Accept": "application/json"})
    assert r.headers["content-type"].startswith("text/plain") and "kolosal_requests_total" in r.text


def test_completion_counts_and_tokens_match_the_responses(http):
    before = completion_metrics(http)
    prompt_tokens = completion_tokens = 0
    for i in range(3):
        r = http.post("/v1/completions", json={"model": MODEL_ID, "prompt": f"Count to {i + 3}:", "max_tokens": 5,
                                               "ignore_eos": True, "temperature": 0})
        assert r.status_code == 200
        prompt_tokens += r.json()["usage"]["prompt_tokens"]
        completion_tokens += r.json()["usage"]["completion_tokens"]
    lines = []
    with http.stream("POST", "/v1/chat/completions",
                     json=chat_body(stream=True, max_tokens=4, ignore_eos=True,
                                    stream_options={"include_usage": True})) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    u = json.loads(lines[-1][6:])["usage"]
    prompt_tokens += u["prompt_tokens"]
    completion_tokens += u["completion_tokens"]
    assert completion_tokens == 3 * 5 + 4
    after = completion_metrics(http)
    for b, a in ((before["summary"], after["summary"]), (before["engine"][MODEL_ID], after["engine"][MODEL_ID])):
        assert a["completed_requests"] - b["completed_requests"] == 4
        assert a["total_requests"] - b["total_requests"] == 4
        assert a["failed_requests"] == b["failed_requests"]
        assert a["total_input_tokens"] - b["total_input_tokens"] == prompt_tokens
        assert a["total_output_tokens"] - b["total_output_tokens"] == completion_tokens
        assert a["success_rate_percent"] == round(a["completed_requests"] * 100 / a["total_requests"], 3)
        for key in ("avg_tps", "avg_output_tps", "avg_ttft_ms", "avg_rps", "avg_turnaround_time_ms"):
            assert a[key] is not None and a[key] > 0, key
        assert a["avg_ttft_ms"] <= a["avg_turnaround_time_ms"]
    eng = after["engine"][MODEL_ID]
    assert eng["status"] == "loaded" and eng["slots_total"] == 4 and eng["slots_busy"] == 0
    assert eng["queued_requests"] == 0 and eng["prompt_cache_hit_tokens"] >= 0
    assert after["server"]["active_generation_requests"] == 0
    assert http.get("/metrics/completion").json()["completion_metrics"]["summary"]["total_requests"] >= 4
    assert http.get("/v1/completion-metrics").status_code == 200


def test_failed_requests_are_counted(http):
    before = completion_metrics(http)
    r = http.post("/v1/completions", json={"model": MODEL_ID, "prompt": "x", "max_tokens": 100000})
    assert r.status_code == 400  # context_length_exceeded: the engine is known
    r = http.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400  # before any engine is chosen: counted overall only
    after = completion_metrics(http)
    assert after["summary"]["failed_requests"] - before["summary"]["failed_requests"] == 2
    assert after["summary"]["completed_requests"] == before["summary"]["completed_requests"]
    b, a = before["engine"][MODEL_ID], after["engine"][MODEL_ID]
    assert a["failed_requests"] - b["failed_requests"] == 1
    assert a["success_rate_percent"] == round(a["completed_requests"] * 100 / a["total_requests"], 3) < 100


def test_client_leaving_a_stream_counts_as_failed(http, live_server):
    before = completion_metrics(http)["engine"][MODEL_ID]
    with httpx.Client(base_url=live_server.base_url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions",
                      json=chat_body(stream=True, max_tokens=400, ignore_eos=True)) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # leave after the first event
    deadline = time.monotonic() + 20
    while True:
        after = completion_metrics(http)["engine"][MODEL_ID]
        if after["failed_requests"] > before["failed_requests"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["failed_requests"] - before["failed_requests"] == 1
    assert after["completed_requests"] == before["completed_requests"]
    assert after["active_requests"] == 0


def test_ttft_within_client_measured_ttft(http):
    def ttft_hist() -> tuple:
        from prometheus_client.parser import text_string_to_metric_families
        total = count = 0.0
        for fam in text_string_to_metric_families(http.get("/metrics/prometheus").text):
            for s in fam.samples:
                if s.labels.get("engine") == MODEL_ID and s.name == "kolosal_completion_ttft_seconds_sum":
                    total = s.value
                if s.labels.get("engine") == MODEL_ID and s.name == "kolosal_completion_ttft_seconds_count":
                    count = s.value
        return total, count

    sum0, n0 = ttft_hist()
    t0 = time.perf_counter()
    client_ttft = None
    with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=6, ignore_eos=True)) as r:
        for line in r.iter_lines():
            if client_ttft is None and line.startswith("data: {") and json.loads(line[6:])["choices"] and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content"):
                client_ttft = time.perf_counter() - t0
    sum1, n1 = ttft_hist()
    assert n1 - n0 == 1
    server_ttft = sum1 - sum0
    assert client_ttft is not None and 0 < server_ttft <= client_ttft


def test_profile_has_the_engine_phases(http):
    http.post("/v1/chat/completions", json=chat_body(max_tokens=3))
    for path in ("/metrics/profile", "/v1/metrics/profile"):
        prof = http.get(path).json()
        timers = prof["engines"][MODEL_ID]
        assert {"tokenize", "template", "prefill", "decode", "sample"} <= set(timers)
        for t in timers.values():
            assert t["count"] > 0 and t["min_ms"] <= t["mean_ms"] <= t["max_ms"]
            assert t["mean_ms"] == pytest.approx(t["total_ms"] / t["count"])
        assert prof["server"]["http_serialize"]["count"] > 0


def test_per_engine_figures_use_the_real_engine_ids(model_path, caplog):
    params = {"n_ctx": 512, "n_parallel": 1, "seed": 1, "n_threads": 1}
    app = create_app({"models": [{"id": "first", "path": str(model_path), "load_params": params},
                                 {"id": "second", "path": str(model_path), "load_params": params}]})
    try:
        c = app.test_client()
        with caplog.at_level(logging.DEBUG, logger="kolosal.server.monitoring"):
            for model, n in (("first", 1), ("second", 2)):
                for _ in range(n):
                    r = c.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2,
                                                        "ignore_eos": True})
                    assert r.status_code == 200
        per = {e["engine_id"]: e for e in c.get("/completion-metrics").json["completion_metrics"]["per_engine"]}
        assert per["first"]["completed_requests"] == 1 and per["second"]["completed_requests"] == 2
        assert per["first"]["total_output_tokens"] == 2 and per["second"]["total_output_tokens"] == 4
        summary = c.get("/completion-metrics").json["completion_metrics"]["summary"]
        assert summary["completed_requests"] == 3 and summary["success_rate_percent"] == 100
        messages = [rec.getMessage() for rec in caplog.records]
        assert any(m.startswith("Timer http_serialize: ") and m.endswith(" ms") for m in messages)
        assert any(m.startswith("Timer ttft: ") for m in messages)
        assert any(m.startswith("Timer decode[0]: ") for m in messages)
    finally:
        app.extensions["kolosal"].registry.close_all()


def test_metrics_can_be_switched_off():
    app = create_app({"features": {"metrics": False}})
    c = app.test_client()
    assert c.get("/metrics").status_code == 404 and c.get("/completion-metrics").status_code == 404

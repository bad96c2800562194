"""The Prometheus exposition, the shipped Prometheus/Grafana files, and a real
Prometheus server scraping a live kolosal."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from procs import free_port, stop_process

from .conftest import MODEL_ID, REPO, chat_body
from .test_metrics import PROMETHEUS_ACCEPT

DEPLOY = REPO / "deploy"
ISSUE_NAMES = {"kolosal_requests_total", "kolosal_inference_duration_seconds", "kolosal_cpu_usage_percent",
               "kolosal_memory_utilization_percent", "kolosal_gpu_utilization_percent", "kolosal_completion_tps",
               "kolosal_completion_ttft_ms", "kolosal_completion_success_rate", "kolosal_input_tokens_total",
               "kolosal_output_tokens_total", "kolosal_completion_ttft_seconds", "kolosal_queued_requests",
               "kolosal_engine_state"}


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} from the text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in parse_text(text) for s in fam.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def exposed_names(text: str) -> set:
    names = set()
    for fam in parse_text(text):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
    return names


def test_text_and_openmetrics_parse_with_the_issue_names(http):
    http.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    text = http.get("/metrics/prometheus").text
    names = exposed_names(text)
    assert ISSUE_NAMES <= names, ISSUE_NAMES - names
    om = http.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT}).text
    om_names = {f.name for f in parse_openmetrics(om)}
    assert {"kolosal_requests", "kolosal_completion_tps", "kolosal_cpu_usage_percent"} <= om_names
    assert value(text, "kolosal_engine_state", engine=MODEL_ID, state="loaded") == 1
    assert value(text, "kolosal_engine_state", engine=MODEL_ID, state="error") == 0
    assert value(text, "kolosal_slots_total", engine=MODEL_ID) == 4
    assert value(text, "kolosal_gpu_monitoring_available") in (0, 1)


def test_counters_follow_the_requests_and_agree_with_the_json(http):
    before = http.get("/metrics/prometheus").text
    for _ in range(2):
        assert http.post("/v1/chat/completions", json=chat_body(max_tokens=3, ignore_eos=True)).status_code == 200
    assert http.post("/v1/chat/completions", json=chat_body(max_tokens=100000)).status_code == 400
    after = http.get("/metrics/prometheus").text
    ok = dict(engine=MODEL_ID, endpoint="/chat/completions", status="200")
    bad = dict(engine=MODEL_ID, endpoint="/chat/completions", status="400")
    assert value(after, "kolosal_requests_total", **ok) - value(before, "kolosal_requests_total", **ok) == 2
    assert value(after, "kolosal_requests_total", **bad) - value(before, "kolosal_requests_total", **bad) == 1
    assert value(after, "kolosal_output_tokens_total", engine=MODEL_ID) - \
        value(before, "kolosal_output_tokens_total", engine=MODEL_ID) == 6
    h = "kolosal_inference_duration_seconds_count"
    assert value(after, h, engine=MODEL_ID) - value(before, h, engine=MODEL_ID) == 2
    # the gauges are the JSON figures
    eng = {e["engine_id"]: e for e in http.get("/completion-metrics").json()["completion_metrics"]["per_engine"]}
    now = http.get("/metrics/prometheus").text
    figs = eng[MODEL_ID]
    assert value(now, "kolosal_completion_success_rate", engine=MODEL_ID) == figs["success_rate_percent"]
    assert value(now, "kolosal_completion_ttft_ms", engine=MODEL_ID) == figs["avg_ttft_ms"]
    assert value(now, "kolosal_completion_tps", engine=MODEL_ID) == figs["avg_tps"]
    assert value(now, "kolosal_input_tokens_total", engine=MODEL_ID) == figs["total_input_tokens"]
    cpu = value(now, "kolosal_cpu_usage_percent")
    assert 0 <= cpu <= 100
    assert 0 < value(now, "kolosal_memory_utilization_percent") < 100


def _exprs_in_deploy_files() -> list:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "kolosal-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return exprs


def test_alerts_and_dashboard_use_exposed_names(http):
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = {r["alert"]: r["expr"] for g in alerts["groups"] for r in g["rules"]}
    assert rules == {"HighCPUUsage": "kolosal_cpu_usage_percent > 80",
                     "HighMemoryUsage": "kolosal_memory_utilization_percent > 90",
                     "LowCompletionSuccessRate": "kolosal_completion_success_rate < 95",
                     "HighLatency": "kolosal_completion_ttft_ms > 1000"}
    dash = json.loads((DEPLOY / "grafana" / "kolosal-dashboard.json").read_text())
    assert dash["title"] == "Kolosal Server Monitoring" and dash["panels"]
    assert {"System Overview", "Completion Performance"} <= {p["title"] for p in dash["panels"]}
    names = exposed_names(http.get("/metrics/prometheus").text)
    used = {n for e in _exprs_in_deploy_files() for n in re.findall(r"\bkolosal_[a-z_]+", e)}
    # GPU series exist only where NVML sees a GPU; their families are always declared
    assert used <= names, used - names
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["job_name"] == "kolosal-server" and scrape["metrics_path"] == "/metrics"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_shipped_files(tmp_path):
    # the dashboard's queries parse as PromQL: checked as recording rules
    dash = json.loads((DEPLOY / "grafana" / "kolosal-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    r = subprocess.run(["promtool", "check", "rules", str(tmp_path / "dashboard.yml")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and f"{len(exprs)} rules found" in r.stdout, r.stdout + r.stderr
    # alerts_test.yml: each alert fires after its `for:` and not before, with its labels and annotations
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (Debian package prometheus)")
def test_real_prometheus_scrapes_the_live_server(live_server, http, tmp_path):
    for _ in range(2):
        assert http.post("/v1/chat/completions", json=chat_body(max_tokens=3)).status_code == 200
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    job = config["scrape_configs"][0]
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [f"127.0.0.1:{live_server.port}"]}])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    api = f"http://127.0.0.1:{port}/api/v1"
    wanted = {'kolosal_completion_tps{engine="%s"}' % MODEL_ID: lambda v: v > 0,
              'kolosal_completion_success_rate{engine="%s"}' % MODEL_ID: lambda v: 0 < v <= 100,
              'kolosal_output_tokens_total{engine="%s"}' % MODEL_ID: lambda v: v >= 6,
              'kolosal_requests_total{engine="%s",endpoint="/chat/completions",status="200"}' % MODEL_ID:
                  lambda v: v >= 2,
              "kolosal_cpu_usage_percent": lambda v: 0 <= v <= 100,
              "kolosal_memory_utilization_percent": lambda v: 0 < v < 100}
    found: dict = {}
    try:
        deadline = time.monotonic() + 90  # start-up is slow on a busy machine
        while time.monotonic() < deadline and len(found) < len(wanted):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            for query in wanted.keys() - found.keys():
                try:
                    res = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()["data"]["result"]
                except (httpx.TransportError, KeyError, ValueError):
                    break
                if res:
                    found[query] = float(res[0]["value"][1])
            time.sleep(0.5)
        assert found.keys() == wanted.keys(), (found, (tmp_path / "prometheus.log").read_text()[-3000:])
        for query, ok in wanted.items():
            assert ok(found[query]), (query, found[query])
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert targets[0]["health"] == "up" and targets[0]["scrapeUrl"].endswith("/metrics")
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} == {"HighCPUUsage", "HighMemoryUsage", "LowCompletionSuccessRate",
                                              "HighLatency"}
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        stop_process(proc, timeout=20)

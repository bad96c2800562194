"""Speculative decoding through the live server: a model configured with
n-gram lookup answers as without it (greedy), and reports the proposed and
accepted tokens in the response timings, /completion-metrics and Prometheus."""
from __future__ import annotations

import httpx
import pytest

from tests.test_speculative import COPY

from .conftest import MODEL_ID, server_config, start_server

BODY = {"model": MODEL_ID, "messages": COPY, "max_tokens": 40, "temperature": 0}


@pytest.fixture(scope="module")
def servers(model_path, tmp_path_factory):
    """The same model twice: once with speculation, once without."""
    config = server_config(model_path)
    plain = dict(config["models"][0], id="plain")
    plain["load_params"] = {**plain["load_params"], "n_parallel": 2}
    config["models"][0]["load_params"].update({"spec_type": "ngram", "spec_ngram_n": 3, "n_draft": 8, "n_parallel": 2})
    config["models"].append(plain)
    server = start_server(config, tmp_path_factory.mktemp("spec"))
    yield server
    assert server.stop() == 0, server.log()


def test_same_answer_with_timings_and_metrics(servers):
    with httpx.Client(base_url=servers.base_url, timeout=120) as http:
        spec = http.post("/v1/chat/completions", json=BODY).json()
        plain = http.post("/v1/chat/completions", json={**BODY, "model": "plain"}).json()
        assert spec["choices"][0]["message"] == plain["choices"][0]["message"]
        t = spec["timings"]
        assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"]
        assert t["predicted_n"] == spec["usage"]["completion_tokens"]
        assert plain["timings"]["predicted_n"] == plain["usage"]["completion_tokens"] and "draft_n" not in plain["timings"]
        per_engine = {e["engine_id"]: e for e in http.get("/completion-metrics").json()["completion_metrics"]["per_engine"]}
        mine = per_engine[MODEL_ID]
        assert mine["spec_draft_tokens"] >= t["draft_n"] and mine["spec_accepted_tokens"] >= t["draft_n_accepted"]
        assert 0 < mine["spec_acceptance_rate"] <= 1 and per_engine["plain"]["spec_acceptance_rate"] is None
        prom = http.get("/metrics/prometheus").text
        line = next(l for l in prom.splitlines() if l.startswith(f'kolosal_spec_accepted_tokens_total{{engine="{MODEL_ID}"}}'))
        assert float(line.split()[-1]) == mine["spec_accepted_tokens"]

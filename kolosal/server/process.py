"""The process settings of the ``server`` section, applied once at start
with psutil: ``process_priority`` (``idle`` .. ``realtime``: a nice value on
POSIX, a priority class on Windows) and ``cpu_affinity`` (the CPUs the
server's threads may run on). ``/health`` shows what is in force
(``process_status``).

They are applied before Waitress and the engines start their threads, which
inherit them; threads already running get them too (on Linux nice values
and affinity belong to each thread)."""
from __future__ import annotations

import logging
import sys
from typing import Any, Dict, List, Optional

import psutil

from .config import ConfigError
from .config_schema import ServerSection

log = logging.getLogger("kolosal.server.process")

NICE = {"idle": 19, "low": 10, "below_normal": 5, "normal": 0, "above_normal": -5, "high": -10, "realtime": -20}
WINDOWS_CLASS = {"idle": "IDLE_PRIORITY_CLASS", "low": "IDLE_PRIORITY_CLASS",
                 "below_normal": "BELOW_NORMAL_PRIORITY_CLASS", "normal": "NORMAL_PRIORITY_CLASS",
                 "above_normal": "ABOVE_NORMAL_PRIORITY_CLASS", "high": "HIGH_PRIORITY_CLASS",
                 "realtime": "REALTIME_PRIORITY_CLASS"}
PRIVILEGE_HINT = ("raising the priority needs privileges: root or CAP_SYS_NICE on Linux (systemd: Nice= or "
                  "AmbientCapabilities=CAP_SYS_NICE), an administrator on Windows")


def _priority_value(name: str) -> Any:
    if sys.platform == "win32":
        return getattr(psutil, WINDOWS_CLASS[name])
    return NICE[name]


def _cpus() -> List[int]:
    return list(range(psutil.cpu_count() or 1))


def check_process_settings(server: ServerSection) -> None:
    """ConfigError for settings this machine cannot take (CPUs it lacks, no affinity support)."""
    if server.cpu_affinity is None:
        return
    if not hasattr(psutil.Process, "cpu_affinity"):
        raise ConfigError(["server.cpu_affinity: this platform does not let a process choose its CPUs"])
    cpus = _cpus()
    missing = [c for c in server.cpu_affinity if c not in cpus]
    if missing:
        raise ConfigError([f"server.cpu_affinity: no CPU {', '.join(map(str, missing))} on this machine "
                           f"(it has CPUs 0-{cpus[-1]})"])


def _each_thread(proc: psutil.Process) -> List[psutil.Process]:
    """The process, and on Linux each of its threads as its own task."""
    out = [proc]
    if sys.platform.startswith("linux"):
        for t in proc.threads():
            if t.id != proc.pid:
                try:
                    out.append(psutil.Process(t.id))
                except psutil.NoSuchProcess:
                    pass
    return out


def apply_process_settings(server: ServerSection) -> None:
    """Set the priority and CPU affinity the config asks for (ConfigError when the system refuses)."""
    check_process_settings(server)
    proc = psutil.Process()
    if server.process_priority is not None:
        value = _priority_value(server.process_priority)
        try:
            for task in _each_thread(proc):
                try:
                    task.nice(value)
                except psutil.NoSuchProcess:
                    pass
        except (psutil.AccessDenied, PermissionError, OSError) as e:
            raise ConfigError([f"server.process_priority: cannot set '{server.process_priority}' "
                               f"({type(e).__name__}); {PRIVILEGE_HINT}"]) from None
        log.info("process priority %s (%s)", server.process_priority, value)
    if server.cpu_affinity is not None:
        try:
            for task in _each_thread(proc):
                try:
                    task.cpu_affinity(list(server.cpu_affinity))
                except psutil.NoSuchProcess:
                    pass
        except (psutil.AccessDenied, PermissionError, OSError, ValueError) as e:
            raise ConfigError([f"server.cpu_affinity: cannot run on CPUs {server.cpu_affinity}: {e}"]) from None
        log.info("CPU affinity %s", server.cpu_affinity)


def process_status(server: Optional[ServerSection] = None) -> Dict[str, Any]:
    """What is in force now: pid, priority as configured, the nice value or class, the CPUs."""
    proc = psutil.Process()
    out: Dict[str, Any] = {"pid": proc.pid, "priority": server.process_priority if server else None}
    try:
        out["nice"] = int(proc.nice())
    except (psutil.Error, OSError):
        out["nice"] = None
    try:
        out["cpu_affinity"] = proc.cpu_affinity() if hasattr(proc, "cpu_affinity") else None
    except (psutil.Error, OSError):
        out["cpu_affinity"] = None
    return out

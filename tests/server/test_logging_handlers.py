"""The ``logging.handlers`` block: any number of standard library handlers,
each with its type, level, file, size or time rotation and the lines it
receives; its mistakes are config errors naming the key."""
from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path
from typing import Dict, List

import pytest

from kolosal.server.config import ConfigError, load_config
from kolosal.server.logging_setup import configure_logging

from .test_logging import restore_root_logging  # noqa: F401  (fixture)

RETENTION = {  # the guide's best practice: access logs 30 days, error logs 90, performance logs 7
    "access": {"type": "timed_rotating_file", "filename": "logs/access.log", "retention_days": 30},
    "errors": {"type": "timed_rotating_file", "filename": "logs/error.log", "level": "ERROR", "retention_days": 90},
    "performance": {"type": "timed_rotating_file", "filename": "logs/performance.log", "retention_days": 7},
}


def _root_handlers() -> Dict[str, logging.Handler]:
    return {Path(h.baseFilename).name: h for h in logging.getLogger().handlers if hasattr(h, "baseFilename")}


def _lines(path: Path) -> List[dict]:
    for h in logging.getLogger().handlers:
        h.flush()
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _emit_one_of_each() -> None:
    logging.getLogger("kolosal.access").info("GET /v1/models 200", extra={"component": "access"})
    logging.getLogger("kolosal.completion").info("completion finished", extra={"component": "completion_route"})
    logging.getLogger("kolosal.server").info("listening")
    logging.getLogger("kolosal.server").error("model failed to load")


def test_per_type_retention(tmp_path, restore_root_logging):  # noqa: F811
    cfg = load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": {"handlers": RETENTION}})
    assert cfg.logging.access_log is True  # a handler for access lines turns them on
    configure_logging(cfg.logging)
    handlers = _root_handlers()
    assert {n: (type(h).__name__, h.when, h.interval, h.backupCount) for n, h in handlers.items()} == {
        "access.log": ("TimedRotatingFileHandler", "MIDNIGHT", 86400, 30),
        "error.log": ("TimedRotatingFileHandler", "MIDNIGHT", 86400, 90),
        "performance.log": ("TimedRotatingFileHandler", "MIDNIGHT", 86400, 7)}
    _emit_one_of_each()
    logs = tmp_path / "logs"
    assert [x["message"] for x in _lines(logs / "access.log")] == ["GET /v1/models 200"]
    assert [x["message"] for x in _lines(logs / "performance.log")] == ["completion finished"]
    assert [x["message"] for x in _lines(logs / "error.log")] == ["model failed to load"]


def test_timed_rotation_keeps_retention_days_files(tmp_path, restore_root_logging):  # noqa: F811
    cfg = load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": {"handlers": {
        "performance": {"type": "timed_rotating_file", "filename": "perf.log", "retention_days": 2}}}})
    configure_logging(cfg.logging)
    old = [tmp_path / f"perf.log.2020-01-0{d}" for d in range(1, 6)]
    for p in old:
        p.write_text("{}\n")
    (tmp_path / "perf.log.notes").write_text("not a rotated file\n")
    handler = _root_handlers()["perf.log"]
    handler.rolloverAt = 0  # due now: the next line rotates, and files beyond the retention are deleted
    logging.getLogger("kolosal.completion").info("completion finished")
    names = sorted(p.name for p in tmp_path.iterdir())
    rotated = [n for n in names if n.startswith("perf.log.2")]
    assert len(rotated) == 2 and "perf.log.2020-01-01" not in rotated  # the oldest went first
    assert "perf.log.notes" in names and "perf.log" in names


def test_size_rotation_with_units_and_the_guide_names(tmp_path, restore_root_logging):  # noqa: F811
    cfg = load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": {"level": "INFO", "handlers": {
        "file": {"type": "rotating_file", "filename": "logs/kolosal.log", "max_size": "2KB", "backup_count": 2},
        "inference_file": {"type": "rotating_file", "filename": "logs/inference.log", "max_size": "50MB",
                           "backup_count": 5},
        "debug_file": {"type": "rotating_file", "filename": "logs/debug.log", "level": "DEBUG", "format": "text"}}}})
    configure_logging(cfg.logging)
    handlers = _root_handlers()
    assert (handlers["kolosal.log"].maxBytes, handlers["kolosal.log"].backupCount) == (2000, 2)
    assert (handlers["inference.log"].maxBytes, handlers["inference.log"].backupCount) == (50_000_000, 5)
    assert logging.getLogger().level == logging.DEBUG  # a handler may ask for more than logging.level
    log = logging.getLogger("kolosal.test")
    log.debug("only in the debug file")
    for i in range(100):
        log.info("line %d", i)
    _emit_one_of_each()
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir() if p.name.startswith("kolosal.log")) == [
        "kolosal.log", "kolosal.log.1", "kolosal.log.2"]
    assert "only in the debug file" in (logs / "debug.log").read_text()
    assert all(x["level"] != "DEBUG" for p in logs.glob("kolosal.log*") for x in _lines(p))
    assert [x["message"] for x in _lines(logs / "inference.log")] == ["completion finished"]


@pytest.mark.parametrize("logging_section, expected", [
    ({"level": "VERBOSE"}, "logging.level: 'VERBOSE' is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)"),
    ({"handlers": {"f": {"type": "console", "level": "LOUD"}}}, "logging.handlers.f.level: 'LOUD' is not a log level"),
    ({"handlers": {"s": {"type": "syslog"}}},
     "logging.handlers.s.type: unknown handler type 'syslog' (rotating_file, timed_rotating_file, console)"),
    ({"handlers": {"f": {"type": "rotating_file"}}}, "logging.handlers.f: a rotating_file handler needs a filename"),
    ({"handlers": {"f": {"type": "rotating_file", "filename": "a.log", "max_size": "50 parsecs"}}},
     "logging.handlers.f.max_size: could not"),
    ({"handlers": {"f": {"type": "rotating_file", "filename": "a.log", "when": "midnight"}}},
     "logging.handlers.f: not for a rotating_file handler: when"),
    ({"handlers": {"f": {"type": "console", "filename": "a.log"}}}, "logging.handlers.f: not for a console handler"),
    ({"handlers": {"f": {"type": "timed_rotating_file", "filename": "a.log", "when": "fortnight"}}},
     "logging.handlers.f.when: 'fortnight' is not a rotation time"),
    ({"handlers": {"f": {"type": "timed_rotating_file", "filename": "a.log", "retention_days": 3, "backup_count": 3}}},
     "logging.handlers.f: retention_days keeps one file a day"),
    ({"access_log": False, "handlers": {"access_file": {"type": "rotating_file", "filename": "a.log"}}},
     "logging.handlers.access_file: receives the access lines, but logging.access_log is false"),
    ({"handlers": {"f": {"type": "console", "colour": True}}}, "logging.handlers.f.colour: unknown key"),
])
def test_mistakes_are_config_errors(logging_section, expected):
    with pytest.raises(ConfigError) as ei:
        load_config(data={"logging": logging_section})
    assert any(expected in line for line in ei.value.errors), ei.value.errors


def test_a_log_file_that_cannot_be_opened_names_key_and_path(tmp_path, restore_root_logging):  # noqa: F811
    (tmp_path / "blocked").write_text("a file where the log folder should be")
    cfg = load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": {"handlers": {
        "file": {"type": "rotating_file", "filename": "blocked/kolosal.log"}}}})
    with pytest.raises(ConfigError) as ei:
        configure_logging(cfg.logging)
    assert ei.value.errors[0].startswith(
        f"logging.handlers.file.filename: cannot open the log file {tmp_path / 'blocked' / 'kolosal.log'}: ")


def test_server_refuses_to_start_when_its_log_file_cannot_be_opened(tmp_path):
    import subprocess
    import sys

    import yaml

    from procs import free_port

    from .conftest import REPO
    (tmp_path / "logs").write_text("a file where the log folder should be")
    path = tmp_path / "config" / "production.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"logging": {"file_path": "logs/kolosal.log"}}))
    p = subprocess.run([sys.executable, "-m", "kolosal.server", "--config", str(path), "--port", str(free_port())],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "listening" not in p.stdout
    assert f"logging.file_path: cannot open the log file {tmp_path / 'logs' / 'kolosal.log'}: " in p.stderr


def test_one_file_one_handler(tmp_path, restore_root_logging):  # noqa: F811
    """The guide's production.json (file_path) with its handlers block pasted in
    (a `file` handler on the same file): the handler takes the file over, so
    each line is written once and one handler rotates it. Two handlers naming
    one file are a config error."""
    guide = json.loads((Path(__file__).parents[1] / "data" / "guide" / "logging.json").read_text())
    section = {"file_path": "logs/kolosal-server.log", "handlers": guide["handlers"]}
    cfg = load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": section})
    configure_logging(cfg.logging)
    files = [h for h in logging.getLogger().handlers if hasattr(h, "baseFilename")]
    main = tmp_path / "logs" / "kolosal-server.log"
    writers = [h for h in files if Path(h.baseFilename) == main]
    assert len(writers) == 1 and writers[0].maxBytes == 100 * 10**6 and writers[0].backupCount == 10
    _emit_one_of_each()
    assert [x["message"] for x in _lines(main)].count("listening") == 1
    twice = {"a": {"type": "rotating_file", "filename": "x.log"}, "b": {"type": "timed_rotating_file",
                                                                       "filename": "./x.log"}}
    with pytest.raises(ConfigError) as ei:
        load_config(data={"server": {"root_dir": str(tmp_path)}, "logging": {"handlers": twice}})
    assert ei.value.errors[0].startswith("logging.handlers.b.filename: ")

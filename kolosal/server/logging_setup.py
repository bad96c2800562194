"""Logging from the ``logging`` config section: JSON lines (or text), the
request id on every line, written by the standard library's handlers:

* ``file_path`` (``RotatingFileHandler``: ``max_file_size_mb``, ``max_files``)
  and ``console_output``;
* any number of named ``handlers``: ``rotating_file`` (``max_size`` with units,
  ``backup_count``), ``timed_rotating_file`` (``when``/``interval``/``backup_count``,
  or ``retention_days``: one file a day, kept that many days) and ``console``,
  each with its own ``level``, ``format`` and the lines it receives (``logs``:
  ``all``, ``server``, ``access`` or ``inference``, the completion lines).

A file that cannot be opened is a ConfigError naming the key and the path."""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import sys
from typing import Any, Dict, List, Tuple

from .config import ConfigError
from .config_schema import LogHandler, LoggingSection
from .request_log import RequestIdFilter

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id",
                                                                        "component"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``timestamp``, ``level``, ``component``,
    ``message``, ``request_id`` and whatever the call passed as ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        out: Dict[str, Any] = {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "component": getattr(record, "component", None) or record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f, *range(0x80, 0xa0)]}
_CONTROL.update({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"})


def escape_control(text: str) -> str:
    """Control characters as escapes, so that no logged value can forge a line
    or drive the terminal: ``a\nb`` -> ``a\\nb``, ESC -> ``\\x1b``."""
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """One line per record; control characters in it (from request values,
    model output, file names) escaped. Tracebacks keep their line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(escape_control(line) for line in super().formatException(ei).split("\n"))


ACCESS_LOGGER = "kolosal.access"
COMPLETION_LOGGER = "kolosal.completion"
DEFAULT_MAX_BYTES = 100 * 1000 * 1000
DEFAULT_BACKUPS = {"rotating_file": 5, "timed_rotating_file": 7}


class SourceFilter(logging.Filter):
    """Lets through the lines of one source: ``access`` (the access log),
    ``inference`` (the completion lines), ``server`` (everything else) or ``all``."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def filter(self, record: logging.LogRecord) -> bool:
        if self.source == "all":
            return True
        kind = {ACCESS_LOGGER: "access", COMPLETION_LOGGER: "inference"}.get(record.name, "server")
        return kind == self.source


def _open(where: str, make: Any, path: str) -> logging.Handler:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return make()
    except OSError as e:
        raise ConfigError([f"{where}: cannot open the log file {path}: {e.strerror or e}"]) from None


def build_handler(name: str, spec: LogHandler) -> logging.Handler:
    """The standard library handler for one ``logging.handlers`` entry (no formatter, level or filters yet)."""
    where = f"logging.handlers.{name}.filename"
    backups = spec.backup_count if spec.backup_count is not None else DEFAULT_BACKUPS.get(spec.type, 0)
    if spec.type == "console":
        return logging.StreamHandler(sys.stdout if spec.stream == "stdout" else sys.stderr)
    path = str(spec.filename)
    if spec.type == "rotating_file":
        size = int(spec.max_size) if spec.max_size is not None else DEFAULT_MAX_BYTES
        return _open(where, lambda: logging.handlers.RotatingFileHandler(
            path, maxBytes=size, backupCount=backups, encoding="utf-8"), path)
    if spec.retention_days is not None:
        when, interval, backups = "midnight", 1, spec.retention_days
    else:
        when, interval = (spec.when or "midnight"), (spec.interval or 1)
    return _open(where, lambda: logging.handlers.TimedRotatingFileHandler(
        path, when=when, interval=interval, backupCount=backups, utc=spec.utc, encoding="utf-8"), path)


def _handlers(section: LoggingSection, level: int) -> List[Tuple[logging.Handler, int, str, str]]:
    """(handler, level, source, format) for every output the section asks for."""
    out: List[Tuple[logging.Handler, int, str, str]] = []
    path = section.file_path
    # A handler writing file_path's file replaces file_path's own handler.
    if path and not any(spec.filename == path for spec in section.handlers.values()):
        out.append((_open("logging.file_path", lambda: logging.handlers.RotatingFileHandler(
            path, maxBytes=int(section.max_file_size_mb * 1024 * 1024), backupCount=max(1, section.max_files - 1),
            encoding="utf-8"), path), level, "all", section.format))
    if section.handlers:
        console = section.console_output and "console_output" in section.model_fields_set
    else:
        console = section.console_output or not path
    if console:
        out.append((logging.StreamHandler(sys.stderr), level, "all", section.format))
    for name, spec in section.handlers.items():
        own = getattr(logging, spec.level) if spec.level else level
        out.append((build_handler(name, spec), own, spec.source(name), spec.format or section.format))
    return out


def configure_logging(section: LoggingSection) -> None:
    """Replace the root logger's handlers by those of ``section`` (ConfigError for a file that cannot be opened)."""
    base = getattr(logging, section.level.upper(), logging.INFO)
    made = _handlers(section, base)
    level = min([base] + [lvl for _, lvl, _, _ in made])  # a handler may ask for more than logging.level
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    for h, lvl, source, form in made:
        h.setLevel(lvl)
        h.setFormatter(JsonFormatter() if form == "json" else TextFormatter(_FORMAT))
        h.addFilter(RequestIdFilter())
        if source != "all":
            h.addFilter(SourceFilter(source))
        root.addHandler(h)
    logging.getLogger("waitress.queue").setLevel(max(level, logging.WARNING))
    import kolosal
    from kolosal.logs import capture_llama_logs

    # llama.cpp's own lines go through the same handlers, at the configured level.
    kolosal.set_log_level("debug" if level <= logging.DEBUG else "info" if level <= logging.INFO
                          else "warn" if level <= logging.WARNING else "error")
    capture_llama_logs()

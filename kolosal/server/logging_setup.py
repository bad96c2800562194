"""Logging from the ``logging`` config section: JSON lines (or text), a
rotating file and/or the console, the request id on every line."""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import sys
from typing import Any, Dict

from .config_schema import LoggingSection
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


def configure_logging(section: LoggingSection) -> None:
    level = getattr(logging, section.level.upper(), None)
    if not isinstance(level, int):
        level = logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt: logging.Formatter = JsonFormatter() if section.format == "json" else TextFormatter(_FORMAT)
    handlers = []
    path = section.file_path
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=int(section.max_file_size_mb * 1024 * 1024), backupCount=max(1, section.max_files - 1),
            encoding="utf-8"))
    if section.console_output or not path:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RequestIdFilter())
        root.addHandler(h)
    logging.getLogger("waitress.queue").setLevel(max(level, logging.WARNING))
    import kolosal
    from kolosal.logs import capture_llama_logs

    # llama.cpp's own lines go through the same handlers, at the configured level.
    kolosal.set_log_level("debug" if level <= logging.DEBUG else "info" if level <= logging.INFO
                          else "warn" if level <= logging.WARNING else "error")
    capture_llama_logs()

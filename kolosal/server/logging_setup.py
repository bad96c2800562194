"""Logging from the ``logging`` config section."""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from .config_schema import LoggingSection

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(section: LoggingSection) -> None:
    level = getattr(logging, section.level.upper(), None)
    if not isinstance(level, int):
        level = logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter(_FORMAT)
    path = section.file_path or section.file
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=section.max_file_size_mb * 1024 * 1024,
                                                  backupCount=section.max_files, encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if section.console_output or not path:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    logging.getLogger("waitress.queue").setLevel(max(level, logging.WARNING))
    try:
        import kolosal
        kolosal.set_log_level("debug" if level <= logging.DEBUG else "warn" if level <= logging.WARNING else "error")
    except Exception:
        pass

"""``python -m kolosal.server`` / ``kolosal-server``."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

from .cli import parse, resolve_config
from .config import ConfigError, effective_config


def refusal(e: ConfigError, config: Optional[str]) -> str:
    """The message for an invalid configuration: the file's absolute path, then one line per problem."""
    where = f" in {os.path.abspath(config)}" if config else ""
    return "\n".join([f"configuration error{where}:", *(f"  {line}" for line in e.errors)])


def _refuse(e: ConfigError, config: Optional[str]) -> int:
    print(refusal(e, config), file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    if args.version:
        from ._version import server_version
        print(f"kolosal-server {server_version()}")
        return 0
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        return _refuse(e, args.config)
    if args.check_config:
        print(json.dumps(effective_config(cfg), indent=2))
        return 0
    from .logging_setup import configure_logging
    from .process import apply_process_settings
    from .serve import serve

    try:
        configure_logging(cfg.logging)
        apply_process_settings(cfg.server)
    except ConfigError as e:  # a log file that cannot be opened, a priority the system refuses
        return _refuse(e, args.config)
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: flags over the config file."""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from .config import ConfigError, check_model_files, load_config, model_entry, read_models_file
from .config_schema import ConfigFile
from .process import check_process_settings
from .security import check_security

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kolosal-server", description="OpenAI-compatible LLM inference server.")
    p.add_argument("--config", metavar="FILE", help="JSON or YAML configuration file")
    p.add_argument("--root", metavar="DIR",
                   help="install root that relative paths in the config resolve against (default: server.root_dir, "
                        "else the config file's folder, or its parent when that folder is named 'config')")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8080)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="logging level")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="require this API key (Authorization: Bearer KEY); repeatable")
    p.add_argument("--model", nargs=2, action="append", default=[], metavar=("ID", "PATH"),
                   help="serve the GGUF at PATH as model ID; repeatable")
    p.add_argument("--models", metavar="FILE", help="models file ({\"models\": [...]}, JSON or YAML)")
    p.add_argument("--cluster", metavar="FILE", help="cluster file (instances, model_distribution, routing_strategy, "
                   "models): serve this instance's share and list the whole cluster's models")
    p.add_argument("--instance", metavar="NAME", help="this server's name in the cluster")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the effective config and exit (0 valid, 1 invalid)")
    return p


def resolve_config(args: argparse.Namespace) -> ConfigFile:
    """The effective configuration: file (or defaults), then the flags. Raises ConfigError."""
    cfg = load_config(args.config, root=args.root) if args.config else load_config(data={}, root=args.root)
    errors: List[str] = []
    if args.host:
        cfg.server.host = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            errors.append("--port: must be between 0 and 65535")
        cfg.server.port = args.port
    if args.log_level:
        cfg.logging.level = "WARNING" if args.log_level == "WARN" else args.log_level
    if args.api_key:
        cfg.auth.api_keys.extend(args.api_key)
    # --models and --cluster files resolve paths against the config's install root, or (no config) their own
    root = args.root or (cfg.server.root_dir if args.config else None)
    if args.models:
        cfg.models.extend(read_models_file(args.models, root))
    for model_id, path in args.model:
        cfg.models.append(model_entry(model_id, path))
    if errors:
        raise ConfigError(errors)
    if args.cluster or args.instance or cfg.instance:
        from ..cluster.spec import apply_cluster, load_cluster
        apply_cluster(cfg, load_cluster(args.cluster, root) if args.cluster else None, args.instance)
    check_model_files(cfg)
    check_security(cfg)
    check_process_settings(cfg.server)
    return cfg


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)

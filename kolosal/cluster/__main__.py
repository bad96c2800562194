"""``python -m kolosal.cluster haproxy cluster.json [-o haproxy.cfg]``: the
HAProxy configuration of a cluster file (``--check`` runs ``haproxy -c`` on it)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from ..server.config import ConfigError
from .haproxy import render_haproxy
from .spec import load_cluster


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kolosal.cluster", description="Configuration of a kolosal cluster.")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("haproxy", help="write the HAProxy configuration that routes requests by model")
    h.add_argument("cluster", help="cluster file (JSON or YAML): instances, model_distribution, routing_strategy")
    h.add_argument("-o", "--output", help="write here (default: standard output)")
    h.add_argument("--bind", default="127.0.0.1:8000", help="address:port HAProxy listens on (default %(default)s)")
    h.add_argument("--stats-socket", help="path of HAProxy's admin socket (show stat, disable server ...)")
    h.add_argument("--timeout", type=int, default=660,
                   help="client/server timeout in seconds; above inference.job_timeout_seconds (default %(default)s)")
    h.add_argument("--max-body-kb", type=int, default=256,
                   help="largest request body routed by its model, in KiB (tune.bufsize; default %(default)s)")
    h.add_argument("--check", action="store_true", help="validate the result with `haproxy -c`")
    return p


def check_with_haproxy(text: str) -> int:
    exe = shutil.which("haproxy")
    if exe is None:
        print("--check: haproxy is not installed", file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(text)
    try:
        done = subprocess.run([exe, "-c", "-f", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
    return done.returncode


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_cluster(args.cluster)
        text = render_haproxy(spec, bind=args.bind, stats_socket=args.stats_socket,
                              source=os.path.basename(args.cluster), timeout_seconds=args.timeout,
                              bufsize=args.max_body_kb * 1024)
    except (ConfigError, ValueError) as e:
        print(f"cluster file error in {os.path.abspath(args.cluster)}:", file=sys.stderr)
        for line in getattr(e, "errors", [str(e)]):
            print(f"  {line}", file=sys.stderr)
        return 1
    if args.check and check_with_haproxy(text) != 0:
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

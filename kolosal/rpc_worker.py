"""An RPC worker: lends this machine's CPU (and memory) to a model loaded by
a kolosal server elsewhere, through llama.cpp's RPC backend.

    python -m kolosal.rpc_worker --host 10.0.0.5 --port 50052 [--threads N] [--mem MiB]

A server then puts layers on it with ``load_params.rpc_servers:
["10.0.0.5:50052"]``. The protocol has no authentication or encryption:
keep workers on a private network (non-private addresses are refused
unless ``--allow-public``). One worker serves one client process at a time.
SIGINT or SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from typing import List, Optional

from . import _native
from .rpc_endpoints import is_private_host


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kolosal.rpc_worker",
                                description="Serve this machine's CPU to kolosal servers over llama.cpp's RPC protocol.")
    p.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50052, help="TCP port (default 50052)")
    p.add_argument("--threads", type=int, default=0, help="compute threads (default: one per physical core)")
    p.add_argument("--mem", type=int, default=0, metavar="MiB",
                   help="memory to offer, in MiB (default: the system's); clients split layers by it")
    p.add_argument("--cache-dir", default="", help="keep large tensors received in this folder (llama.cpp's -c)")
    p.add_argument("--allow-public", action="store_true",
                   help="listen on a non-private address (the protocol has no authentication or encryption)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    try:
        ipaddress.IPv4Address(args.host)
    except ValueError:
        p.error(f"--host must be an IPv4 address, not '{args.host}'")
    if not 0 < args.port < 65536:
        p.error("--port must be in 1-65535")
    if args.threads < 0 or args.mem < 0:
        p.error("--threads and --mem must be >= 0")
    if not args.allow_public and not is_private_host(args.host, resolve=False):
        p.error(f"{args.host} is not a loopback or private address: the RPC protocol has no authentication or "
                f"encryption; pass --allow-public to listen there anyway")
    if not _native.rpc_available():
        p.error("this build of kolosal has no RPC backend (build with -DUSE_RPC=ON)")

    failure: List[BaseException] = []
    stopped = threading.Event()

    def serve() -> None:
        try:
            _native.rpc_serve(args.host, args.port, args.threads, args.mem, args.cache_dir)
        except BaseException as e:  # it returns only by failing to start
            failure.append(e)
        finally:
            stopped.set()

    def stop(signum, frame) -> None:  # type: ignore[no-untyped-def]
        # ggml's server loop cannot be interrupted: end the process.
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=serve, name="kolosal-rpc-server", daemon=True).start()
    while not stopped.wait(0.5):
        pass
    print(f"kolosal.rpc_worker: {failure[0] if failure else 'the RPC server stopped'}", file=sys.stderr)
    sys.stdout.flush()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())

"""Addresses of RPC workers (``rpc_servers``): parsing, the private-network
rule and a plain reachability check.

llama.cpp's RPC protocol has no authentication and no encryption: anyone who
reaches a worker can use its memory and compute and read the tensors it holds.
Workers are therefore only accepted on loopback and private addresses unless
the configuration says ``allow_public_rpc``.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import List, Optional, Sequence, Tuple

__all__ = ["parse_endpoint", "is_private_host", "check_endpoints", "unreachable"]


def parse_endpoint(endpoint: str) -> Tuple[str, int]:
    """``host:port`` (IPv4 address or host name) -> (host, port); ValueError if malformed."""
    if not isinstance(endpoint, str) or ":" not in endpoint:
        raise ValueError(f"'{endpoint}' is not host:port")
    host, _, port_s = endpoint.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"'{endpoint}' is not host:port (port 1-65535)")
    if ":" in host or host.startswith("["):
        raise ValueError(f"'{endpoint}': llama.cpp's RPC backend speaks IPv4 only")
    return host, int(port_s)


def _private_ip(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or (ip.is_private and not ip.is_unspecified)


def is_private_host(host: str, resolve: bool = True) -> Optional[bool]:
    """True for loopback and private-range addresses (and names that resolve
    only to such). None when ``host`` is a name and ``resolve`` is False, or
    when it does not resolve."""
    try:
        return _private_ip(host)
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(_private_ip(a) for a in addrs)


def check_endpoints(endpoints: Sequence[str], allow_public: bool = False, resolve: bool = True) -> List[str]:
    """The endpoints, checked: well formed, no duplicates, and (unless
    ``allow_public``) on loopback or private addresses. Raises ValueError
    naming the first offending one. With ``resolve`` False, host names are
    left for the load to check."""
    if isinstance(endpoints, str):
        raise ValueError("expected a list of host:port strings")
    out: List[str] = []
    for e in endpoints:
        host, port = parse_endpoint(e)
        norm = f"{host}:{port}"
        if norm in out:
            raise ValueError(f"'{e}' is listed twice")
        if not allow_public:
            private = is_private_host(host, resolve)
            if private is False or (private is None and resolve):
                why = "is not a loopback or private address" if private is False else "does not resolve"
                raise ValueError(
                    f"RPC worker '{e}' {why}: llama.cpp's RPC protocol has no authentication or encryption, so "
                    f"workers must stay on a private network (set allow_public_rpc: true to accept it anyway)")
        out.append(norm)
    return out


def unreachable(endpoint: str, timeout: float) -> Optional[str]:
    """None if a TCP connection to ``endpoint`` opens within ``timeout``
    seconds, else why not."""
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__

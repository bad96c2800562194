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
import struct
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

__all__ = ["parse_endpoint", "is_private_host", "check_endpoints", "handshake", "connection_states"]

# llama.cpp's RPC HELLO: command byte 14, the request's size (u64) and 24
# bytes of transport capabilities (zeros: plain TCP); the answer is its size
# (u64) then major, minor, patch, padding and 24 bytes of capabilities.
_HELLO = 14
_CAPS = 24


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


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        sock.settimeout(left)
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("the connection was closed")
        data += part
    return data


def handshake(endpoint: str, timeout: float, version: Sequence[int]) -> Optional[str]:
    """None if a worker at ``endpoint`` answers the RPC handshake within
    ``timeout`` seconds with a protocol this build speaks (``version``:
    major, minor, patch), else why not. A worker serves one client at a time:
    one busy with another process does not answer."""
    host, port = parse_endpoint(endpoint)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(struct.pack("<BQ", _HELLO, _CAPS) + bytes(_CAPS))
            size = struct.unpack("<Q", _recv_exactly(sock, 8, deadline))[0]
            if size != 4 + _CAPS:
                return f"it answered the RPC handshake with {size} bytes: not a compatible RPC worker"
            major, minor, patch = _recv_exactly(sock, 4 + _CAPS, deadline)[:3]
    except socket.timeout:
        return (f"no answer to the RPC handshake within {timeout:g} s: the worker is serving another client "
                f"(a worker serves one process at a time) or it is not an RPC worker")
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    if major != version[0] or minor > version[1]:
        return (f"it speaks RPC protocol {major}.{minor}.{patch} and this build {version[0]}.{version[1]}.{version[2]}: "
                f"run the same kolosal version on the worker")
    return None


def connection_states(endpoints: Sequence[str]) -> Dict[str, Set[str]]:
    """The states (psutil's: ``ESTABLISHED``, ``CLOSE_WAIT``, ...) of this
    process's TCP connections to each endpoint: llama.cpp keeps one per
    worker while an engine uses it; ``CLOSE_WAIT`` means the worker closed it."""
    wanted: Dict[Tuple[str, int], str] = {}
    for e in endpoints:
        host, port = parse_endpoint(e)
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        for info in infos:
            wanted[(info[4][0], port)] = e
    import psutil  # only where workers are used: not on every `import kolosal`

    out: Dict[str, Set[str]] = {e: set() for e in endpoints}
    proc = psutil.Process()
    conns = proc.net_connections("tcp4") if hasattr(proc, "net_connections") else proc.connections("tcp4")
    for c in conns:
        key = (c.raddr.ip, c.raddr.port) if c.raddr else None
        if key in wanted:
            out[wanted[key]].add(c.status)
    return out

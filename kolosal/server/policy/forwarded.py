"""Who the client is behind reverse proxies: ``X-Forwarded-For`` and
``X-Forwarded-Proto`` are believed only from the peers listed in
``security.trusted_proxies`` (addresses or networks, IPv4 or IPv6).

Waitress itself trusts at most one proxy address (its ``trusted_proxy``
takes one address or ``*``, no networks), so it is told to leave the
headers alone (``clear_untrusted_proxy_headers=False``, ``serve.py``) and
``ForwardedMiddleware``, the outermost WSGI layer, decides per request:

* from a trusted peer: the client is the right-most ``X-Forwarded-For`` hop
  that is not itself a trusted proxy (hops left of it were written by the
  client and prove nothing); ``REMOTE_ADDR`` becomes that address (the peer
  stays in ``environ["kolosal.peer_addr"]``) and ``wsgi.url_scheme`` the
  scheme the first proxy saw (``X-Forwarded-Proto``: ``http`` or ``https``);
* from anyone else: every forwarding header (``X-Forwarded-*``,
  ``Forwarded``, ``X-Real-IP``) is removed, so nothing after this layer can
  be fooled by one.

Rate limits, token quotas and the access log read the result through
``client_address``."""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from ..config import ConfigError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ENV_CLIENT = "kolosal.client_addr"
ENV_PEER = "kolosal.peer_addr"
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
SCHEMES = ("http", "https")


def trusted_networks(values: Iterable[str]) -> List[Network]:
    """``security.trusted_proxies`` as networks (ConfigError naming the entry that is not one)."""
    nets = []
    for i, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(str(v).strip(), strict=False))
        except ValueError:
            raise ConfigError([f"security.trusted_proxies[{i}]: not an IP address or network: {v}"]) from None
    return nets


def hop_address(hop: str) -> str:
    """One ``X-Forwarded-For`` entry without quotes, IPv6 brackets or an IPv4 port."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        return hop[1:hop.find("]")] if "]" in hop else hop[1:]
    if hop.count(":") == 1:  # a.b.c.d:port
        return hop.split(":", 1)[0]
    return hop


def is_trusted(addr: str, nets: List[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d on a dual-stack socket
        return any(ip in n or ip.ipv4_mapped in n for n in nets)
    return any(ip in n for n in nets)


def resolve_client(environ: Dict[str, Any], nets: List[Network]) -> Tuple[str, int]:
    """(client address, number of proxies it came through; 0: the peer is the client)."""
    peer = environ.get("REMOTE_ADDR") or "unknown"
    if not nets or not is_trusted(peer, nets):
        return peer, 0
    hops = [hop_address(h) for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [h for h in hops if h]
    proxies = 1
    for hop in reversed(hops):
        if not is_trusted(hop, nets):
            return hop, proxies
        proxies += 1
    if hops:  # every hop is a trusted proxy: the first one is the client
        return hops[0], len(hops)
    return peer, 0


def forwarded_scheme(value: Optional[str], proxies: int) -> Optional[str]:
    """The scheme the proxy next to the client saw: proxies append to
    ``X-Forwarded-Proto`` like to ``X-Forwarded-For``, so with ``proxies``
    trusted hops it is the entry ``proxies`` from the right (the left-most
    when fewer were written)."""
    if not value or proxies < 1:
        return None
    entries = [e.strip().lower() for e in value.split(",") if e.strip()]
    if not entries:
        return None
    scheme = entries[max(0, len(entries) - proxies)]
    return scheme if scheme in SCHEMES else None


def client_address(environ: Dict[str, Any], nets: List[Network]) -> str:
    """The client's address: decided once by ``ForwardedMiddleware``, or (an
    environ it has not seen) from the peer and, behind trusted proxies, the
    right-most untrusted ``X-Forwarded-For`` hop."""
    decided = environ.get(ENV_CLIENT)
    if decided:
        return decided
    return resolve_client(environ, nets)[0]


class ForwardedMiddleware:
    """Outermost WSGI layer: believe forwarding headers from trusted proxies
    only (see the module docstring)."""

    def __init__(self, wsgi_app: Callable, nets: List[Network]) -> None:
        self.wsgi_app = wsgi_app
        self.nets = list(nets)

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Any:
        if ENV_CLIENT not in environ:
            peer = environ.get("REMOTE_ADDR") or "unknown"
            client, proxies = resolve_client(environ, self.nets)
            environ[ENV_PEER] = peer
            environ[ENV_CLIENT] = client
            if proxies:
                environ["REMOTE_ADDR"] = client
                scheme = forwarded_scheme(environ.get("HTTP_X_FORWARDED_PROTO"), proxies)
                if scheme:
                    environ["wsgi.url_scheme"] = scheme
            elif not (self.nets and is_trusted(peer, self.nets)):
                for name in FORWARDING_HEADERS:
                    environ.pop(name, None)
        return self.wsgi_app(environ, start_response)

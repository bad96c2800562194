"""X-Forwarded-For / X-Forwarded-Proto through the real Waitress server:
believed from the peers in ``security.trusted_proxies`` (addresses and
networks) only. The clients connect from different loopback addresses
(127.0.0.1 trusted, 127.0.0.5 trusted through a network, 127.0.0.2 not)."""
from __future__ import annotations

import signal
from typing import Dict, Iterator, List

import httpx
import pytest

from kolosal.server.policy.forwarded import (ForwardedMiddleware, client_address, forwarded_scheme, hop_address,
                                             trusted_networks)

from procs import free_port

from .conftest import LiveServer, start_server

LIMIT = 2  # requests per minute and per client


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("proxied")
    cfg = {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "INFO", "file_path": str(tmp / "logs" / "kolosal.log"), "console_output": False,
                    "access_log": True},
        "security": {"trusted_proxies": ["127.0.0.1", "127.0.0.4/30"],
                     "rate_limiting": {"enabled": True, "requests_per_minute": LIMIT, "burst_size": LIMIT}},
    }
    server = start_server(cfg, tmp)
    yield server
    assert server.stop() == 0, server.log()
    server.stop(signal.SIGKILL)


def _client(server: LiveServer, source: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=10, transport=httpx.HTTPTransport(local_address=source))


def _codes(c: httpx.Client, n: int, headers: Dict[str, str]) -> List[int]:
    return [c.get("/v1/models", headers=headers).status_code for _ in range(n)]


def _access_lines(server: LiveServer, prefix: str, count: int) -> List[dict]:
    """The access lines whose request id starts with ``prefix``, once ``count`` are written."""
    return server.access_lines(lambda x: str(x["request_id"]).startswith(prefix), count)


def test_five_forwarded_clients_get_five_buckets(proxied_server):
    with _client(proxied_server, "127.0.0.1") as proxy:
        for i in range(1, 6):
            xff = {"X-Forwarded-For": f"198.51.100.{i}", "X-Request-ID": f"fwd-{i}"}
            assert _codes(proxy, LIMIT + 1, xff) == [200] * LIMIT + [429], i
        # the client cannot pick its address by writing hops of its own: the right-most untrusted one counts
        spoof = {"X-Forwarded-For": "203.0.113.66, 198.51.100.1"}
        assert _codes(proxy, 1, spoof) == [429]
        r = proxy.get("/v1/models", headers={"X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    clients = {x["request_id"]: x["client"] for x in _access_lines(proxied_server, "fwd-", 5 * (LIMIT + 1))}
    assert clients == {f"fwd-{i}": f"198.51.100.{i}" for i in range(1, 6)}


def test_a_trusted_network_counts_like_an_address(proxied_server):
    with _client(proxied_server, "127.0.0.5") as proxy:
        assert _codes(proxy, LIMIT + 1, {"X-Forwarded-For": "198.51.100.77"}) == [200] * LIMIT + [429]
        assert _codes(proxy, 1, {"X-Forwarded-For": "198.51.100.78"}) == [200]


def test_untrusted_peer_headers_are_ignored(proxied_server):
    with _client(proxied_server, "127.0.0.2") as direct:
        codes = [direct.get("/v1/models", headers={"X-Forwarded-For": f"192.0.2.{i}", "X-Forwarded-Proto": "https",
                                                   "X-Request-ID": f"direct-{i}"}).status_code
                 for i in range(LIMIT + 1)]
        assert codes == [200] * LIMIT + [429]  # one bucket: the peer's own address
    mine = _access_lines(proxied_server, "direct-", LIMIT + 1)
    assert len(mine) == LIMIT + 1
    assert {(x["client"], x["scheme"]) for x in mine} == {("127.0.0.2", "http")}


def test_forwarded_proto_from_a_trusted_proxy_sets_the_scheme(proxied_server):
    with _client(proxied_server, "127.0.0.6") as proxy:
        r = proxy.get("/health", headers={"X-Forwarded-For": "198.51.100.200", "X-Forwarded-Proto": "https",
                                          "X-Request-ID": "proto-1"})
        assert r.status_code == 200
    line = _access_lines(proxied_server, "proto-1", 1)
    assert [(x["client"], x["scheme"]) for x in line] == [("198.51.100.200", "https")]


def test_forwarded_helpers():
    nets = trusted_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert hop_address(" [2001:db8::1] ") == "2001:db8::1" and hop_address("192.0.2.1:443") == "192.0.2.1"
    env = {"REMOTE_ADDR": "::ffff:10.1.2.3", "HTTP_X_FORWARDED_FOR": "192.0.2.9, 10.0.0.7"}
    assert client_address(env, nets) == "192.0.2.9"  # an IPv4-mapped peer on a dual-stack socket is trusted
    assert forwarded_scheme("https", 1) == "https" and forwarded_scheme("https, http", 2) == "https"
    assert forwarded_scheme("gopher", 1) is None and forwarded_scheme("https", 0) is None
    seen = {}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.update(environ)
        return []

    ForwardedMiddleware(app, nets)({"REMOTE_ADDR": "198.51.100.3", "HTTP_X_FORWARDED_FOR": "1.2.3.4",
                                    "HTTP_X_REAL_IP": "1.2.3.4", "HTTP_FORWARDED": "for=1.2.3.4",
                                    "wsgi.url_scheme": "http"}, None)
    assert seen["REMOTE_ADDR"] == "198.51.100.3" and not any(k in seen for k in (
        "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED"))


def test_trusted_proxies_entries_are_checked():
    from kolosal.server.config import ConfigError
    with pytest.raises(ConfigError, match=r"security.trusted_proxies\[1\]: not an IP address or network: proxy"):
        trusted_networks(["127.0.0.1", "proxy"])

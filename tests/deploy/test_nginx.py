"""deploy/nginx/ with the real nginx in front of a live Kolosal server:
``nginx -t`` on the shipped files, the openai SDK over HTTPS (certificate
made here with openssl), a stream passed on event by event, and per-client
rate limits through the proxy (X-Forwarded-For from a trusted proxy).

The shipped files are used as they are, with only the listen addresses,
certificate paths and replica addresses replaced (``render``). The upstream
gets the live server and a port nothing listens on, so every request also
exercises the passive health check (``proxy_next_upstream error``)."""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from kolosal.server.config_schema import ServerSection
from procs import free_port
from server.conftest import MODEL_ID, LiveServer, chat_body, server_config, start_server

from .support import DEPLOY, Nginx, make_tls, need, render

LIMIT = 5  # requests per minute per client on the server behind nginx


def render_site(conf_d: Path, tls: dict, https_port: int, http_port: int, replicas: list) -> None:
    site = (DEPLOY / "nginx" / "kolosal.conf").read_text()
    (conf_d / "kolosal.conf").write_text(render(site, {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/nginx/tls/kolosal.crt": str(tls["cert"]),
        "/etc/nginx/tls/kolosal.key": str(tls["key"]),
    }))
    upstream = (DEPLOY / "nginx" / "kolosal-upstream.conf").read_text()
    (conf_d / "kolosal-upstream.conf").write_text(render(upstream, {
        "server 127.0.0.1:8080 ": f"server 127.0.0.1:{replicas[0]} ",
        "server 127.0.0.1:8081 ": f"server 127.0.0.1:{replicas[1]} ",
    }))


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def backend(model_path, tmp_path_factory) -> Iterator[LiveServer]:
    need("nginx")
    tmp = tmp_path_factory.mktemp("behind-nginx")
    cfg = server_config(model_path)
    cfg["security"] = {"trusted_proxies": ["127.0.0.1"],
                       "rate_limiting": {"enabled": True, "requests_per_minute": LIMIT}}
    cfg["logging"] = {"level": "INFO", "access_log": True, "console_output": False,
                      "file_path": str(tmp / "logs" / "kolosal.log")}
    server = start_server(cfg, tmp)
    yield server
    code = server.stop()
    server.stop(signal.SIGKILL)
    assert code == 0, server.log()


@pytest.fixture(scope="module")
def nginx_ports(backend, tls, tmp_path_factory) -> Iterator[dict]:
    """nginx on free ports: HTTPS and the plain-HTTP redirect."""
    nginx = Nginx(tmp_path_factory.mktemp("nginx"))
    ports = {"https": free_port(), "http": free_port()}
    render_site(nginx.prefix / "conf.d", tls, ports["https"], ports["http"], [backend.port, free_port()])
    nginx.start(f"https://127.0.0.1:{ports['https']}/health", verify=tls["context"])
    yield ports
    nginx.stop()


@pytest.fixture(scope="module")
def proxy(nginx_ports) -> str:
    return f"https://127.0.0.1:{nginx_ports['https']}"


def slots_busy(backend: LiveServer) -> int:
    """From /completion-metrics, which rate limits do not count (the engine
    status endpoint would use up the requests of 127.0.0.1)."""
    report = httpx.get(backend.base_url + "/completion-metrics", timeout=10).json()["completion_metrics"]
    return next(e["slots_busy"] for e in report["per_engine"] if e["engine_id"] == MODEL_ID)


def test_nginx_accepts_the_shipped_files(tls, tmp_path):
    nginx = Nginx(tmp_path)
    render_site(tmp_path / "conf.d", tls, free_port(), free_port(), [free_port(), free_port()])
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_shipped_site_has_what_sse_and_failover_need():
    site = (DEPLOY / "nginx" / "kolosal.conf").read_text()
    upstream = (DEPLOY / "nginx" / "kolosal-upstream.conf").read_text()
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", "proxy_read_timeout 660s;",
                      "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                      "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_next_upstream error timeout"):
        assert directive in site
    assert upstream.count("max_fails=3 fail_timeout=30s") == 2
    # nginx drops idle upstream connections before Waitress does (else a request may meet a closing one)
    idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert idle < ServerSection().keep_alive_timeout_seconds
    assert "nginx_upstream_check_module" in upstream  # why the guide's `check` directive is not there


def test_openai_sdk_over_https(proxy, tls):
    import openai
    with httpx.Client(verify=tls["context"], timeout=60) as http, \
            openai.OpenAI(base_url=proxy + "/v1", api_key="unused", http_client=http, max_retries=0) as client:
        models = client.models.list()
        assert [m.id for m in models.data] == [MODEL_ID]
        answer = client.chat.completions.create(model=MODEL_ID, max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "Say hello."}])
        assert answer.choices[0].message.content
        assert answer.usage.completion_tokens > 0
    # without the test CA the certificate is refused: TLS is really nginx's, with our certificate
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy + "/health", timeout=10)


def test_server_sees_the_client_and_https_through_nginx(proxy, tls, backend):
    """X-Forwarded-For and X-Forwarded-Proto from nginx, believed by the
    server because nginx's address is in security.trusted_proxies."""
    with httpx.Client(verify=tls["context"], timeout=30) as c:
        r = c.get(proxy + "/v1/models", headers={"X-Request-ID": "through-nginx"})
    assert r.status_code == 200
    [line] = backend.access_lines(lambda x: x["request_id"] == "through-nginx", 1)
    assert line["scheme"] == "https" and line["client"] == "127.0.0.1" and line["path"] == "/v1/models"


def test_large_request_bodies_reach_the_server(proxy, tls):
    """nginx's own 1 MB default would refuse this 2 MB body with an HTML 413;
    the shipped file lets the server decide (here: an unknown model)."""
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    transport = httpx.HTTPTransport(local_address="127.0.0.4", verify=tls["context"])
    with httpx.Client(base_url=proxy, timeout=60, transport=transport) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 404, r.text[:300]
    assert r.json()["error"]["param"] == "model"


def test_plain_http_redirects_to_https(nginx_ports):
    r = httpx.get(f"http://127.0.0.1:{nginx_ports['http']}/v1/models?x=1", timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == "https://127.0.0.1/v1/models?x=1"


def test_stream_arrives_event_by_event(proxy, tls, backend):
    """The first token reaches the client while the server is still
    generating (its slot busy), and the rest follow as separate events: a
    buffering proxy would deliver nothing before the generation ended."""
    body = {"model": MODEL_ID, "stream": True, "max_tokens": 48, "ignore_eos": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to one hundred."}]}
    busy_at_first_token = None
    contents = []
    with httpx.Client(verify=tls["context"], timeout=120) as c:
        with c.stream("POST", proxy + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta and busy_at_first_token is None:
                    busy_at_first_token = slots_busy(backend)
                if delta:
                    contents.append(delta)
    assert busy_at_first_token == 1, "the first token arrived only after the generation had ended"
    assert len(contents) > 10
    for _ in range(100):  # the slot is freed right after the last event
        if slots_busy(backend) == 0:
            break
        time.sleep(0.05)
    assert slots_busy(backend) == 0


def test_clients_behind_nginx_get_separate_rate_limit_buckets(proxy, tls, backend):
    """127.0.0.2 uses up its requests; 127.0.0.3, through the same nginx,
    still has all of its own (the server trusts nginx's X-Forwarded-For)."""
    def client(source: str) -> httpx.Client:
        return httpx.Client(base_url=proxy, timeout=30,
                            transport=httpx.HTTPTransport(local_address=source, verify=tls["context"]))

    with client("127.0.0.2") as first, client("127.0.0.3") as second:
        codes = [first.get("/v1/models").status_code for _ in range(LIMIT + 1)]
        assert codes == [200] * LIMIT + [429]
        refused = first.get("/v1/models")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"]
        assert [second.get("/v1/models").status_code for _ in range(LIMIT)] == [200] * LIMIT
        assert second.get("/v1/models").status_code == 429
    # three refusals: two to the first client, one to the second
    clients = {x["client"] for x in backend.access_lines(lambda x: x["status"] == 429, 3)}
    assert clients == {"127.0.0.2", "127.0.0.3"}


def test_sigterm_drains_a_stream_in_flight_through_nginx(model_path, tls, tmp_path):
    """The operator's stop (SIGTERM, systemd's KillSignal) with a stream in
    flight through nginx: the stream runs to its end and [DONE], a new request
    meanwhile is refused with the JSON 503 rather than hanging, and the server
    exits 0."""
    cfg = server_config(model_path, shutdown_grace_seconds=60)
    cfg["security"] = {"trusted_proxies": ["127.0.0.1"]}
    server = start_server(cfg, tmp_path)
    nginx = Nginx(tmp_path / "nginx")
    port = free_port()
    render_site(nginx.prefix / "conf.d", tls, port, free_port(), [server.port, free_port()])
    url = f"https://127.0.0.1:{port}"
    nginx.start(url + "/health", verify=tls["context"])
    body = {"model": MODEL_ID, "stream": True, "max_tokens": 64, "ignore_eos": True, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Count from one to one hundred."}]}
    try:
        with httpx.Client(verify=tls["context"], timeout=120) as c:
            with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                first = next(x for x in lines if x.startswith("data: "))
                server.proc.send_signal(signal.SIGTERM)
                while httpx.get(server.base_url + "/health", timeout=10).status_code != 503:
                    time.sleep(0.05)
                during = c.post(url + "/v1/chat/completions", json=chat_body())
                events = [first] + [x for x in lines if x.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            chunks = [json.loads(x[6:]) for x in events[:-1]]
            assert chunks[-2]["choices"][0]["finish_reason"] == "length"
            assert chunks[-1]["usage"]["completion_tokens"] == 64
            assert during.status_code == 503, during.text
            assert during.json()["error"]["code"] == "server_draining"
        assert server.proc.wait(60) == 0, server.log()
    finally:
        nginx.stop()
        server.stop(signal.SIGKILL)

"""docker-compose.yml's topology without Docker: the compose files run as
they are on loopback (only addresses, ports and paths replaced): two
servers started with deploy/docker/production.yaml, one redis-server,
nginx with deploy/nginx/kolosal.conf and deploy/docker/nginx-upstream.conf.
Requests with the API key through nginx reach both replicas and share one
rate limit through Redis; without the key they are refused."""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Iterator, List

import httpx
import pytest
import yaml

from procs import free_port, start_redis
from server.conftest import LiveServer, start_server

from .support import DEPLOY, Nginx, make_tls, need, render

KEY = "compose-test-key-0123456789abcdef"


def replica_config(model_path: Path, port: int, redis_uri: str, log_file: Path) -> dict:
    text = (DEPLOY / "docker" / "production.yaml").read_text()
    return yaml.safe_load(render(text, {
        'host: "0.0.0.0"': 'host: "127.0.0.1"',
        "port: 8080": f"port: {port}",
        '"/app/logs/kolosal-server.log"': json.dumps(str(log_file)),
        'trusted_proxies: ["172.28.0.10"]': 'trusted_proxies: ["127.0.0.1"]',
        '"redis://redis:6379/0"': json.dumps(redis_uri),
        '"/app/models/production-model.gguf"': json.dumps(str(model_path)),
        "load_at_startup: true": "load_at_startup: false",  # the limits are the point here, not the model
    }))


@pytest.fixture(scope="module")
def topology(model_path, tmp_path_factory) -> Iterator[dict]:
    need("nginx")
    tmp = tmp_path_factory.mktemp("compose")
    redis = start_redis(tmp)
    redis_uri = next(redis)
    replicas: List[LiveServer] = []
    nginx = Nginx(tmp / "nginx")
    mp = pytest.MonkeyPatch()
    mp.setenv("KOLOSAL_API_KEY", KEY)  # as compose passes it to both replicas
    try:
        for name in ("kolosal-1", "kolosal-2"):
            port = free_port()
            folder = tmp / name
            folder.mkdir()
            replicas.append(start_server(replica_config(model_path, port, redis_uri, folder / "kolosal.log"), folder))
        tls = make_tls(tmp / "tls")
        site = (DEPLOY / "nginx" / "kolosal.conf").read_text()
        https = free_port()
        (nginx.prefix / "conf.d" / "kolosal.conf").write_text(render(site, {
            "listen 80;": f"listen 127.0.0.1:{free_port()};", "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
            "/etc/nginx/tls/kolosal.crt": str(tls["cert"]), "/etc/nginx/tls/kolosal.key": str(tls["key"])}))
        upstream = (DEPLOY / "docker" / "nginx-upstream.conf").read_text()
        (nginx.prefix / "conf.d" / "kolosal-upstream.conf").write_text(render(upstream, {
            "kolosal-1:8080": f"127.0.0.1:{replicas[0].port}", "kolosal-2:8080": f"127.0.0.1:{replicas[1].port}"}))
        url = f"https://127.0.0.1:{https}"
        nginx.start(url + "/health", verify=tls["context"])
        yield {"url": url, "tls": tls, "replicas": replicas}
    finally:
        nginx.stop()
        for server in replicas:
            code = server.stop()
            server.stop(signal.SIGKILL)
            assert code == 0, server.log()
        redis.close()
        mp.undo()


def served_paths(server: LiveServer) -> List[str]:
    log = server.config_path.parent / "kolosal.log"
    return [x["path"] for x in map(json.loads, log.read_text().splitlines()) if x["component"] == "access"]


def test_api_key_is_required_through_nginx(topology):
    with httpx.Client(base_url=topology["url"], verify=topology["tls"]["context"], timeout=30) as c:
        assert c.get("/v1/health").status_code == 200  # health stays open for the checks
        refused = c.get("/v1/models")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"]


def test_replicas_share_one_rate_limit_through_redis(topology):
    cfg = yaml.safe_load((DEPLOY / "docker" / "production.yaml").read_text())
    burst = cfg["security"]["rate_limiting"]["burst_size"]
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=topology["url"], verify=topology["tls"]["context"], timeout=30) as c:
        codes = [c.get("/v1/models", headers=headers).status_code for _ in range(burst + 1)]
    assert codes == [200] * burst + [429]
    # nginx spread them over both replicas, so only the shared Redis count can have refused the last one
    served = [served_paths(r).count("/v1/models") for r in topology["replicas"]]
    assert all(n > 0 for n in served) and max(served) <= burst, served

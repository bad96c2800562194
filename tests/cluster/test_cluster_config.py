"""The cluster file: validation with errors naming the key, the HAProxy
configuration written from it (``haproxy -c`` on every variant), and what an
instance takes from it. No servers run here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kolosal.cluster import load_cluster, render_haproxy
from kolosal.server.cli import parse, resolve_config
from kolosal.server.config import ConfigError, load_config

from .support import REPO, need


def write(tmp_path, spec, name="cluster.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kolosal.cluster", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


def spec_with(model_path, strategy="round_robin", ids=("alpha", "beta")):
    return {"instances": {"one": "127.0.0.2:8080", "two": "127.0.0.3:8080", "three": "[::1]:8081"},
            "model_distribution": {"one": [ids[0]], "two": list(ids), "three": [ids[-1]]},
            "routing_strategy": strategy,
            "models": [{"id": m, "path": str(model_path)} for m in ids]}


@pytest.mark.parametrize("strategy,balance", [("round_robin", "roundrobin"), ("least_conn", "leastconn")])
def test_written_config_passes_haproxy_check(tmp_path, model_path, strategy, balance):
    need("haproxy")
    ids = ("org/model:Q4_K_M", "llama-3.2-1b@v2", "a+b.c")
    path = write(tmp_path, spec_with(model_path, strategy, ids))
    out = tmp_path / "haproxy.cfg"
    done = run_cli("haproxy", path, "-o", out, "--check", "--stats-socket", tmp_path / "s.sock")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.count(f"balance {balance}") == 1 + len(ids)
    for m in ids:
        assert f"-m str {m} }}" in text
    assert "option http-buffer-request" in text and "json_query('$.model')" in text
    checked = subprocess.run([need("haproxy"), "-c", "-f", str(out)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_guide_keys_are_accepted_in_the_server_config():
    cfg = load_config(data={"model_distribution": {"server_1": ["llama-7b-chat", "codellama-7b"],
                                                   "server_2": ["llama-13b-chat", "mistral-7b"]},
                            "routing_strategy": "round_robin"})
    assert cfg.model_instances() == {"llama-7b-chat": ["server_1"], "codellama-7b": ["server_1"],
                                     "llama-13b-chat": ["server_2"], "mistral-7b": ["server_2"]}


@pytest.mark.parametrize("change,message", [
    ({"routing_strategy": "random"}, "routing_strategy"),
    ({"model_distribution": {"four": ["alpha"]}}, "model_distribution.four: not one of instances"),
    ({"model_distribution": {"one": ["bad id"]}}, "model_distribution.one[0]: 'bad id' cannot be routed"),
    ({"instances": {"one": "127.0.0.2"}, "model_distribution": {"one": ["alpha"]}}, "instances.one: expected"),
    ({"models": [{"id": "zeta", "path": "x.gguf"}]}, "'zeta' is served by no instance"),
])
def test_bad_cluster_file_names_the_key(tmp_path, model_path, change, message):
    path = write(tmp_path, {**spec_with(model_path), **change})
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    assert message in str(caught.value)
    done = run_cli("haproxy", path)
    assert done.returncode == 1 and message in done.stderr
    assert done.stderr.startswith(f"cluster file error in {path}:"), done.stderr


def test_instances_without_addresses_cannot_be_balanced(tmp_path):
    spec = load_cluster(write(tmp_path, {"model_distribution": {"one": ["alpha"]}}))
    with pytest.raises(ValueError, match="no address for one"):
        render_haproxy(spec)


def test_instance_takes_its_share_of_the_models(tmp_path, model_path):
    path = write(tmp_path, spec_with(model_path))
    cfg = resolve_config(parse(["--cluster", str(path), "--instance", "two"]))
    assert [m.model_id for m in cfg.models] == ["alpha", "beta"] and cfg.instance == "two"
    with pytest.raises(ConfigError, match="'four' is not an instance of the cluster"):
        resolve_config(parse(["--cluster", str(path), "--instance", "four"]))
    spec = spec_with(model_path)
    spec["models"] = spec["models"][:1]  # beta has no entry
    with pytest.raises(ConfigError, match="model_distribution.two: no model entry for beta"):
        resolve_config(parse(["--cluster", str(write(tmp_path, spec, "c2.json")), "--instance", "two"]))


def test_cluster_model_paths_resolve_against_the_install_root(tmp_path, model_path):
    """The guide's layout with the cluster file beside production.json in
    config/: `models/x.gguf` means <root>/models/x.gguf (as in models.json),
    and a missing one names the cluster file and the root it was looked for in."""
    (tmp_path / "config").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "alpha.gguf").symlink_to(model_path)
    (tmp_path / "config" / "production.json").write_text("{}")
    spec = {"instances": {"one": "127.0.0.2:8080"}, "model_distribution": {"one": ["alpha", "beta"]},
            "models": [{"id": "alpha", "path": "models/alpha.gguf"}, {"id": "beta", "path": "models/beta.gguf"}]}
    cluster = write(tmp_path / "config", spec)
    args = ["--config", str(tmp_path / "config" / "production.json"), "--cluster", str(cluster), "--instance", "one"]
    with pytest.raises(ConfigError) as caught:
        resolve_config(parse(args))
    assert caught.value.errors == [
        f"models[1].path: model file not found: {tmp_path / 'models' / 'beta.gguf'} ({cluster}: models[1]); "
        f"'models/beta.gguf' is relative to the install root {tmp_path}"]
    spec["model_distribution"]["one"] = ["alpha"]
    spec["models"] = spec["models"][:1]
    write(tmp_path / "config", spec)
    cfg = resolve_config(parse(args))
    assert cfg.models[0].file == str(tmp_path / "models" / "alpha.gguf")
    other = tmp_path / "elsewhere"  # without --config: its own folder (or the parent of a config folder)
    other.mkdir()
    spec["models"][0]["path"] = str(model_path)
    with pytest.raises(ConfigError, match=f"^{other / 'cluster.json'}: models\\[0\\]: 'zeta'"):
        load_cluster(write(other, {**spec, "models": [{"id": "zeta", "path": "x.gguf"}]}))

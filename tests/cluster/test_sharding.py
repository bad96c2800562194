"""Models sharded over three instances the guide's way: one cluster file
(``model_distribution``, ``routing_strategy``), the HAProxy configuration
written from it by ``python -m kolosal.cluster haproxy``, and instances
started with ``--cluster FILE --instance NAME``. Real HAProxy, real Waitress
servers on 127.0.0.2-4, the demo model under several ids."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from procs import free_port

from .support import HOSTS, REPO, HAProxy, Instance, chat, instance_config, model_entry

# a: alpha and beta; b: alpha (a replica); c: gamma
DISTRIBUTION = {"a": ["alpha", "beta"], "b": ["alpha"], "c": ["gamma"]}


@pytest.fixture(scope="module")
def sharded(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    ports = {name: free_port(host) for name, host in zip(DISTRIBUTION, HOSTS)}
    spec = {"instances": {name: f"{host}:{ports[name]}" for name, host in zip(DISTRIBUTION, HOSTS)},
            "model_distribution": DISTRIBUTION, "routing_strategy": "round_robin",
            "models": [model_entry(m, model_path) for m in ("alpha", "beta", "gamma")]}
    cluster_file = tmp / "cluster.json"
    cluster_file.write_text(json.dumps(spec))
    lb_port = free_port()
    cfg_path, sock = tmp / "haproxy.cfg", tmp / "haproxy.sock"
    done = subprocess.run([sys.executable, "-m", "kolosal.cluster", "haproxy", str(cluster_file), "-o", str(cfg_path),
                           "--bind", f"127.0.0.1:{lb_port}", "--stats-socket", str(sock), "--check"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    instances = {name: Instance(name, host, ports[name], instance_config(host, ports[name], []), tmp / name,
                                args=["--cluster", str(cluster_file), "--instance", name])
                 for name, host in zip(DISTRIBUTION, HOSTS)}
    lb = None
    try:
        for inst in instances.values():
            inst.start(wait=False)
        for inst in instances.values():
            inst.wait_healthy()
        lb = HAProxy(cfg_path, sock)
        for name in instances:
            assert lb.wait_status("kolosal_all", name, "UP") == "UP"
        lb.cluster_file = cluster_file
        yield instances, lb, f"http://127.0.0.1:{lb_port}"
    finally:
        if lb is not None:
            lb.close()
        for inst in instances.values():
            inst.stop(signal.SIGKILL)


def served(instances) -> dict:
    return {name: inst.requests_served() for name, inst in instances.items()}


def test_each_model_lands_on_its_instances_and_replicas_share(sharded):
    instances, lb, url = sharded
    before = served(instances)
    with httpx.Client(base_url=url, timeout=60) as client:
        for model, times in (("alpha", 6), ("beta", 2), ("gamma", 2)):
            for _ in range(times):
                r = client.post("/v1/chat/completions", json=chat(model, max_tokens=2))
                assert r.status_code == 200 and r.json()["model"] == model, r.text
        r = client.post("/v1/completions", json={"model": "gamma", "prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 200, r.text
    after = served(instances)
    delta = {name: {m: after[name].get(m, 0) - before[name].get(m, 0) for m in after[name]} for name in after}
    assert delta["a"] == {"alpha": 3, "beta": 2}, delta  # alpha alternates between its two replicas
    assert delta["b"] == {"alpha": 3}, delta
    assert delta["c"] == {"gamma": 3}, delta


def test_least_conn_sends_work_to_the_replica_with_fewer_requests(sharded, tmp_path):
    """The same cluster with routing_strategy least_conn, through a second HAProxy: while one alpha replica is
    busy with a long request, the short ones all go to the other (round robin would alternate)."""
    instances, lb, _ = sharded
    spec = json.loads(lb.cluster_file.read_text())
    spec["routing_strategy"] = "least_conn"
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    port, sock = free_port(), tmp_path / "haproxy.sock"
    done = subprocess.run([sys.executable, "-m", "kolosal.cluster", "haproxy", str(tmp_path / "cluster.json"),
                           "-o", str(tmp_path / "haproxy.cfg"), "--bind", f"127.0.0.1:{port}",
                           "--stats-socket", str(sock), "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lb2 = HAProxy(tmp_path / "haproxy.cfg", sock)
    url = f"http://127.0.0.1:{port}"
    runner = None
    try:
        for name in instances:
            assert lb2.wait_status("kolosal_all", name, "UP") == "UP"
        long_body = chat("alpha", content="Tell a long story.", max_tokens=300, ignore_eos=True)
        runner = threading.Thread(target=httpx.post, args=(url + "/v1/chat/completions",),
                                  kwargs={"json": long_body, "timeout": 120})
        runner.start()
        busy = []
        for _ in range(200):
            busy = [r["svname"] for r in lb2.stats() if r["pxname"] == "model_1" and r["svname"] in ("a", "b")
                    and int(r["scur"] or 0) > 0]
            if busy:
                break
            time.sleep(0.02)
        assert len(busy) == 1, busy
        other = "b" if busy[0] == "a" else "a"
        before = served(instances)
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(4):
                assert client.post("/v1/chat/completions", json=chat("alpha", max_tokens=2)).status_code == 200
        after = served(instances)
        gained = {n: after[n].get("alpha", 0) - before[n].get("alpha", 0) for n in ("a", "b")}
        assert gained[other] == 4 and gained[busy[0]] == 0, gained
    finally:
        if runner is not None:
            runner.join(120)
        lb2.close()


def test_models_through_the_balancer_list_the_whole_cluster(sharded):
    instances, lb, url = sharded
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for _ in range(3):  # GET requests go to every instance in turn: each lists everything
            cards = {m.id: m for m in client.models.list().data}
            assert set(cards) == {"alpha", "beta", "gamma"}
            assert {k: c.model_extra["instances"] for k, c in cards.items()} == {
                "alpha": ["a", "b"], "beta": ["a"], "gamma": ["c"]}
    direct = httpx.get(instances["c"].url + "/v1/models", timeout=10).json()["data"]
    assert {m["id"]: m["status"] for m in direct} == {"gamma": "loaded", "alpha": "remote", "beta": "remote"}
    one = httpx.get(instances["c"].url + "/v1/models/beta", timeout=10).json()
    assert one["status"] == "remote" and one["instances"] == ["a"]


def test_unknown_model_is_404_in_the_error_envelope(sharded):
    instances, lb, url = sharded
    r = httpx.post(url + "/v1/chat/completions", json=chat('no"such model'), timeout=30)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model" and err["type"] == "invalid_request_error"
    assert 'no"such model' in err["message"]
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="delta", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert caught.value.body["code"] == "model_not_found"


def backend_requests(lb) -> dict:
    """Requests each backend of the HAProxy configuration received so far (``stot``)."""
    return {r["pxname"]: int(r["stot"] or 0) for r in lb.stats() if r["svname"] == "BACKEND"}


def test_body_larger_than_the_buffer_is_routed_by_header_else_413(sharded):
    """HAProxy reads the first 256 KiB (tune.bufsize) of a body to find its model. Beyond that, the
    X-Kolosal-Model header routes the request; without it the request is refused, never guessed."""
    instances, lb, url = sharded
    text = "word " * 60000  # 300 KB: more than the 256 KiB HAProxy reads to route
    # "model" after the long messages (as the openai SDK orders them): not in what HAProxy read
    late = {"messages": [{"role": "user", "content": text}], "model": "alpha", "max_tokens": 2}
    r = httpx.post(url + "/v1/chat/completions", json=late, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert "X-Kolosal-Model" in r.json()["error"]["message"]
    # "model" first: found in the first buffer, so routed to alpha's instances (which refuse a prompt that long)
    early = {"model": "alpha", "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    r = httpx.post(url + "/v1/chat/completions", json=early, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text

    # The header: a short prompt in a 300 KB body (JSON whitespace), "model" at its end, is answered by alpha's
    # replicas, and gamma's backend sees nothing of it
    padded = ('{"messages": [{"role": "user", "content": "Say hello."}],' + " " * 300_000
              + '"model": "alpha", "max_tokens": 2}').encode()
    assert len(padded) > 256 * 1024
    assert httpx.post(url + "/v1/chat/completions", content=padded, timeout=30,
                      headers={"Content-Type": "application/json"}).status_code == 413
    before, routed = served(instances), backend_requests(lb)
    r = httpx.post(url + "/v1/chat/completions", content=padded, timeout=60,
                   headers={"Content-Type": "application/json", "X-Kolosal-Model": "alpha"})
    assert r.status_code == 200 and r.json()["model"] == "alpha", r.text
    after, routed_after = served(instances), backend_requests(lb)
    assert sum(after[n].get("alpha", 0) - before[n].get("alpha", 0) for n in ("a", "b")) == 1
    assert routed_after["model_1"] - routed["model_1"] == 1 and routed_after["model_3"] == routed["model_3"]

    # The openai SDK (which writes "messages" first) with the header: the long prompt reaches an alpha instance
    routed = backend_requests(lb)
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60,
                       default_headers={"X-Kolosal-Model": "alpha"}) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": text}], max_tokens=2)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert backend_requests(lb)["model_1"] - routed["model_1"] == 1

    # A header naming another model than a body HAProxy can read: 400, sent nowhere
    routed = backend_requests(lb)
    for body in (early, chat("alpha")):
        r = httpx.post(url + "/v1/chat/completions", json=body, headers={"X-Kolosal-Model": "gamma"}, timeout=30)
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "model_mismatch" and err["param"] == "model", r.text
    assert backend_requests(lb) == routed
    # ...and one it cannot read: the header routes, and gamma's instance refuses the mismatch itself
    r = httpx.post(url + "/v1/chat/completions", content=padded, timeout=30,
                   headers={"Content-Type": "application/json", "X-Kolosal-Model": "gamma"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_mismatch", r.text
    assert backend_requests(lb)["model_3"] - routed["model_3"] == 1


def test_model_with_every_replica_down_is_503_in_the_error_envelope(sharded):
    instances, lb, url = sharded
    instances["c"].stop(signal.SIGKILL)
    assert lb.wait_status("kolosal_all", "c", "DOWN", timeout=20) == "DOWN"
    r = httpx.post(url + "/v1/chat/completions", json=chat("gamma"), timeout=30)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/json"), r.text
    err = r.json()["error"]
    assert err["code"] == "model_unavailable" and err["param"] == "model" and "gamma" in err["message"]
    assert int(r.headers["Retry-After"]) > 0
    # the other models keep serving, and the listing still names gamma (from the cluster file)
    assert httpx.post(url + "/v1/chat/completions", json=chat("alpha", max_tokens=2), timeout=60).status_code == 200
    ids = {m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]}
    assert ids == {"alpha", "beta", "gamma"}

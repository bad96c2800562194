"""Three replicas behind the shipped deploy/haproxy/haproxy.cfg (real HAProxy,
real Waitress servers with the demo model on 127.0.0.2-4): the load spreads,
a killed instance costs no non-streaming request and no hung stream, and a
rolling restart (SIGTERM, drain, start) costs no request at all."""
from __future__ import annotations

import csv
import io
import signal
import subprocess
import threading
import time

import httpx
import pytest

from procs import free_port

from .support import HOSTS, REPO, HAProxy, Instance, SteadyLoad, chat, instance_config, model_entry, need

MODEL = "smollm2"
BACKEND = "kolosal_servers"


@pytest.fixture(scope="module")
def cluster(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    instances = []
    for i, host in enumerate(HOSTS, 1):
        port = free_port(host)
        instances.append(Instance(f"kolosal{i}", host, port, instance_config(host, port, [model_entry(MODEL, model_path)]),
                                  tmp / f"kolosal{i}"))
    lb = None
    try:
        for inst in instances:
            inst.start(wait=False)
        for inst in instances:
            inst.wait_healthy()
        lb_port, stats_port = free_port(), free_port()
        env = {"KOLOSAL_LB_BIND": f"127.0.0.1:{lb_port}", "KOLOSAL_LB_SOCKET": str(tmp / "haproxy.sock"),
               "KOLOSAL_LB_STATS": f"127.0.0.1:{stats_port}",
               **{f"KOLOSAL_{i}": inst.address for i, inst in enumerate(instances, 1)}}
        lb = HAProxy(REPO / "deploy/haproxy/haproxy.cfg", tmp / "haproxy.sock", env)
        for inst in instances:
            assert lb.wait_status(BACKEND, inst.name, "UP") == "UP"
        lb.stats_url = f"http://127.0.0.1:{stats_port}/stats"
        yield instances, lb, f"http://127.0.0.1:{lb_port}"
    finally:
        if lb is not None:
            lb.close()
        for inst in instances:
            inst.stop(signal.SIGKILL)


def served(instances) -> list:
    return [inst.requests_served().get(MODEL, 0) for inst in instances]


def test_load_spreads_over_the_three_instances(cluster):
    instances, lb, url = cluster
    before = served(instances)
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(12):
            r = client.post("/v1/chat/completions", json=chat(MODEL, max_tokens=2))
            assert r.status_code == 200, r.text
    after = served(instances)
    counts = [a - b for a, b in zip(after, before)]
    assert sum(counts) == 12
    assert counts == [4, 4, 4], counts  # roundrobin, one request at a time, every server UP
    # the stats page shows the same as the admin socket
    page = httpx.get(lb.stats_url + ";csv", timeout=10).text.lstrip("# ")
    rows = [r for r in csv.DictReader(io.StringIO(page)) if r["pxname"] == BACKEND and r["svname"] != "BACKEND"]
    assert {r["svname"]: r["status"] for r in rows} == {inst.name: "UP" for inst in instances}


def test_kill_9_under_load_loses_no_plain_request_and_hangs_no_stream(cluster):
    instances, lb, url = cluster
    # a long stream first, alone, so that HAProxy's session count shows which instance serves it: that one is killed
    started, probe = threading.Event(), {}
    runner = threading.Thread(target=_long_stream, args=(url, started, probe), daemon=True)
    runner.start()
    assert started.wait(30), probe
    busy = _serving(lb)
    assert len(busy) == 1, busy
    victim = next(inst for inst in instances if inst.name == busy[0])
    retries_before = _retries(lb)
    with SteadyLoad(url, MODEL, plain=3, streams=2, read_timeout=30) as load:
        time.sleep(2)
        before_kill = len(load.outcomes)
        killed = time.monotonic()
        victim.stop(signal.SIGKILL)
        status = lb.wait_status(BACKEND, victim.name, "DOWN", timeout=20)
        down_after = time.monotonic() - killed
        time.sleep(3)
    runner.join(40)
    assert status == "DOWN"
    summary = load.summary()
    print(f"kill -9: {summary}, stream failures {load.failures('stream')}, retries {_retries(lb) - retries_before}, "
          f"DOWN after {down_after:.1f}s, the long stream: {probe['outcome']} {probe['ended'] - killed:.2f}s "
          f"after the kill")
    assert load.failures("plain") == [], summary
    assert summary["plain"]["ok"] > 0 and len(load.outcomes) > before_kill
    # streams cut off by the kill end with a closed connection, never a client timeout
    assert probe["outcome"].startswith("closed"), probe
    assert all(not d.startswith("timeout") for d in load.failures("stream")), load.failures("stream")
    assert summary["stream"]["ok"] > 0, summary
    victim.start()
    assert lb.wait_status(BACKEND, victim.name, "UP") == "UP"


def _serving(lb: HAProxy) -> list:
    """The servers with a request in progress, by HAProxy's session count."""
    return [r["svname"] for r in lb.stats() if r["pxname"] == BACKEND and r["svname"] != "BACKEND"
            and int(r["scur"] or 0) > 0]


def test_plain_request_in_flight_on_a_killed_instance_is_retried_elsewhere(cluster):
    """retry-on empty-response: the instance died before answering a byte, HAProxy sends the request again."""
    instances, lb, url = cluster
    result = {}

    def long_plain() -> None:
        body = chat(MODEL, content="Tell a long story.", max_tokens=150, ignore_eos=True)
        result["response"] = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)

    retries_before = _retries(lb)
    runner = threading.Thread(target=long_plain)
    runner.start()
    busy = []
    for _ in range(200):
        busy = _serving(lb)
        if busy:
            break
        time.sleep(0.02)
    assert len(busy) == 1, busy
    victim = next(inst for inst in instances if inst.name == busy[0])
    time.sleep(0.5)  # generating by now
    victim.stop(signal.SIGKILL)
    runner.join(120)
    r = result["response"]
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 150, r.text
    assert _retries(lb) > retries_before
    assert lb.wait_status(BACKEND, victim.name, "DOWN", timeout=20) == "DOWN"
    victim.start()
    assert lb.wait_status(BACKEND, victim.name, "UP") == "UP"


def test_requests_to_an_instance_not_yet_marked_down_are_redispatched(cluster):
    """retry-on conn-failure with redispatch: the instance is gone but HAProxy still lists it UP (its checks
    are paused here, standing in for the second or two before they notice); every request still succeeds."""
    instances, lb, url = cluster
    victim = instances[2]
    lb.command(f"disable health {BACKEND}/{victim.name}")
    try:
        victim.stop(signal.SIGKILL)
        assert lb.status(BACKEND, victim.name) != "DOWN"  # "no check": in rotation, state frozen
        retries_before = _retries(lb)
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(6):  # round robin: two of them are sent to the dead instance first
                r = client.post("/v1/chat/completions", json=chat(MODEL, max_tokens=2))
                assert r.status_code == 200, r.text
        assert _retries(lb) - retries_before >= 2
    finally:
        lb.command(f"enable health {BACKEND}/{victim.name}")
    assert lb.wait_status(BACKEND, victim.name, "DOWN", timeout=20) == "DOWN"
    victim.start()
    assert lb.wait_status(BACKEND, victim.name, "UP") == "UP"


def _long_stream(url: str, started: threading.Event, probe: dict) -> None:
    body = chat(MODEL, content="Tell a long story.", max_tokens=400, ignore_eos=True, stream=True)
    events = []
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, connect=5)) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    started.set()
                events.append(line)
        probe["outcome"] = "finished" if "data: [DONE]" in events else "ended without [DONE]"
    except httpx.TimeoutException as e:
        probe["outcome"] = f"timeout: {e!r}"
    except httpx.HTTPError as e:
        probe["outcome"] = f"closed: {e!r}"
    finally:
        probe["ended"] = time.monotonic()
        started.set()


def _retries(lb: HAProxy) -> int:
    row = next(r for r in lb.stats() if r["pxname"] == BACKEND and r["svname"] == "BACKEND")
    return int(row["wretr"] or 0) + int(row["wredis"] or 0)


def test_rolling_restart_under_load_loses_no_request(cluster):
    instances, lb, url = cluster
    with SteadyLoad(url, MODEL, plain=2, streams=2, read_timeout=60) as load:
        for inst in instances:
            time.sleep(1)
            assert inst.proc is not None
            sent = time.monotonic()
            inst.proc.send_signal(signal.SIGTERM)
            # /v1/health answers 503 at once, and the instance takes requests for drain_delay_seconds:
            # HAProxy marks it DOWN while it still runs, so no new request reaches it once it refuses them
            assert lb.wait_status(BACKEND, inst.name, "DOWN", timeout=10) == "DOWN"
            down = time.monotonic() - sent
            assert inst.running(), "the instance exited before HAProxy took it out"
            assert inst.wait_exit(90) == 0, inst.log()
            exited = time.monotonic() - sent
            inst.start(wait=False)
            assert lb.wait_status(BACKEND, inst.name, "UP") == "UP"
            print(f"{inst.name}: DOWN {down:.1f}s after SIGTERM, exited at {exited:.1f}s, "
                  f"UP again {time.monotonic() - sent:.1f}s after SIGTERM")
        time.sleep(1)
    summary = load.summary()
    print(f"rolling restart: {summary}")
    assert load.failures("plain") == [] and load.failures("stream") == [], summary
    assert summary["plain"]["ok"] > 0 and summary["stream"]["ok"] > 0
    # every instance served generations after its restart
    assert all(n > 0 for n in served(instances))


def test_shipped_config_is_valid_as_is():
    """The file as shipped (defaults for every address) passes ``haproxy -c``."""
    done = subprocess.run([need("haproxy"), "-c", "-f", str(REPO / "deploy/haproxy/haproxy.cfg")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

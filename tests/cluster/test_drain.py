"""``server.drain_delay_seconds``: on SIGTERM ``/v1/health`` answers 503 at
once while new requests are still served, then new requests are refused,
requests in flight finish, and the process exits 0."""
from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from procs import free_port

from .support import HOSTS, Instance, chat, instance_config, model_entry


def test_sigterm_turns_health_503_first_and_refuses_work_only_after_the_delay(model_path, tmp_path):
    host = HOSTS[0]
    port = free_port(host)
    cfg = instance_config(host, port, [model_entry("smollm2", model_path)], server={"drain_delay_seconds": 2})
    inst = Instance("one", host, port, cfg, tmp_path / "one").start()
    streamed, started = [], threading.Event()

    def long_stream() -> None:
        body = chat("smollm2", max_tokens=300, ignore_eos=True, stream=True)
        with httpx.stream("POST", inst.url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    started.set()
                    streamed.append(line[6:])

    runner = threading.Thread(target=long_stream)
    try:
        runner.start()
        assert started.wait(60)
        assert inst.proc is not None
        inst.proc.send_signal(signal.SIGTERM)
        health = None
        for _ in range(100):
            health = httpx.get(inst.url + "/v1/health", timeout=10)
            if health.status_code == 503:
                break
            time.sleep(0.02)
        assert health is not None and health.status_code == 503 and health.json()["status"] == "draining"
        # still taking work: the load balancer has not taken the instance out yet
        taken = httpx.post(inst.url + "/v1/chat/completions", json=chat("smollm2", max_tokens=2), timeout=60)
        assert taken.status_code == 200, taken.text
        codes = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = httpx.post(inst.url + "/v1/chat/completions", json=chat("smollm2", max_tokens=2), timeout=60)
            codes.append(r.status_code)
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "server_draining"
                break
            time.sleep(0.1)
        assert codes[-1] == 503, codes
        runner.join(120)
        assert streamed[-1] == "[DONE]"  # the stream in flight finished
        assert inst.wait_exit(60) == 0, inst.log()
    finally:
        inst.stop(signal.SIGKILL)
        runner.join(10)


def test_a_stream_outliving_the_grace_period_ends_with_an_error_saying_so(model_path, tmp_path):
    """server.shutdown_grace_seconds over: the stream still running is cut
    with an error event that says the server stopped (not a hang, not a bare
    close), and the process exits 0."""
    host = HOSTS[0]
    port = free_port(host)
    entry = model_entry("smollm2", model_path)
    entry["load_params"].update(n_ctx=4096, n_parallel=1)  # room for a stream far longer than the grace period
    cfg = instance_config(host, port, [entry], server={"drain_delay_seconds": 0, "shutdown_grace_seconds": 1})
    inst = Instance("one", host, port, cfg, tmp_path / "one").start()
    events = []
    try:
        body = chat("smollm2", max_tokens=4000, ignore_eos=True, stream=True)
        with httpx.stream("POST", inst.url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        assert inst.proc is not None
                        inst.proc.send_signal(signal.SIGTERM)
        error = [json.loads(e)["error"] for e in events if e.startswith('{"error"')]
        assert len(error) == 1 and error[0]["code"] == "engine_closed", events[-3:]
        assert "shutdown_grace_seconds" in error[0]["message"]
        assert inst.wait_exit(60) == 0, inst.log()
    finally:
        inst.stop(signal.SIGKILL)

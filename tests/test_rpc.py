"""llama.cpp's RPC backend from the Python API: ``python -m kolosal.rpc_worker``
and ``Engine(rpc_servers=...)`` with workers on 127.0.0.2 and 127.0.0.3."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, List

import pytest

import kolosal
from kolosal import _native
from kolosal.errors import InvalidParameterError, ModelLoadError, WorkerUnreachableError
from kolosal.rpc_endpoints import connection_states
from server.rpc_workers import Worker, closed_endpoint, start_worker

PROMPT = "The three primary colours are"


def test_this_build_has_the_rpc_backend():
    # USE_RPC is on by default: the tests below must run, not skip.
    assert _native.rpc_available()
    assert "RPC" in kolosal.build_info()["backends"]


def test_the_worker_refuses_a_public_address():
    r = subprocess.run([sys.executable, "-m", "kolosal.rpc_worker", "--host", "8.8.8.8", "--port", "50052"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--allow-public" in r.stderr


def test_the_worker_refuses_a_host_name():
    r = subprocess.run([sys.executable, "-m", "kolosal.rpc_worker", "--host", "localhost"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "IPv4 address" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_stops_on_a_signal(tmp_path, sig):
    w = start_worker("127.0.0.2", tmp_path)
    assert w.stop(sig) == 0
    assert "Starting RPC server" in w.log()


def test_a_second_worker_on_a_busy_port_exits_with_an_error(tmp_path):
    w = start_worker("127.0.0.2", tmp_path)
    try:
        r = subprocess.run([sys.executable, "-m", "kolosal.rpc_worker", "--host", w.host, "--port", str(w.port)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert "could not listen" in r.stderr
    finally:
        w.stop()


@pytest.mark.parametrize("servers, why", [
    (["8.8.8.8:50052"], "not a loopback or private address"),
    (["127.0.0.2"], "not host:port"),
    (["127.0.0.2:0"], "not host:port"),
    (["[::1]:50052"], "IPv4"),
    ("127.0.0.2:50052", "list"),
])
def test_bad_worker_addresses_are_refused_before_loading(model_path, servers, why):
    with pytest.raises(InvalidParameterError) as err:
        kolosal.Engine(model_path, rpc_servers=servers)
    assert err.value.param == "rpc_servers"
    assert why in str(err.value)


def test_a_bad_rpc_timeout_is_refused(model_path):
    with pytest.raises(InvalidParameterError) as err:
        kolosal.Engine(model_path, rpc_servers=["127.0.0.2:50052"], rpc_timeout=0)
    assert err.value.param == "rpc_timeout"


def test_an_unreachable_worker_is_a_load_error_naming_it(model_path):
    endpoint = closed_endpoint("127.0.0.3")
    with pytest.raises(WorkerUnreachableError) as err:
        kolosal.Engine(model_path, rpc_servers=[endpoint], rpc_timeout=1.0)
    assert endpoint in str(err.value)
    assert isinstance(err.value, ModelLoadError)


HOLD_WORKER = """
import socket, struct, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(struct.pack("<BQ", 14, 24) + bytes(24))
assert s.recv(64)
print("connected", flush=True)
time.sleep(120)
"""


def test_a_worker_busy_with_another_client_is_refused_not_waited_for(model_path, tmp_path):
    w = start_worker("127.0.0.2", tmp_path)
    # Another process's connection, handshake done: the worker serves it alone.
    other = subprocess.Popen([sys.executable, "-c", HOLD_WORKER, w.host, str(w.port)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "connected"
        with pytest.raises(WorkerUnreachableError) as err:
            kolosal.Engine(model_path, rpc_servers=[w.endpoint], rpc_timeout=1.0)
        assert w.endpoint in str(err.value) and "another client" in str(err.value)
    finally:
        other.kill()
        other.wait()
        other.stdout.close()
        w.stop()


def test_something_that_is_not_a_worker_is_refused(model_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.3", 0))
        listener.listen(1)
        endpoint = "127.0.0.3:%d" % listener.getsockname()[1]
        with pytest.raises(WorkerUnreachableError) as err:
            kolosal.Engine(model_path, rpc_servers=[endpoint], rpc_timeout=1.0)
    assert endpoint in str(err.value) and "RPC handshake" in str(err.value)


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[List[Worker]]:
    tmp = tmp_path_factory.mktemp("rpc-workers")
    started: List[Worker] = []
    try:
        started.append(start_worker("127.0.0.2", tmp))
        started.append(start_worker("127.0.0.3", tmp, "--mem", "4096"))  # offers 4 GiB whatever the machine has
        yield started
    finally:
        for w in started:
            w.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def sharded(model_path, workers):
    e = kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, seed=42, n_threads=1,
                       rpc_servers=[w.endpoint for w in workers])
    yield e
    e.close()


def test_the_engine_lists_its_devices(sharded, workers):
    devices = sharded.devices()
    assert devices[0]["kind"] == "cpu"
    assert [(d["kind"], d["endpoint"]) for d in devices[1:]] == [("rpc", w.endpoint) for w in workers]
    assert devices[2]["memory_total_bytes"] == devices[2]["memory_free_bytes"] == 4096 << 20
    assert sharded.failure is None


def test_greedy_output_on_the_workers_is_identical_to_the_local_engine(engine, sharded):
    local = engine.complete(PROMPT, max_tokens=24, temperature=0)
    remote = sharded.complete(PROMPT, max_tokens=24, temperature=0)
    assert local.tokens and remote.tokens == local.tokens
    assert remote.text == local.text


def test_a_second_engine_on_the_same_workers_loads_and_closes(model_path, sharded, workers):
    # Both share one connection per worker; closing one frees its buffers there, not the connection.
    other = kolosal.Engine(model_path, n_ctx=512, n_parallel=1, n_threads=1, model_id="other",
                           rpc_servers=[w.endpoint for w in workers])
    first = other.complete(PROMPT, max_tokens=8, temperature=0).tokens
    other.close()
    assert sharded.complete(PROMPT, max_tokens=8, temperature=0).tokens == first


def test_a_lost_worker_fails_the_engine_alone(engine, sharded, workers, tmp_path):
    """Runs last in this module: it kills a worker."""
    gen = sharded.generate("Count from one to one hundred:", max_tokens=400, temperature=0, ignore_eos=True)
    assert gen.next_chunk(60) is not None
    workers[0].proc.send_signal(signal.SIGKILL)
    with pytest.raises(WorkerUnreachableError) as err:
        while gen.next_chunk(60) is not None:
            pass
        raise gen.exception()
    assert gen.finish_reason == "error"
    assert workers[0].endpoint in str(err.value)
    assert sharded.failure and "worker_unreachable" in sharded.failure
    with pytest.raises(WorkerUnreachableError):
        sharded.generate(PROMPT, max_tokens=4)
    sharded.close()  # returns: the engine's thread stays parked, not joined
    assert sharded.closed

    # Other engines keep working.
    assert engine.complete(PROMPT, max_tokens=4, temperature=0).tokens

    # The dead connection is ggml's for good: a worker back on the same
    # address is refused until the process restarts.
    back = start_worker(workers[0].host, tmp_path, port=workers[0].port)
    try:
        with pytest.raises(WorkerUnreachableError) as err:
            kolosal.Engine(sharded.model_path, n_ctx=512, rpc_servers=[back.endpoint])
        assert "restart" in str(err.value)
    finally:
        back.stop()


def test_a_worker_stopped_while_idle_fails_its_engine_at_once(model_path, tmp_path):
    # llama.cpp would notice only when it next sends there, and a close (freeing
    # buffers there) or a load through that connection would then wait for good.
    w = start_worker("127.0.0.3", tmp_path)
    e = kolosal.Engine(model_path, n_ctx=512, n_parallel=1, n_threads=1, rpc_servers=[w.endpoint])
    try:
        assert e.complete(PROMPT, max_tokens=2, temperature=0).tokens
        w.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "CLOSE_WAIT" not in connection_states([w.endpoint])[w.endpoint] and time.monotonic() < deadline:
            time.sleep(0.05)
        e.check_workers()
        assert e.failure and w.endpoint in e.failure
        with pytest.raises(WorkerUnreachableError):
            e.generate(PROMPT, max_tokens=2)
    finally:
        e.close()
    assert e.closed
    with pytest.raises(WorkerUnreachableError) as err:
        kolosal.Engine(model_path, n_ctx=512, rpc_servers=[w.endpoint], rpc_timeout=1.0)
    assert w.endpoint in str(err.value)

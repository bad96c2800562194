"""EngineRegistry: lazy loading, the memory budget and its eviction order,
integrity checks and hot reload, with the real SmolLM2 file under several ids."""
from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from kolosal.server.errors import ApiError
from kolosal.server.models.memory_policy import MemoryPolicy
from kolosal.server.models.registry import FAILED, LOADED, REGISTERED, EngineRegistry

PARAMS = {"n_ctx": 512, "n_parallel": 1, "n_threads": 1}


@pytest.fixture(scope="module")
def footprint(model_path):
    """Measured bytes of one loaded copy (weights + KV)."""
    reg = EngineRegistry()
    reg.add("probe", str(model_path), PARAMS)
    reg.engine("probe")
    size = reg.record("probe").measured_bytes
    reg.close_all()
    return size


def registry_for(model_path, n_fit, footprint, ids=("a", "b", "c"), **kw):
    """A registry whose budget holds ``n_fit`` copies of the model."""
    reg = EngineRegistry(MemoryPolicy(budget_bytes=int(footprint * (n_fit + 0.5))))
    for i in ids:
        reg.add(i, str(model_path), PARAMS, **kw.get(i, {}))
    return reg


def states(reg):
    return {r.engine_id: r.state for r in reg.records()}


def test_lazy_load_on_first_use(model_path):
    reg = EngineRegistry()
    rec = reg.add("m", str(model_path), PARAMS)
    assert rec.state == REGISTERED and rec.engine is None
    engine = reg.engine("m")
    assert rec.state == LOADED and engine.complete("Hi", max_tokens=2, ignore_eos=True).usage["completion_tokens"] == 2
    reg.close_all()


def test_estimate_is_close_to_measured(model_path, footprint):
    reg = EngineRegistry()
    rec = reg.add("m", str(model_path), PARAMS)
    reg.engine("m")
    assert rec.measured_bytes == footprint
    assert abs(rec.estimate_bytes - rec.measured_bytes) <= 0.03 * rec.measured_bytes
    d = rec.describe()
    assert d["memory"] == {"estimated_bytes": rec.estimate_bytes, "measured_bytes": rec.measured_bytes,
                           "prompt_cache_bytes": 0}
    reg.close_all()


def test_least_recently_used_is_evicted(model_path, footprint):
    reg = registry_for(model_path, 2, footprint)
    reg.engine("a")
    reg.engine("b")
    reg.engine("a")  # a is now more recent than b
    reg.engine("c")
    assert states(reg) == {"a": LOADED, "b": REGISTERED, "c": LOADED}
    assert reg.counters.evictions == 1
    reg.close_all()


def test_low_priority_goes_before_high(model_path, footprint):
    reg = registry_for(model_path, 2, footprint, a={"priority": "high"}, b={"priority": "low"})
    reg.engine("b")
    reg.engine("a")
    reg.engine("b")  # b (low) is the most recent, and still goes first
    reg.engine("c")
    assert states(reg) == {"a": LOADED, "b": REGISTERED, "c": LOADED}
    reg.close_all()


def test_busy_model_is_never_evicted(model_path, footprint):
    reg = registry_for(model_path, 2, footprint)
    long_run = reg.engine("a").generate("Tell a long story.", max_tokens=400, ignore_eos=True)
    next(iter(long_run))
    reg.engine("b")  # b is more recent, but a is busy
    reg.engine("c")
    assert states(reg) == {"a": LOADED, "b": REGISTERED, "c": LOADED}
    long_run.wait()
    assert long_run.finish_reason == "length"  # the stream survived the load
    reg.close_all()


def test_nothing_to_free_gives_503_naming_what_is_loaded(model_path, footprint):
    reg = registry_for(model_path, 2, footprint, b={"pinned": True})
    running = reg.engine("a").generate("Tell a long story.", max_tokens=400, ignore_eos=True)
    next(iter(running))
    reg.engine("b")
    with pytest.raises(ApiError) as e:
        reg.engine("c")
    assert e.value.status == 503 and e.value.code == "insufficient_memory"
    assert "a (" in e.value.message and "busy" in e.value.message and "pinned" in e.value.message
    assert reg.record("c").state == FAILED and reg.record("c").error_code == "insufficient_memory"
    running.cancel()
    running.wait()
    # The others keep serving.
    assert reg.engine("b").complete("Hi", max_tokens=2, ignore_eos=True).finish_reason == "length"
    reg.close_all()


def test_hold_keeps_a_model_from_eviction(model_path, footprint):
    reg = registry_for(model_path, 2, footprint)
    reg.engine("a", hold=True)  # admitted, generation not submitted yet
    reg.engine("b")
    reg.engine("c")
    assert states(reg)["a"] == LOADED and states(reg)["b"] == REGISTERED
    reg.release("a")
    reg.close_all()


def test_concurrent_first_requests_load_once(model_path):
    reg = EngineRegistry()
    reg.add("m", str(model_path), PARAMS)
    engines = []
    threads = [threading.Thread(target=lambda: engines.append(reg.engine("m"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.counters.loads == 1
    assert len({id(e) for e in engines}) == 1
    reg.close_all()


def test_idle_model_is_unloaded(model_path):
    reg = EngineRegistry(MemoryPolicy(keep_alive_seconds=0.3))
    reg.add("idle", str(model_path), PARAMS)
    reg.add("pinned", str(model_path), PARAMS, pinned=True)
    reg.engine("idle")
    reg.engine("pinned")
    deadline = time.monotonic() + 10
    while reg.record("idle").state != REGISTERED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reg.record("idle").state == REGISTERED
    assert reg.record("pinned").state == LOADED
    assert reg.counters.idle_unloads >= 1
    reg.engine("idle")  # loads again on the next request
    assert reg.record("idle").state == LOADED
    reg.close_all()


def test_unload_if_idle_with_keep_alive_zero(model_path):
    """A model whose own keep-alive is 0 goes at once (Ollama's ``keep_alive: 0``), counted as an idle
    unload, unless it is pinned or a request holds it; without a keep-alive it stays."""
    reg = EngineRegistry()
    reg.add("m", str(model_path), PARAMS)
    reg.add("pinned", str(model_path), PARAMS, pinned=True)
    reg.engine("pinned")
    reg.engine("m", hold=True)
    rec, pinned = reg.record("m"), reg.record("pinned")
    assert not reg.unload_if_idle(rec, None)  # no keep-alive of its own, none given
    rec.keep_alive = pinned.keep_alive = 0.0
    assert not reg.unload_if_idle(rec, None) and rec.state == LOADED  # held by a request
    reg.release("m")
    assert not reg.unload_if_idle(pinned, None) and pinned.state == LOADED
    assert reg.unload_if_idle(rec, None) and rec.state == REGISTERED
    assert reg.counters.idle_unloads == 1
    assert not reg.unload_if_idle(rec, None)  # already gone
    reg.close_all()


def test_sha256_checked_before_loading(model_path, tmp_path):
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    reg = EngineRegistry()
    reg.add("good", str(model_path), PARAMS, sha256=digest.upper())
    reg.add("bad", str(model_path), PARAMS, sha256="0" * 64)
    with pytest.raises(ApiError) as e:
        reg.engine("bad")
    assert e.value.code == "sha256_mismatch" and digest in e.value.message
    assert reg.record("bad").state == FAILED and reg.record("bad").describe()["error_code"] == "sha256_mismatch"
    assert reg.engine("good").complete("Hi", max_tokens=1).usage["completion_tokens"] == 1
    reg.close_all()


def test_each_broken_file_has_its_own_error(model_path, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model_path.read_bytes()[: 10 << 20])
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    reg = EngineRegistry()
    cases = {"truncated": (truncated, "invalid_model_file", "truncated"),
             "text": (text, "invalid_model_file", "not a GGUF"),
             "missing": (tmp_path / "gone.gguf", "model_file_missing", "not found")}
    for name, (path, _, _) in cases.items():
        reg.add(name, str(path), PARAMS)
    reg.add("ok", str(model_path), PARAMS)
    for name, (_, code, words) in cases.items():
        with pytest.raises(ApiError) as e:
            reg.engine(name)
        assert e.value.status == 503 and e.value.code == code and words in e.value.message
        assert reg.record(name).describe()["error_code"] == code
    assert reg.engine("ok").complete("Hi", max_tokens=1).usage["completion_tokens"] == 1
    reg.close_all()


def test_hot_reload_keeps_running_requests(model_path):
    reg = EngineRegistry()
    reg.add("m", str(model_path), PARAMS)
    old = reg.engine("m")
    running = old.generate("Tell a long story.", max_tokens=150, ignore_eos=True)
    next(iter(running))
    reg.replace("m", str(model_path), {**PARAMS, "n_ctx": 1024})
    new = reg.engine("m")
    assert new is not old and new.n_ctx == 1024
    assert new.complete("Hi", max_tokens=2, ignore_eos=True).finish_reason == "length"
    running.wait()
    assert running.finish_reason == "length" and running.usage["completion_tokens"] == 150
    deadline = time.monotonic() + 10
    while not old.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old.closed
    reg.close_all()


def test_swap_threshold_refuses_a_load_that_would_pass_it(model_path):
    reg = EngineRegistry(MemoryPolicy(swap_threshold=0.0001))
    reg.add("m", str(model_path), PARAMS)
    with pytest.raises(ApiError) as e:
        reg.engine("m")
    assert e.value.code == "insufficient_memory" and "system memory" in e.value.message
    reg.close_all()


def test_waiting_for_a_load_is_bounded(model_path):
    reg = EngineRegistry(MemoryPolicy(load_wait_seconds=0.2))
    rec = reg.add("m", str(model_path), PARAMS)
    with rec.lock:  # as if another request were loading it
        t0 = time.monotonic()
        with pytest.raises(ApiError) as e:
            reg.engine("m")
        assert time.monotonic() - t0 < 5
    assert e.value.status == 503 and e.value.code == "model_load_timeout"
    assert reg.engine("m") is not None  # once the other load is done, it serves
    reg.close_all()


def test_changed_file_is_reloaded(model_path, tmp_path):
    copy = tmp_path / "model.gguf"
    copy.write_bytes(model_path.read_bytes())
    reg = EngineRegistry(MemoryPolicy(watch_files=True, poll_seconds=0.05))
    reg.add("m", str(copy), PARAMS)
    old = reg.engine("m")
    running = old.generate("Tell a long story.", max_tokens=100, ignore_eos=True)
    next(iter(running))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version of the file
    deadline = time.monotonic() + 30
    while reg.record("m").engine is old and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reg.record("m").engine is not old and reg.counters.loads == 2
    running.wait()
    assert running.finish_reason == "length"  # finished on the old model
    reg.close_all()

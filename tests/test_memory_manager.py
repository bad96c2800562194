"""MemoryManager: per-model bytes, process and system memory, estimates."""
from __future__ import annotations

import kolosal


def test_loaded_engine_is_registered_and_removed_on_close(model_path):
    mm = kolosal.MemoryManager()
    before = {m.model_id for m in mm.models()}
    e = kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, model_id="mm-probe")
    try:
        (entry,) = [m for m in mm.models() if m.model_id == "mm-probe"]
        assert entry.weights_bytes == e.metadata["size_bytes"]
        assert entry.kv_bytes == e.metadata["kv_bytes"] > 0
        assert entry.total_bytes == entry.weights_bytes + entry.kv_bytes
        assert mm.models_bytes() >= entry.total_bytes
    finally:
        e.close()
    assert {m.model_id for m in mm.models()} == before


def test_kv_bytes_grow_with_context(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=1) as small, \
            kolosal.Engine(model_path, n_ctx=4096, n_parallel=1) as big:
        assert big.metadata["kv_bytes"] == 4 * small.metadata["kv_bytes"]


def test_system_and_process_memory():
    s = kolosal.MemoryManager.system()
    assert s["total_bytes"] > s["available_bytes"] > 0
    assert s["used_bytes"] == s["total_bytes"] - s["available_bytes"]
    p = kolosal.MemoryManager.process()
    assert 0 < p["rss_bytes"] <= p["peak_rss_bytes"] < s["total_bytes"]


def test_estimate_matches_what_loading_reports(model_path):
    est = kolosal.MemoryManager.estimate(str(model_path), 2048)
    assert est["architecture"] == "llama"
    assert est["file_bytes"] == model_path.stat().st_size
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=1) as e:
        assert est["kv_bytes"] == e.metadata["kv_bytes"]
        assert abs(est["weights_bytes"] - e.metadata["size_bytes"]) <= 0.02 * e.metadata["size_bytes"]

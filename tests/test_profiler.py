"""Profiler: named timers, and the engine's own phases."""
from __future__ import annotations

import time

import pytest

import kolosal
from kolosal.errors import InvalidParameterError


def test_start_stop_records_elapsed_time():
    p = kolosal.Profiler()
    p.start("work")
    time.sleep(0.02)
    ms = p.stop("work")
    assert ms >= 15
    s = p.stats()["work"]
    assert s.count == 1 and s.total_ms == pytest.approx(ms)


def test_count_total_min_max_mean():
    p = kolosal.Profiler()
    for v in (1.0, 5.0, 3.0):
        p.record("x", v)
    s = p.stats()["x"]
    assert (s.count, s.total_ms, s.min_ms, s.max_ms, s.mean_ms) == (3, 9.0, 1.0, 5.0, 3.0)
    p.reset()
    assert p.stats() == {}


def test_stop_without_start_is_an_error():
    with pytest.raises(InvalidParameterError):
        kolosal.Profiler().stop("never-started")


def test_engine_feeds_its_phases(fresh_engine):
    fresh_engine.profiler.reset()
    fresh_engine.complete("Hello there", max_tokens=5, ignore_eos=True)
    stats = fresh_engine.profiler.stats()
    assert {"tokenize", "prefill", "decode", "sample"} <= set(stats)
    assert stats["sample"].count == 5
    assert stats["prefill"].count >= 1

"""Transparent huge pages for the engine's large CPU buffers, and how
``use_mmap`` None decides between reading the weights into them and mapping
the file."""
from __future__ import annotations

import sys

import pytest

import kolosal
from kolosal import _native
from kolosal.errors import InvalidParameterError

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not _native.huge_pages_available(),
    reason="transparent huge pages exist only on Linux, and this kernel has them set to 'never' or lacks them")

MIB = 1 << 20


def anon_huge_bytes() -> int:
    """Bytes of this process's anonymous memory in transparent huge pages."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no AnonHugePages in /proc/self/smaps_rollup")


def load(model_path, **kw) -> tuple:
    """(metadata, growth of AnonHugePages) of an engine loaded with ``kw`` and one short answer."""
    before = anon_huge_bytes()
    e = kolosal.Engine(model_path, n_ctx=4096, n_parallel=2, n_threads=2, **kw)
    try:
        assert e.generate("Hello", max_tokens=3, temperature=0).text is not None
        return e.metadata, anon_huge_bytes() - before
    finally:
        e.close()


def test_cpu_model_is_read_into_huge_pages_by_default(model_path):
    meta, grown = load(model_path)
    assert meta["use_mmap"] is False and meta["huge_pages"] is True
    # The weights (92 MiB) and the KV cache (90 MiB) of this model: the kernel may
    # refuse a few huge pages when memory is fragmented, not most of them.
    assert grown >= 96 * MIB, grown


def test_mapped_weights_keep_huge_pages_for_the_cache(model_path):
    meta, grown = load(model_path, use_mmap=True)
    assert meta["use_mmap"] is True and meta["huge_pages"] is True
    assert grown >= 48 * MIB, grown  # the KV cache and compute buffers


def test_huge_pages_off_maps_the_file_and_advises_nothing(model_path):
    meta, grown = load(model_path, huge_pages=False)
    assert meta["use_mmap"] is True and meta["huge_pages"] is False
    assert grown < 8 * MIB, grown


def test_read_into_memory_without_huge_pages_when_asked(model_path):
    meta, _ = load(model_path, use_mmap=False, huge_pages=False)
    assert meta["use_mmap"] is False and meta["huge_pages"] is False


def test_model_larger_than_half_the_free_memory_is_mapped(model_path, monkeypatch):
    import psutil

    class Scarce:
        available = 100 * MIB  # the 98 MB file is more than half of it

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Scarce())
    meta, _ = load(model_path)
    assert meta["use_mmap"] is True and meta["huge_pages"] is True


@pytest.mark.parametrize("kw, param", [({"use_mmap": "yes"}, "use_mmap"), ({"huge_pages": 1}, "huge_pages"),
                                       ({"use_mlock": None}, "use_mlock")])
def test_flags_must_be_booleans(model_path, kw, param):
    with pytest.raises(InvalidParameterError) as e:
        kolosal.Engine(model_path, n_ctx=1024, n_parallel=1, **kw)
    assert e.value.param == param

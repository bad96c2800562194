"""Shared fixtures: the real demo model and engines loaded from it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import kolosal
from kolosal import demo_model

# Layers the shared engines put on the GPU (scripts/gpu-check.sh sets -1: all);
# 0, the default, keeps them on the CPU.
GPU_LAYERS = int(os.environ.get("KOLOSAL_TEST_GPU_LAYERS", "0"))


@pytest.fixture(scope="session")
def gpu_layers() -> int:
    """``n_gpu_layers`` for engines a test module makes itself (KOLOSAL_TEST_GPU_LAYERS)."""
    return GPU_LAYERS


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The SmolLM2 GGUF (fetched into the cache on first use)."""
    env = os.environ.get("KOLOSAL_TEST_MODEL")
    return Path(env) if env else demo_model.ensure(quiet=True)


@pytest.fixture(scope="session")
def engine(model_path):
    """One engine shared by the read-mostly tests: 4 slots of 1024 tokens."""
    with kolosal.Engine(model_path, n_ctx=4096, n_parallel=4, seed=42, model_id="smollm2",
                        n_gpu_layers=GPU_LAYERS) as e:
        yield e


@pytest.fixture
def fresh_engine(model_path):
    """A private engine for tests that change or close it."""
    e = kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=7, n_gpu_layers=GPU_LAYERS)
    yield e
    e.close()

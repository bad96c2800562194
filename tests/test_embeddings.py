"""Engine.embed: pooled sentence embeddings as numpy arrays."""
from __future__ import annotations

import numpy as np
import pytest

from kolosal.errors import ContextOverflowError, InvalidParameterError


def test_shape_dtype_and_unit_norm(engine):
    v = engine.embed(["The cat sat on the mat.", "Stock markets fell sharply.", "A kitten rested on a rug."])
    assert v.shape == (3, engine.metadata["n_embd"])
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_single_text_gives_a_vector(engine):
    v = engine.embed("hello")
    assert v.shape == (engine.metadata["n_embd"],)


def test_similar_texts_are_closer(engine):
    cat, market, kitten = engine.embed(["The cat sat on the mat.", "Stock markets fell sharply.",
                                        "A kitten rested on the mat."])
    assert cat @ kitten > cat @ market


def test_deterministic_and_order_independent(engine):
    a = engine.embed(["alpha", "beta"])
    b = engine.embed(["beta", "alpha"])
    np.testing.assert_allclose(a[0], b[1], atol=1e-5)
    np.testing.assert_allclose(a[1], b[0], atol=1e-5)


def test_unnormalised(engine):
    raw = engine.embed("hello world", normalize=False)
    unit = engine.embed("hello world")
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, rtol=1e-4, atol=1e-6)


def test_bad_inputs(engine):
    for bad in ([], [1, 2], None):
        with pytest.raises(InvalidParameterError) as e:
            engine.embed(bad)
        assert e.value.param == "input"


def test_input_longer_than_context(fresh_engine):
    with pytest.raises(ContextOverflowError):
        fresh_engine.embed("word " * 20000)

"""Package surface: version, build information, log level."""
from __future__ import annotations

from importlib.metadata import version

import pytest

import kolosal


def test_version_matches_the_distribution():
    assert kolosal.__version__ == version("kolosal")


def test_build_info():
    info = kolosal.build_info()
    assert info["llama_cpp_commit"] == "0c1e57098"
    assert "CPU" in info["backends"]
    assert info["devices"] and all("name" in d for d in info["devices"])
    assert isinstance(info["cpu_features"], list)
    assert info["version"] == kolosal.__version__


def test_public_names():
    for name in kolosal.__all__:
        assert hasattr(kolosal, name)


def test_set_log_level():
    kolosal.set_log_level("error")
    kolosal.set_log_level("warn")
    with pytest.raises(kolosal.errors.InvalidParameterError):
        kolosal.set_log_level("chatty")

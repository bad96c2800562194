"""Package surface: version, build information, log level."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

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


@pytest.mark.skipif(sys.platform == "win32", reason="a DLL exports only what it declares; the check is for ELF and Mach-O")
def test_module_keeps_llama_cpp_symbols_inside():
    """llama.cpp and ggml are linked into the module with hidden symbols: another copy of llama.cpp in the
    same process (llama-cpp-python, another extension) can neither take over nor be taken over by them."""
    import ctypes

    from kolosal import _native
    lib = ctypes.CDLL(_native.__file__)
    assert hasattr(lib, "PyInit__native")  # the module's entry point stays visible
    for name in ("llama_decode", "llama_model_load_from_file", "ggml_graph_compute", "ggml_init"):
        assert not hasattr(lib, name), f"{name} is exported"


def test_imports_from_the_source_tree_root():
    # Commands run from the repository root (python -m kolosal.server, examples)
    # import the package found there; it must be complete.
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", "import kolosal; print(kolosal.__version__)"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kolosal.__version__


def test_missing_native_module_says_what_to_do(tmp_path):
    # A copy of the Python sources without the built module, as a source tree
    # shadowing an installed kolosal looks.
    pkg = tmp_path / "kolosal"
    shutil.copytree(Path(kolosal.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("_native*.so", "_native*.pyd", "__pycache__"))
    code = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'ScikitBuild' not in type(f).__name__]; import kolosal"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ImportError" in out.stderr
    assert "kolosal._native" in out.stderr and "pip install --no-build-isolation -e ." in out.stderr

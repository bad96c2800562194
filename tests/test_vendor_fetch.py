"""vendor/fetch_llama_cpp.py: hash check and what gets unpacked."""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "vendor" / "fetch_llama_cpp.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_llama_cpp", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_sdist(path: Path, files: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_wrong_hash_is_a_clear_error(tmp_path):
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    make_sdist(fake, {"llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": b"x"})
    env = dict(os.environ, KOLOSAL_LLAMA_SDIST=str(fake))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dest", str(tmp_path / "llama.cpp")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "sha256 mismatch" in proc.stderr
    assert not (tmp_path / "llama.cpp").exists()


def test_only_vendor_llama_cpp_is_unpacked(tmp_path):
    mod = load_script()
    sdist = tmp_path / "s.tar.gz"
    make_sdist(sdist, {
        "llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": b"cmake",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/src/llama.cpp": b"src",
        "llama_cpp_python-0.3.36/llama_cpp/__init__.py": b"python",
    })
    dest = tmp_path / "llama.cpp"
    mod.unpack(sdist, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["CMakeLists.txt", "KOLOSAL_LLAMA_CPP_COMMIT", "src/llama.cpp"]
    assert (dest / "KOLOSAL_LLAMA_CPP_COMMIT").read_text().strip() == "0c1e57098"


def test_path_traversal_in_archive_is_refused(tmp_path):
    mod = load_script()
    sdist = tmp_path / "evil.tar.gz"
    make_sdist(sdist, {"llama_cpp_python-0.3.36/vendor/llama.cpp/../../escape.txt": b"x"})
    with pytest.raises(SystemExit):
        mod.unpack(sdist, tmp_path / "llama.cpp")
    assert not (tmp_path / "escape.txt").exists()

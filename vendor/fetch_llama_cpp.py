#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source tree into vendor/llama.cpp.

llama.cpp is taken from the llama-cpp-python sdist (its vendor/llama.cpp is
llama.cpp at commit 0c1e57098).  The archive is downloaded with pip, its
SHA-256 is checked, and only its vendor/llama.cpp folder is unpacked.

Exit status is non-zero, with a message on stderr, when the download fails or
the hash does not match; CMake turns that into a build error.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NoReturn

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098"
HERE = Path(__file__).resolve().parent


def fail(msg: str) -> NoReturn:
    print(f"fetch_llama_cpp: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command() -> list[str]:
    """A pip to run: this interpreter's, else one on PATH (inside an isolated
    build environment the running interpreter may not have pip)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("python3", "python"):
        exe = shutil.which(name)
        if exe and subprocess.run([exe, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [exe, "-m", "pip"]
    fail("pip is not available to download the llama.cpp sources")


def download(dest: Path) -> Path:
    cached = os.environ.get("KOLOSAL_LLAMA_SDIST")
    if cached:
        return Path(cached)
    cmd = pip_command() + [
        "download", "--no-deps", "--no-binary", ":all:",
        # Only the archive is wanted; isolation would build its build tools from source.
        "--no-build-isolation",
        f"{PACKAGE}=={VERSION}", "-d", str(dest),
    ]
    print("fetch_llama_cpp: " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        fail(f"downloading {PACKAGE}=={VERSION} failed (pip exit {result.returncode})")
    archives = list(dest.glob("*.tar.gz"))
    if len(archives) != 1:
        fail(f"expected one sdist archive from pip, found {[a.name for a in archives]}")
    return archives[0]


def unpack(archive: Path, target: Path) -> None:
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    staging = target.parent / (target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(prefix) or m.name == prefix:
                continue
            rel = m.name[len(prefix):]
            if rel.startswith("/") or ".." in Path(rel).parts:
                fail(f"unsafe path in archive: {m.name}")
            m.name = rel
            members.append(m)
        if not members:
            fail(f"{archive.name} holds no vendor/llama.cpp folder")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and security backports)
            tar.extractall(staging, members=members, filter="data")
        else:
            tar.extractall(staging, members=members)
    (staging / "KOLOSAL_LLAMA_CPP_COMMIT").write_text(LLAMA_CPP_COMMIT + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=HERE / "llama.cpp")
    parser.add_argument("--force", action="store_true", help="fetch even if present")
    args = parser.parse_args()
    target: Path = args.dest.resolve()
    if (target / "CMakeLists.txt").is_file() and not args.force:
        print(f"fetch_llama_cpp: {target} already present")
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(Path(tmp))
        digest = sha256_of(archive)
        if digest != SHA256:
            fail(f"sha256 mismatch for {archive.name}: got {digest}, expected {SHA256}")
        unpack(archive, target)
    print(f"fetch_llama_cpp: llama.cpp {LLAMA_CPP_COMMIT} unpacked into {target}")


if __name__ == "__main__":
    main()

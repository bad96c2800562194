"""The examples run as documented, and the example configs validate."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(args, model_path, timeout=300):
    env = dict(os.environ, KOLOSAL_MODEL_PATH=str(model_path),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_runs(model_path):
    proc = run([str(EXAMPLES / "quickstart.py"), str(model_path)], model_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "complete: ' Paris." in out
    assert out.count("batched:") == 4
    assert "'name': 'get_weather'" in out
    assert "embeddings: (3, 576)" in out


@pytest.mark.parametrize("config", ["production.json", "production.yaml"])
def test_example_configs_validate(config, model_path):
    proc = run(["-m", "kolosal.server", "--config", str(EXAMPLES / config), "--check-config"], model_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smollm2-135m-instruct" in proc.stdout

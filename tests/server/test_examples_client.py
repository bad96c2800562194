"""examples/openai_client.py against a live server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_client.py"


def test_openai_client_example(live_server):
    proc = subprocess.run([sys.executable, str(EXAMPLE), live_server.v1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 embeddings of 576 numbers" in proc.stdout

"""Every load and request failure surfaces as its own exception type, and
never takes the process down."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

import kolosal
from kolosal import errors


def gguf_with_architecture(path, arch: str) -> None:
    """A minimal GGUF v3 file: no tensors, one key general.architecture."""
    def gguf_str(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    body = b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 0) + struct.pack("<Q", 1)
    body += gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str(arch)
    path.write_bytes(body)


def test_missing_file(tmp_path):
    with pytest.raises(errors.ModelNotFoundError) as e:
        kolosal.Engine(tmp_path / "nope.gguf")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, errors.ModelLoadError)
    assert "nope.gguf" in str(e.value)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(errors.InvalidModelError):
        kolosal.Engine(tmp_path)


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_text("this is not a model\n" * 10)
    with pytest.raises(errors.InvalidModelError) as e:
        kolosal.Engine(f)
    assert "not a GGUF" in str(e.value)


def test_corrupt_header(tmp_path):
    f = tmp_path / "bad.gguf"
    f.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(errors.InvalidModelError):
        kolosal.Engine(f)


def test_truncated_file(tmp_path, model_path):
    f = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as src:
        f.write_bytes(src.read(20 * 1024 * 1024))
    with pytest.raises(errors.InvalidModelError) as e:
        kolosal.Engine(f)
    assert "truncated" in str(e.value)


def test_unsupported_architecture(tmp_path):
    f = tmp_path / "alien.gguf"
    gguf_with_architecture(f, "alien-transformer")
    with pytest.raises(errors.UnsupportedArchitectureError) as e:
        kolosal.Engine(f)
    assert "alien-transformer" in str(e.value)


PERMISSION_CHILD = textwrap.dedent(
    """
    import ctypes, sys
    if len(sys.argv) > 2:  # running as root: give up the capabilities that bypass file modes
        libc = ctypes.CDLL(None, use_errno=True)
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
        hdr, data = Header(0x20080522, 0), (Data * 2)()
        if libc.capget(ctypes.byref(hdr), data) != 0:
            sys.exit(3)
        CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
        mask = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
        data[0].effective &= mask
        data[0].permitted &= mask
        if libc.capset(ctypes.byref(hdr), data) != 0:
            sys.exit(3)
    import kolosal
    try:
        kolosal.Engine(sys.argv[1])
    except kolosal.errors.ModelPermissionError:
        sys.exit(0)
    except BaseException as e:
        print(type(e).__name__, e)
        sys.exit(1)
    sys.exit(2)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="file modes do not deny reads on Windows")
def test_permission_denied(tmp_path, model_path):
    f = tmp_path / "locked.gguf"
    shutil.copyfile(model_path, f)
    f.chmod(0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    args = [sys.executable, "-c", PERMISSION_CHILD, str(f)] + (["drop-caps"] if os.geteuid() == 0 else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 3, "could not drop the root capabilities for this test"
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_context_too_large_for_memory(model_path):
    with pytest.raises(errors.OutOfMemoryError) as e:
        kolosal.Engine(model_path, n_ctx=2_000_000_000, n_parallel=1)
    assert isinstance(e.value, MemoryError)


def test_prompt_longer_than_slot_context(fresh_engine):
    long_prompt = "hello " * (fresh_engine.n_ctx_slot + 10)
    with pytest.raises(errors.ContextOverflowError) as e:
        fresh_engine.generate(long_prompt)
    assert str(fresh_engine.n_ctx_slot) in str(e.value)


def test_invalid_parameter_is_a_value_error(engine):
    with pytest.raises(ValueError):
        engine.generate("hi", temperature=-5)


def test_engine_survives_every_failure_above(engine):
    assert engine.complete("Still alive?", max_tokens=3, ignore_eos=True).usage["completion_tokens"] == 3

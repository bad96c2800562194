"""Ollama's model listings (``/api/tags``, ``/api/ps``, ``/api/show`` details)
from the registry's records, and its times (RFC 3339, UTC)."""
from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from ..models.registry import LOADED, EngineRecord
from ..protocol.ollama.api import ListedModel, ModelDetails, RunningModel


def timestamp(t: Optional[float] = None) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).isoformat().replace("+00:00", "Z")


# -- the model listings ------------------------------------------------------------


def _digest(rec: EngineRecord) -> str:
    """The configured SHA-256 of the file, else a hash of its path, size and time (hashing a large file per
    listing would be slow)."""
    if rec.sha256:
        return rec.sha256.lower()
    try:
        st = os.stat(rec.model_path)
        ident = f"{rec.model_path}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        ident = rec.model_path
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()


def _size(rec: EngineRecord) -> int:
    try:
        return os.path.getsize(rec.model_path)
    except OSError:
        return 0


def _modified(rec: EngineRecord) -> str:
    try:
        return timestamp(os.path.getmtime(rec.model_path))
    except OSError:
        return timestamp(rec.created)


def _params(n: Any) -> str:
    if not n:
        return ""
    n = float(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0" + unit, unit)
    return str(int(n))


def details(rec: EngineRecord) -> ModelDetails:
    """What the loaded model's header says (family, size, quantisation); blanks while it is not loaded."""
    meta: Dict[str, Any] = {}
    eng = rec.engine
    if eng is not None and rec.state == LOADED:
        try:
            meta = eng.metadata
        except Exception:
            meta = {}
    family = str(meta.get("architecture") or "")
    desc = str(meta.get("description") or "").split()
    quant = desc[-1] if desc and desc[-1][:1] in ("Q", "F", "I", "B") else ""
    return ModelDetails(family=family, families=[family] if family else [],
                        parameter_size=_params(meta.get("n_params")), quantization_level=quant)


def listed(rec: EngineRecord) -> ListedModel:
    return ListedModel(name=rec.engine_id, model=rec.engine_id, modified_at=_modified(rec), size=_size(rec),
                       digest=_digest(rec), details=details(rec))


def running(rec: EngineRecord, keep_alive: Optional[float]) -> RunningModel:
    """A loaded model; ``expires_at`` is when the idle policy may unload it (far ahead when never)."""
    last = rec.last_used or time.time()
    keep = rec.keep_alive if rec.keep_alive is not None else keep_alive
    expires = last + keep if keep is not None and keep >= 0 else time.time() + 10 * 365 * 86400
    meta = rec.engine.metadata if rec.engine is not None else {}
    size = rec.memory_bytes() or _size(rec)
    vram = size if int(meta.get("n_gpu_layers") or 0) > 0 else 0
    return RunningModel(name=rec.engine_id, model=rec.engine_id, size=size, digest=_digest(rec), details=details(rec),
                        expires_at=timestamp(expires), size_vram=vram, context_length=int(meta.get("n_ctx_slot") or 0))

"""EngineRegistry: owns the loaded engines, keyed by engine id (= model id)."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .. import errors as kerr
from ..engine import Engine
from .errors import ApiError

log = logging.getLogger("kolosal.server.registry")

UNLOADED, LOADING, LOADED, FAILED = "unloaded", "loading", "loaded", "error"


@dataclass
class EngineRecord:
    engine_id: str
    model_path: str
    params: Dict[str, Any]
    priority: Any = None
    state: str = UNLOADED
    error: Optional[str] = None
    engine: Optional[Engine] = None
    created: int = field(default_factory=lambda: int(time.time()))
    loaded_at: Optional[float] = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self, detail: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {"engine_id": self.engine_id, "model_path": self.model_path, "status": self.state,
                               "created": self.created, "loading_parameters": dict(self.params)}
        if self.priority is not None:
            out["priority"] = self.priority
        if self.error:
            out["error"] = self.error
        eng = self.engine
        if eng is not None and self.state == LOADED:
            meta = eng.metadata
            out["context_length"] = meta["n_ctx_slot"]
            if detail:
                out["metadata"] = {k: v for k, v in meta.items() if k != "chat_template"}
                try:
                    out["stats"] = eng.stats()
                except kerr.EngineClosedError:
                    pass
        return out


class EngineRegistry:
    def __init__(self) -> None:
        self._records: Dict[str, EngineRecord] = {}
        self._lock = threading.Lock()

    # -- registration --------------------------------------------------------
    def add(self, engine_id: str, model_path: str, params: Dict[str, Any], priority: Any = None) -> EngineRecord:
        with self._lock:
            if engine_id in self._records:
                raise ApiError(409, f"engine '{engine_id}' already exists", param="engine_id", code="engine_exists")
            rec = EngineRecord(engine_id, model_path, dict(params), priority)
            self._records[engine_id] = rec
            return rec

    def records(self) -> List[EngineRecord]:
        with self._lock:
            return list(self._records.values())

    def record(self, engine_id: str) -> EngineRecord:
        with self._lock:
            rec = self._records.get(engine_id)
        if rec is None:
            raise ApiError(404, f"The model '{engine_id}' does not exist", param="model", code="model_not_found")
        return rec

    # -- loading -------------------------------------------------------------
    def load(self, rec: EngineRecord) -> Engine:
        """Load ``rec`` (once; concurrent callers wait). Raises kolosal load errors."""
        with rec.lock:
            if rec.state == LOADED and rec.engine is not None:
                return rec.engine
            rec.state, rec.error = LOADING, None
            t0 = time.perf_counter()
            try:
                if not os.path.isfile(rec.model_path):
                    raise kerr.ModelNotFoundError(f"model file not found: {rec.model_path}")
                rec.engine = Engine(rec.model_path, model_id=rec.engine_id, **rec.params)
            except Exception as e:
                rec.state, rec.error = FAILED, f"{type(e).__name__}: {e}"
                log.error("loading %s failed: %s", rec.engine_id, e)
                raise
            rec.state, rec.loaded_at = LOADED, time.time()
            log.info("loaded %s from %s in %.2fs", rec.engine_id, rec.model_path, time.perf_counter() - t0)
            return rec.engine

    def load_all(self, ids: List[str]) -> None:
        for engine_id in ids:
            try:
                self.load(self.record(engine_id))
            except Exception:  # recorded in the record's state
                pass

    def engine(self, model: Optional[str]) -> Engine:
        """The engine serving ``model`` (None: the only/first loaded one), loading it on demand."""
        if model is None:
            recs = self.records()
            loaded = [r for r in recs if r.state == LOADED]
            if not (loaded or recs):
                raise ApiError(404, "no model is loaded", param="model", code="model_not_found")
            rec = (loaded or recs)[0]
        else:
            rec = self.record(model)
        if rec.state == LOADED and rec.engine is not None:
            return rec.engine
        try:
            return self.load(rec)
        except kerr.KolosalError as e:
            raise ApiError(503, f"the model '{rec.engine_id}' could not be loaded: {e}", param="model",
                           code="model_load_failed") from None

    # -- removal -------------------------------------------------------------
    def remove(self, engine_id: str) -> EngineRecord:
        with self._lock:
            rec = self._records.pop(engine_id, None)
        if rec is None:
            raise ApiError(404, f"engine '{engine_id}' does not exist", param="engine_id", code="engine_not_found")
        self._close(rec)
        return rec

    def _close(self, rec: EngineRecord) -> None:
        with rec.lock:
            if rec.engine is not None:
                rec.engine.close()
            rec.engine, rec.state = None, UNLOADED

    def close_all(self) -> None:
        for rec in self.records():
            self._close(rec)

"""EngineRegistry: the models a server knows, keyed by engine id (= model id),
one ``EngineRecord`` each.

A model is ``registered`` until first needed (or loaded at start-up), then
``loading`` → ``loaded``; eviction and idle unloading pass through
``unloading`` back to ``registered``; a failed load leaves ``error`` with a
code saying why. Before a load, its footprint is estimated from the GGUF
header and ``memory_policy`` decides which idle models to unload to make
room; ``upkeep`` runs the background thread that unloads idle models and
reloads changed files.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ... import errors as kerr
from ..._native import MemoryManager
from ...engine import Engine, LoadProgress
from ..errors import ApiError
from .load_progress import ProgressLog
from .memory_policy import MemoryPolicy, choose_victim, idle_too_long, priority_rank
from .paths import file_sha256, file_stamp
from .upkeep import ModelUpkeep

log = logging.getLogger("kolosal.server.registry")

REGISTERED, LOADING, LOADED, UNLOADING, FAILED = "registered", "loading", "loaded", "unloading", "error"

# Why a load failed: one code per cause, in the record, the log and the HTTP error.
_LOAD_ERROR_CODES: Tuple[Tuple[type, str], ...] = (
    (kerr.ModelNotFoundError, "model_file_missing"),
    (kerr.ModelPermissionError, "model_permission_denied"),
    (kerr.UnsupportedArchitectureError, "unsupported_architecture"),
    (kerr.InvalidModelError, "invalid_model_file"),
    (kerr.OutOfMemoryError, "out_of_memory"),
    (kerr.InvalidParameterError, "invalid_load_parameter"),
    (kerr.WorkerUnreachableError, "worker_unreachable"),
    (kerr.ModelLoadError, "model_load_failed"),
)


class ChecksumMismatch(kerr.ModelLoadError):
    """The model file's SHA-256 is not the configured one."""


@dataclass
class EngineRecord:
    engine_id: str
    model_path: str
    params: Dict[str, Any]
    priority: Any = None
    sha256: Optional[str] = None
    pinned: bool = False
    keep_alive: Optional[float] = None  # idle seconds before unloading, from a request's keep_alive (< 0: never)
    state: str = REGISTERED
    error: Optional[str] = None
    error_code: Optional[str] = None
    engine: Optional[Engine] = None
    created: int = field(default_factory=lambda: int(time.time()))
    loaded_at: Optional[float] = None
    last_used: Optional[float] = None
    estimate_bytes: Optional[int] = None
    measured_bytes: Optional[int] = None
    load_seconds: Optional[float] = None
    admitting: int = 0  # requests between admission and submission to the engine
    file_stamp: Optional[Tuple[int, int]] = None  # (size, mtime) of the file when it was loaded
    load_progress: Optional[LoadProgress] = None  # of the current or last load
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_loaded(self) -> bool:
        """Whether its model is loaded now."""
        return self.state == LOADED and self.engine is not None

    def check_failure(self) -> None:
        """A loaded engine that failed for good (it lost an RPC worker) leaves:
        the record goes to ``error`` with code ``worker_unreachable``; a later
        request loads the model again (refused while the worker is gone)."""
        eng = self.engine
        if eng is None or self.state != LOADED or not eng.failure:
            return
        self.state, self.error, self.error_code = FAILED, eng.failure, "worker_unreachable"
        self.engine = None
        log.error("engine %s failed: %s", self.engine_id, eng.failure)
        eng.close()  # returns at once: its parked thread and memory stay until the process ends

    def requests_in_flight(self) -> int:
        n = self.admitting
        eng = self.engine
        if eng is not None:
            try:
                st = eng.stats()
                n += st["slots_busy"] + st["queued"]
            except kerr.EngineClosedError:
                pass
        return n

    def busy(self) -> bool:
        return self.requests_in_flight() > 0

    def prompt_cache_bytes(self) -> int:
        """Host memory the engine's prompt cache holds now (saved conversation states)."""
        eng = self.engine
        if eng is None:
            return 0
        try:
            return int(eng.stats().get("prompt_cache_bytes", 0))
        except kerr.EngineClosedError:
            return 0

    @property
    def progress(self) -> Optional[float]:
        """0..1 while loading (the share of the weights read), 1.0 once loaded, None otherwise."""
        if self.state == LOADED:
            return 1.0
        lp = self.load_progress
        if self.state == LOADING:
            return lp.value if lp is not None else 0.0
        return None

    def memory_bytes(self) -> int:
        """What the loaded model holds: weights, KV cache and its prompt cache."""
        return (self.measured_bytes or 0) + self.prompt_cache_bytes()

    def describe(self, detail: bool = False) -> Dict[str, Any]:
        self.check_failure()
        out: Dict[str, Any] = {"engine_id": self.engine_id, "model_path": self.model_path, "status": self.state,
                               "created": self.created, "loading_parameters": dict(self.params),
                               "priority": self.priority if self.priority is not None else "medium",
                               "pinned": self.pinned, "last_used": self.last_used,
                               "requests_in_flight": self.requests_in_flight(),
                               "memory": {"estimated_bytes": self.estimate_bytes, "measured_bytes": self.measured_bytes,
                                          "prompt_cache_bytes": self.prompt_cache_bytes()},
                               "load_seconds": self.load_seconds}
        progress = self.progress
        if progress is not None:
            out["progress"] = round(progress, 4)
        if self.error:
            out["error"] = self.error
            out["error_code"] = self.error_code
        eng = self.engine
        if eng is not None and self.state == LOADED:
            meta = eng.metadata
            out["context_length"] = meta["n_ctx_slot"]
            if detail:
                out["metadata"] = {k: v for k, v in meta.items() if k != "chat_template"}
                out["devices"] = eng.devices()
                try:
                    out["stats"] = eng.stats()
                except kerr.EngineClosedError:
                    pass
        return out


@dataclass
class RegistryCounters:
    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    evictions: int = 0
    idle_unloads: int = 0
    load_seconds_total: float = 0.0


class EngineRegistry:
    def __init__(self, policy: Optional[MemoryPolicy] = None,
                 engine_factory: Callable[..., Engine] = Engine) -> None:
        self.policy = policy or MemoryPolicy()
        self.counters = RegistryCounters()
        self._records: Dict[str, EngineRecord] = {}
        self._lock = threading.Lock()
        self._memory_lock = threading.Lock()  # one load decision at a time
        self._engine_factory = engine_factory
        # called with the engine id before a request loads a model on demand; raises to refuse
        self.load_guard: Optional[Callable[[str], None]] = None
        self._checksums: Dict[Tuple[str, int, int], str] = {}
        self.upkeep = ModelUpkeep(self, self.policy)  # runs when the policy or a model's keep_alive needs it
        if ModelUpkeep.needed(self.policy):
            self.upkeep.start()

    # -- registration --------------------------------------------------------
    def add(self, engine_id: str, model_path: str, params: Dict[str, Any], priority: Any = None,
            sha256: Optional[str] = None, pinned: bool = False) -> EngineRecord:
        with self._lock:
            if engine_id in self._records:
                raise ApiError(409, f"engine '{engine_id}' already exists", param="engine_id", code="engine_exists")
            rec = EngineRecord(engine_id, model_path, dict(params), priority, sha256.lower() if sha256 else None,
                               pinned)
            self._records[engine_id] = rec
            return rec

    def records(self) -> List[EngineRecord]:
        with self._lock:
            recs = list(self._records.values())
        for r in recs:
            r.check_failure()  # an engine that lost its RPC worker shows as failed everywhere
        return recs

    def record(self, engine_id: str) -> EngineRecord:
        with self._lock:
            rec = self._records.get(engine_id)
        if rec is None:
            raise ApiError(404, f"The model '{engine_id}' does not exist", param="model", code="model_not_found")
        return rec

    def loaded(self) -> List[EngineRecord]:
        """The records whose model is loaded now."""
        return [r for r in self.records() if r.is_loaded]

    # -- loading -------------------------------------------------------------
    def estimate(self, rec: EngineRecord) -> int:
        n_ctx = int(rec.params.get("n_ctx") or 4096)
        return int(MemoryManager.estimate(rec.model_path, n_ctx, int(rec.params.get("n_gpu_layers") or 0),
                                          rec.params.get("cache_type_k") or "f16",
                                          rec.params.get("cache_type_v") or "f16")["total_bytes"])

    def _verify_checksum(self, rec: EngineRecord) -> None:
        if not rec.sha256:
            return
        st = os.stat(rec.model_path)
        key = (rec.model_path, st.st_size, st.st_mtime_ns)
        digest = self._checksums.get(key)
        if digest is None:
            digest = file_sha256(rec.model_path)
            self._checksums[key] = digest
        if digest != rec.sha256:
            raise ChecksumMismatch(f"sha256 of {rec.model_path} is {digest}, the configuration expects {rec.sha256}")

    def load(self, rec: EngineRecord) -> Engine:
        """Load ``rec`` (once; concurrent callers wait for the same load).
        Raises kolosal load errors, or ApiError 503 when memory cannot be freed."""
        if not rec.lock.acquire(timeout=self.policy.load_wait_seconds):
            raise ApiError(503, f"The model '{rec.engine_id}' is still loading after "
                                f"{self.policy.load_wait_seconds:g}s; retry later.", param="model",
                           code="model_load_timeout")
        try:
            return self._load_locked(rec)
        finally:
            rec.lock.release()

    def _load_locked(self, rec: EngineRecord) -> Engine:
        if rec.is_loaded:
            return rec.engine
        rec.state, rec.error, rec.error_code = LOADING, None, None
        rec.load_progress = LoadProgress()
        t0 = time.perf_counter()
        try:
            if not os.path.isfile(rec.model_path):
                raise kerr.ModelNotFoundError(f"model file not found: {rec.model_path}")
            self._verify_checksum(rec)
            rec.estimate_bytes = self.estimate(rec)
            with self._memory_lock:
                self._make_room(rec, rec.estimate_bytes)
                with ProgressLog(rec.engine_id, rec.load_progress):
                    engine = self._engine_factory(rec.model_path, model_id=rec.engine_id,
                                                  load_progress=rec.load_progress, **rec.params)
        except ApiError as e:
            rec.state, rec.error, rec.error_code = FAILED, e.message, e.code
            self.counters.load_failures += 1
            log.error("loading %s failed: %s", rec.engine_id, e.message)
            raise
        except Exception as e:
            code = "sha256_mismatch" if isinstance(e, ChecksumMismatch) else next(
                (c for t, c in _LOAD_ERROR_CODES if isinstance(e, t)), "model_load_failed")
            rec.state, rec.error, rec.error_code = FAILED, f"{type(e).__name__}: {e}", code
            self.counters.load_failures += 1
            log.error("loading %s failed (%s): %s", rec.engine_id, code, e)
            raise
        meta = engine.metadata
        rec.engine = engine
        rec.file_stamp = file_stamp(rec.model_path)
        rec.measured_bytes = int(meta["size_bytes"]) + int(meta["kv_bytes"])
        rec.load_seconds = time.perf_counter() - t0
        rec.state, rec.loaded_at, rec.last_used = LOADED, time.time(), time.time()
        self.counters.loads += 1
        self.counters.load_seconds_total += rec.load_seconds
        log.info("loaded %s from %s in %.2fs (estimated %d MiB, measured %d MiB)", rec.engine_id,
                 rec.model_path, rec.load_seconds, rec.estimate_bytes >> 20, rec.measured_bytes >> 20)
        return engine

    def _make_room(self, rec: EngineRecord, need: int) -> None:
        """Unload idle models until ``need`` more bytes fit; ApiError 503 if they cannot."""
        while True:
            victim = choose_victim(self.policy, rec.engine_id, need,
                                   [r for r in self.loaded() if r is not rec])
            if victim is None:
                return
            self.unload(victim, "evicted")
            self.counters.evictions += 1

    def unload(self, rec: EngineRecord, why: str) -> bool:
        """Close ``rec``'s engine; the record stays, ``registered``, to load again on demand.
        Whether there was an engine to close."""
        with rec.lock:
            return self._unload_locked(rec, why)

    def _unload_locked(self, rec: EngineRecord, why: str) -> bool:
        if rec.engine is None:
            return False
        rec.state = UNLOADING
        rec.engine.close()
        rec.engine, rec.state = None, REGISTERED
        self.counters.unloads += 1
        log.info("unloaded %s (%s)", rec.engine_id, why)
        return True

    def unload_if_idle(self, rec: EngineRecord, keep_alive_seconds: Optional[float],
                       why: Optional[str] = None) -> bool:
        """Unload the loaded ``rec`` if it has been idle past its own keep-alive, else
        ``keep_alive_seconds`` (None: only the former), and is neither pinned nor serving
        (``memory_policy.idle_too_long``); counted as an idle unload. Whether it went."""
        # A model being loaded or unloaded by another thread is not idle.
        if not rec.lock.acquire(blocking=False):
            return False
        try:
            # Decided under the lock that counts admissions (engine(hold=True)): a request
            # admitted before counts as busy, one admitted after sees the model unloading
            # and waits for it to load again instead of getting a closed engine.
            with self._lock:
                if not rec.is_loaded or not idle_too_long(rec, keep_alive_seconds, time.time()):
                    return False
                rec.state = UNLOADING
            if why is None:
                own = rec.keep_alive if rec.keep_alive is not None else keep_alive_seconds
                why = f"idle for more than {own:g}s"
            self._unload_locked(rec, why)
        finally:
            rec.lock.release()
        self.counters.idle_unloads += 1
        return True

    def load_all(self, ids: List[str]) -> None:
        """Load these models in priority order (high first); failures stay in the records."""
        recs = [self.record(i) for i in ids]
        for rec in sorted(recs, key=lambda r: -priority_rank(r.priority)):
            try:
                self.load(rec)
            except Exception:  # recorded in the record's state
                pass

    def engine(self, model: Optional[str], hold: bool = False) -> Engine:
        """The engine serving ``model`` (None: the only/first loaded one), loading it on demand.
        With ``hold`` the model counts as busy (never unloaded) until ``release``:
        hold it from admission until the request's generations are submitted."""
        if model is None:
            recs = self.records()
            loaded = [r for r in recs if r.state == LOADED]
            if not (loaded or recs):
                raise ApiError(404, "no model is loaded", param="model", code="model_not_found")
            rec = (loaded or recs)[0]
        else:
            rec = self.record(model)
        rec.last_used = time.time()
        if hold:
            with self._lock:
                rec.admitting += 1
        try:
            rec.check_failure()
            engine = rec.engine
            if rec.state == LOADED and engine is not None:
                return engine
            if self.load_guard is not None and rec.state != LOADING:  # waiting for a load under way is fine
                self.load_guard(rec.engine_id)
            try:
                return self.load(rec)
            except kerr.KolosalError as e:
                raise ApiError(503, f"the model '{rec.engine_id}' could not be loaded: {e}", param="model",
                               code=rec.error_code or "model_load_failed") from None
        except BaseException:
            if hold:
                self.release(rec.engine_id)
            raise

    def release(self, engine_id: str) -> None:
        """End a ``hold`` taken by ``engine(..., hold=True)``."""
        with self._lock:
            rec = self._records.get(engine_id)
            if rec is not None and rec.admitting > 0:
                rec.admitting -= 1

    # -- hot reload ------------------------------------------------------------
    def replace(self, engine_id: str, model_path: str, params: Dict[str, Any]) -> EngineRecord:
        """Swap in a new model under ``engine_id``: it is loaded first, new
        requests go to it at once, and the old engine is closed once the
        requests it is serving have finished."""
        rec = self.record(engine_id)
        staged = EngineRecord(engine_id, model_path, dict(params), rec.priority, rec.sha256, rec.pinned)
        new = self.load(staged)
        with rec.lock:
            old = rec.engine
            rec.model_path, rec.params = model_path, dict(params)
            rec.engine, rec.state, rec.error, rec.error_code = new, LOADED, None, None
            rec.measured_bytes, rec.estimate_bytes = staged.measured_bytes, staged.estimate_bytes
            rec.file_stamp = staged.file_stamp
            rec.loaded_at, rec.load_seconds = staged.loaded_at, staged.load_seconds
        if old is not None:
            threading.Thread(target=self._retire, args=(old,), name=f"kolosal-retire-{engine_id}", daemon=True).start()
        return rec

    def _retire(self, engine: Engine, timeout: float = 3600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = engine.stats()
            except kerr.EngineClosedError:
                return
            if st["slots_busy"] + st["queued"] == 0:
                break
            time.sleep(0.1)
        engine.close()
        self.counters.unloads += 1

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
            rec.engine, rec.state = None, REGISTERED

    def close_all(self) -> None:
        self.upkeep.stop()
        for rec in self.records():
            self._close(rec)

"""The background upkeep thread of a registry: unloads models idle past
their keep-alive (``inference.keep_alive_seconds``, or the one a request
set on the model: Ollama's ``keep_alive``) and, with
``inference.watch_model_files``, reloads a loaded model whose file changed
on disk (the old model keeps serving if the new file fails to load)."""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Optional

from .memory_policy import MemoryPolicy
from .paths import file_stamp

if TYPE_CHECKING:
    from .registry import EngineRegistry

log = logging.getLogger("kolosal.server.registry")


class ModelUpkeep:
    """A daemon thread, started with the registry when its policy needs one,
    else by the first ``wake()``; stopped by ``stop()``."""

    def __init__(self, registry: "EngineRegistry", policy: MemoryPolicy) -> None:
        self.registry = registry
        self.policy = policy
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def needed(policy: MemoryPolicy) -> bool:
        return bool(policy.keep_alive_seconds or policy.watch_files)

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="kolosal-model-upkeep", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """A model's own keep-alive changed: look again now (starting the thread if it is not running)."""
        self.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _period(self) -> Optional[float]:
        """Seconds until the next look (None: until woken): the policy's
        period, or sooner when a model's own keep-alive runs out first."""
        keep = self.policy.keep_alive_seconds
        period = self.policy.poll_seconds if self.policy.watch_files else math.inf
        if keep:
            period = min(self.policy.poll_seconds, max(keep / 4, 0.05))
        now = time.time()
        for rec in self.registry.records():
            if rec.keep_alive is None or rec.keep_alive < 0:
                continue
            if rec.is_loaded and rec.last_used is not None:
                period = min(period, max(rec.last_used + rec.keep_alive - now, 0.0) + 0.05)
            else:  # its own keep-alive applies again once something loads it
                period = min(period, self.policy.poll_seconds)
        return None if math.isinf(period) else period

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._period())
            self._wake.clear()
            if self._stop.is_set():
                return
            self.unload_idle(self.policy.keep_alive_seconds)
            if self.policy.watch_files:
                self.reload_changed()

    def unload_idle(self, keep: Optional[float]) -> None:
        """Unloads the models idle past their own keep-alive, else ``keep`` (None: only the former)."""
        for rec in self.registry.loaded():
            self.registry.unload_if_idle(rec, keep)

    def reload_changed(self) -> None:
        for rec in self.registry.loaded():
            if rec.file_stamp is None:
                continue
            stamp = file_stamp(rec.model_path)
            if stamp is None or stamp == rec.file_stamp:
                continue
            log.info("the file of %s changed: reloading it", rec.engine_id)
            try:
                self.registry.replace(rec.engine_id, rec.model_path, rec.params)
            except Exception as e:  # the old model keeps serving
                rec.file_stamp = stamp  # do not retry the same file again and again
                log.error("reloading %s failed, the loaded model keeps serving: %s", rec.engine_id, e)

"""The background upkeep thread of a registry: unloads models idle past
``inference.keep_alive_seconds`` and, with ``inference.watch_model_files``,
reloads a loaded model whose file changed on disk (the old model keeps
serving if the new file fails to load)."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional

from .memory_policy import MemoryPolicy, idle_too_long
from .paths import file_stamp

if TYPE_CHECKING:
    from .registry import EngineRegistry

log = logging.getLogger("kolosal.server.registry")


class ModelUpkeep:
    """A daemon thread started with the registry, stopped by ``stop()``."""

    def __init__(self, registry: "EngineRegistry", policy: MemoryPolicy) -> None:
        self.registry = registry
        self.policy = policy
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def needed(policy: MemoryPolicy) -> bool:
        return bool(policy.keep_alive_seconds or policy.watch_files)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kolosal-model-upkeep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        keep = self.policy.keep_alive_seconds
        period = min(self.policy.poll_seconds, max(keep / 4, 0.05)) if keep else self.policy.poll_seconds
        while not self._stop.wait(period):
            if keep:
                self.unload_idle(keep)
            if self.policy.watch_files:
                self.reload_changed()

    def unload_idle(self, keep: float) -> None:
        now = time.time()
        for rec in self.registry.loaded():
            if idle_too_long(rec, keep, now):
                self.registry.unload(rec, f"idle for more than {keep:g}s")
                self.registry.counters.idle_unloads += 1

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

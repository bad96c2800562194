"""Model load progress in the server log: a short-lived thread per load reads
the engine's ``LoadProgress`` (written by llama.cpp's callback in the native
core, never calling into Python) and logs each 10 % step reached."""
from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Optional, Type

from ...engine import LoadProgress

log = logging.getLogger("kolosal.server.registry")


class ProgressLog:
    """``with ProgressLog(engine_id, progress): load...`` logs ``loading ID: N%``
    for every tenth the load passes, in order, while it runs and once more when
    it ends (a fast load passes several tenths between two looks)."""

    def __init__(self, engine_id: str, progress: LoadProgress, interval: float = 0.1) -> None:
        self.engine_id = engine_id
        self.progress = progress
        self.interval = interval
        self.logged = 0  # tenths logged so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kolosal-progress-{engine_id}", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> "ProgressLog":
        self._thread.start()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._stop.set()
        self._thread.join()
        self.step()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def step(self) -> None:
        """Log the tenths reached since the last call."""
        with self._lock:
            reached = min(10, int(self.progress.value * 10 + 1e-6))
            while self.logged < reached:
                self.logged += 1
                log.info("loading %s: %d%%", self.engine_id, self.logged * 10,
                         extra={"engine_id": self.engine_id, "progress": self.logged / 10})

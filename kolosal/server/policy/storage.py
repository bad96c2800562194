"""Where the rate limits and token quotas count: the ``limits`` storage named
by ``storage_uri`` (``memory://``, or ``redis://...`` so that several
instances share one budget), with a stand-in in memory. While the named
storage cannot be reached, counting goes on in memory (per instance, one
warning per outage) and the storage is tried again every few seconds.

One ``LimitStorage`` per app serves both the rate limiter and the token
quota, so that an outage is noticed, logged and recovered from once."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, TypeVar

from flask import Flask
from limits.storage import MemoryStorage, storage_from_string

log = logging.getLogger("kolosal.server.limits")
T = TypeVar("T")
EXT = "kolosal_limit_storage"


class LimitStorage:
    RECHECK_SECONDS = 5.0  # how often a storage that failed is tried again

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.primary = storage_from_string(uri)
        self.memory = MemoryStorage()
        self._failed_at: Optional[float] = None

    def strategy(self, cls: Callable[[Any], T]) -> Callable[[Any], T]:
        """A ``limits`` strategy class bound to each storage: call the result with the storage ``run`` passes."""
        bound: Dict[int, T] = {id(self.primary): cls(self.primary), id(self.memory): cls(self.memory)}
        return lambda storage: bound[id(storage)]

    def current(self) -> Any:
        """The named storage, or the memory one while it is down (retried every ``RECHECK_SECONDS``)."""
        if self._failed_at is not None and time.monotonic() - self._failed_at >= self.RECHECK_SECONDS:
            try:
                ok = self.primary.check()
            except Exception:
                ok = False
            if ok:
                log.info("rate limit storage reachable again")
                self._failed_at = None
            else:
                self._failed_at = time.monotonic()
        return self.memory if self._failed_at is not None else self.primary

    def run(self, op: Callable[[Any], T]) -> T:
        """``op(storage)`` on the current storage; when the named one fails, again on the memory one."""
        storage = self.current()
        try:
            return op(storage)
        except Exception:
            if storage is self.memory:
                raise
            if self._failed_at is None:
                log.warning("rate limit storage unreachable: rate limits and token quotas are kept in memory "
                            "meanwhile")
            self._failed_at = time.monotonic()
            return op(self.memory)


def limit_storage(app: Flask, uri: str) -> LimitStorage:
    """The app's one ``LimitStorage`` for ``uri``."""
    shared = app.extensions.get(EXT)
    if shared is None or shared.uri != uri:
        shared = app.extensions[EXT] = LimitStorage(uri)
    return shared

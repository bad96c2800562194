"""The memory-budget decisions: whether one more model fits, and which loaded
model goes first when it does not.

A load's footprint is estimated from the GGUF header (weights + KV for
``n_ctx``). It fits when the loaded models' memory (weights, KV and their
prompt caches) plus the footprint stays within the budget
(``inference.model_cache_size_gb``) and system memory use stays below
``inference.swap_threshold``. Otherwise idle models are unloaded in order:
low before medium before high priority, least recently used first. Models
with requests in flight and pinned models are never unloaded; when only those
are left, the load is refused with 503 ``insufficient_memory``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from ..._native import MemoryManager
from ..errors import ApiError

if TYPE_CHECKING:
    from .registry import EngineRecord

_PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}


@dataclass
class MemoryPolicy:
    budget_bytes: Optional[int] = None     # weights + KV of all loaded models
    swap_threshold: Optional[float] = None  # highest system memory use (0..1) a load may cause
    keep_alive_seconds: Optional[float] = None  # unload models idle this long
    load_wait_seconds: float = 300.0  # how long a request waits for a model another request is loading
    watch_files: bool = False  # reload a loaded model when its file changes on disk
    poll_seconds: float = 2.0  # how often model files are checked


def priority_rank(priority: Any) -> int:
    if isinstance(priority, int):
        return priority
    return _PRIORITY_RANK.get(str(priority or "medium").lower(), 1)


def shortfall(policy: MemoryPolicy, used: int, need: int) -> List[str]:
    """Why ``need`` more bytes do not fit next to ``used`` (empty: they fit)."""
    reasons = []
    budget = policy.budget_bytes
    if budget is not None and used + need > budget:
        reasons.append(f"the model budget is {budget >> 20} MiB and {used >> 20} MiB are in use")
    if policy.swap_threshold is not None:
        sysmem = MemoryManager.system()
        if sysmem["total_bytes"] and (sysmem["used_bytes"] + need) / sysmem["total_bytes"] > policy.swap_threshold:
            reasons.append(f"system memory use would pass {policy.swap_threshold:.0%}")
    return reasons


def eviction_order(loaded: Sequence["EngineRecord"]) -> List["EngineRecord"]:
    """The loaded models that may be unloaded, first to go first."""
    return sorted((r for r in loaded if not r.pinned and not r.busy()),
                  key=lambda r: (priority_rank(r.priority), r.last_used or 0.0))


def choose_victim(policy: MemoryPolicy, engine_id: str, need: int,
                  loaded: Sequence["EngineRecord"]) -> Optional["EngineRecord"]:
    """None when loading ``engine_id`` (``need`` bytes) fits next to the
    ``loaded`` models; otherwise the model to unload first. Raises ApiError 503
    ``insufficient_memory`` when it does not fit and none may be unloaded."""
    reasons = shortfall(policy, sum(r.memory_bytes() for r in loaded), need)
    if not reasons:
        return None
    victims = eviction_order(loaded)
    if not victims:
        held = ", ".join(f"{r.engine_id} ({r.memory_bytes() >> 20} MiB, "
                         f"{'pinned' if r.pinned else 'busy'})" for r in loaded) or "nothing"
        raise ApiError(503, f"Not enough memory to load '{engine_id}' ({need >> 20} MiB needed): "
                            f"{'; '.join(reasons)}. Loaded: {held}.", param="model", code="insufficient_memory")
    return victims[0]


def idle_too_long(rec: "EngineRecord", keep_alive_seconds: Optional[float], now: float) -> bool:
    """Whether the loaded ``rec`` has been idle past the keep-alive (its own, when a request set one, else
    ``keep_alive_seconds``; None: no limit) and may go."""
    keep = rec.keep_alive if rec.keep_alive is not None else keep_alive_seconds
    return (keep is not None and keep >= 0 and not rec.pinned and rec.last_used is not None
            and (keep == 0 or now - rec.last_used > keep) and not rec.busy())

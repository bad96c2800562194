"""llama-server's LoRA adapter shapes: GET and POST /lora-adapters."""
from __future__ import annotations

from typing import List, Literal

from pydantic import RootModel

from .base import Reply
from .openai.common import LoraScale


class LoraAdapterInfo(Reply):
    id: int
    path: str  # the file; its name only, for keys other than admin keys
    scale: float  # the global scale: what requests without their own `lora` list use
    task_name: str
    prompt_prefix: str


class LoraAdapterList(RootModel[List[LoraAdapterInfo]]):
    def wire(self) -> list:
        return [a.model_dump() for a in self.root]


class LoraScales(RootModel[List[LoraScale]]):
    """New global scales: listed adapters get theirs, the others 0."""


class LoraApplied(Reply):
    success: Literal[True] = True

"""Bases and JSON Schema helpers shared by every request and response model."""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Dict, Tuple

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer, model_validator


def null_only(schema: Dict[str, Any]) -> None:
    """``json_schema_extra`` of a field accepted only as null (or left out)."""
    schema.clear()
    schema["type"] = "null"


def documented(replacement: Dict[str, Any]) -> Any:
    """``json_schema_extra`` replacing a field's schema by what a validator or
    the route actually accepts."""
    def extra(schema: Dict[str, Any]) -> None:
        schema.clear()
        schema.update(replacement)
    return extra


def refused(schema: Dict[str, Any], cls: Any = None) -> None:
    """``json_schema_extra`` of a model the server understands but refuses
    (a clear 400): the document accepts no instance of it."""
    schema.clear()
    schema["not"] = {}


def absent_or(name: str, when: Dict[str, Any], then: Dict[str, Any]) -> Dict[str, Any]:
    """JSON Schema: if property ``name`` is present and matches ``when``, the
    object must also match ``then``."""
    return {"anyOf": [{"not": {"required": [name], "properties": {name: when}}}, then]}


class Strict(BaseModel):
    """Unknown fields are rejected (400 naming the field). An explicit
    ``null`` for an optional field means its default, as in OpenAI's API."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _null_means_default(self):  # type: ignore[no-untyped-def]
        for name, info in _with_defaults(type(self)):
            if getattr(self, name) is None:
                default = info.get_default(call_default_factory=True)
                if default is not None:
                    object.__setattr__(self, name, default)
        return self


@functools.cache
def _with_defaults(cls: type) -> Tuple[Tuple[str, Any], ...]:
    """The optional fields of ``cls`` whose default is not ``None`` (a value or a
    factory), found once per model rather than on every request."""
    return tuple((name, info) for name, info in cls.model_fields.items()  # type: ignore[attr-defined]
                 if not info.is_required() and (info.default_factory is not None or info.default is not None))


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Reply(BaseModel):
    """A response model: every answer is built as one, so what is sent is what
    ``/openapi.json`` states. Unknown fields are an error (a shape cannot
    drift silently). A field left at its ``None`` default is left out of the
    JSON; a field given ``None`` is sent as ``null`` (``"usage": null`` on
    streamed chunks, ``"logprobs": null``); fields always sent are declared
    without a default."""

    model_config = ConfigDict(extra="forbid")
    _omissible: ClassVar[Tuple[Tuple[str, str], ...]] = ()  # (name, JSON key) of the fields that default to None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._omissible = tuple((name, info.alias or name) for name, info in cls.model_fields.items()
                               if not info.is_required() and info.default is None)

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        given = self.model_fields_set
        for name, key in self._omissible:
            if name not in given and getattr(self, name) is None:
                data.pop(key, None)
        return data

    def wire(self) -> Dict[str, Any]:
        """The JSON-ready dict (floats stay floats: ``-Infinity`` is not turned into null)."""
        return self.model_dump(by_alias=True)

"""The arguments each request may carry, read from its handler's signature.

A handler's type hints are its request's schema: `n: int`, `ids: list[str]`,
`fit: dict | None`. The coordinator checks a request against it before the handler
runs, so a forged or buggy client's `n="x"` or `ids={}` gets one `MalformedMessage`
line back, and no wrong-typed value reaches the queue, the parked claims or the
timers (where it would fail later, outside any request, for every client).

Types are matched exactly, as `wire` matches records: an int where a float is
hinted is fine, a bool where an int is hinted is not. Numbers must be finite and
fit in 64 bits (what SQLite stores). Records (`dict`, `list[dict]`) are checked
field by field by the `wire.*_in` decoder the handler passes them to; the types of
both are checked by one function, `wire.check_fields`.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..net.wire import MalformedMessage, check_fields

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_NUMBERS = frozenset({int, float})


@dataclass(frozen=True)
class Schema:
    """What one request's arguments may be: their names, those that must be there, each
    one's types (one not here takes anything), and the item types of its lists and maps
    (a map's keys are text)."""

    names: frozenset[str]
    required: frozenset[str]
    kinds: Mapping[str, frozenset[type]]
    items: Mapping[str, frozenset[type]]


def _kinds(hint: Any) -> tuple[frozenset[type] | None, frozenset[type] | None]:
    """(types, item types) a type hint allows; None: anything."""
    if hint is Any:
        return None, None
    if hint is None or hint is type(None):
        return frozenset({type(None)}), None
    if hint is float:
        return frozenset({int, float}), None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        items = None
        for member in typing.get_args(hint):
            member_kinds, member_items = _kinds(member)
            if member_kinds is None:
                return None, None
            kinds |= member_kinds
            items = items or member_items
        return frozenset(kinds), items
    if origin in (list, dict):
        item = typing.get_args(hint)[-1]
        return frozenset({origin}), _kinds(item)[0]
    return frozenset({hint}), None


def schema_of(handler: Callable[..., Any]) -> Schema:
    """The schema of a handler `(service, request, **arguments)`: its hints."""
    hints = typing.get_type_hints(handler)
    params = list(inspect.signature(handler).parameters.values())[2:]
    kinds, items = {}, {}
    for p in params:
        allowed, held = _kinds(hints.get(p.name, Any))
        if allowed is not None:
            kinds[p.name] = allowed
        if held is not None:
            items[p.name] = held
    return Schema(frozenset(p.name for p in params),
                  frozenset(p.name for p in params if p.default is p.empty), kinds, items)


def check(method: str, schema: Schema, args: Mapping[str, Any]) -> None:
    """MalformedMessage (one line) if `args` are not what `schema` takes."""
    for name in args:
        if name not in schema.names:
            raise MalformedMessage(f"{method}: unknown argument {name!r}")
    for name in schema.required:
        if name not in args:
            raise MalformedMessage(f"{method}: argument {name!r} missing")
    check_fields(args, schema.kinds, schema.items, f"{method}:")
    for name, value in args.items():
        where = f"{method}: {name}"
        _check_number(where, value)
        if type(value) is dict and name in schema.items:
            if any(type(key) is not str for key in value):
                raise MalformedMessage(f"{where} has a key that is not text")
            if schema.items[name] & _NUMBERS:
                for item in value.values():
                    _check_number(where, item)
        elif type(value) is list and schema.items.get(name, frozenset()) & _NUMBERS:
            for item in value:
                _check_number(where, item)


def _check_number(where: str, value: Any) -> None:
    """Numbers fit in 64 bits and are finite (a NaN deadline stops no timer)."""
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        raise MalformedMessage(f"{where} is an integer out of range")
    if type(value) is float and not math.isfinite(value):
        raise MalformedMessage(f"{where} is {value}")

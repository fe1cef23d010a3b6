"""The arguments each request may carry, read from its handler's signature.

A handler's type hints are its request's schema: `n: int`, `ids: list[str]`,
`fit: dict | None`. The coordinator checks a request against it before the handler
runs, so a forged or buggy client's `n="x"` or `ids={}` gets one `MalformedMessage`
line back, and no wrong-typed value reaches the queue, the parked claims or the
timers (where it would fail later, outside any request, for every client).

Types are matched exactly, as `wire` matches records: an int where a float is
hinted is fine, a bool where an int is hinted is not. Numbers must be finite and
fit in 64 bits (what SQLite stores). Records (`dict`, `list[dict]`) are checked
field by field by the `wire.*_in` decoder the handler passes them to.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..net.wire import MalformedMessage

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Param:
    """What one argument may be: its types, and for a list or map those of its items
    (a map's keys are text); `kinds` None takes anything."""

    kinds: frozenset[type] | None
    items: frozenset[type] | None
    required: bool


Schema = Mapping[str, Param]


def _kinds(hint: Any) -> tuple[frozenset[type] | None, frozenset[type] | None]:
    """(types, item types) a type hint allows."""
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
    return {p.name: Param(*_kinds(hints.get(p.name, Any)), p.default is p.empty)
            for p in params}


def check(method: str, schema: Schema, args: Mapping[str, Any]) -> None:
    """MalformedMessage (one line) if `args` are not what `schema` takes."""
    for name in args:
        if name not in schema:
            raise MalformedMessage(f"{method}: unknown argument {name!r}")
    for name, param in schema.items():
        if name in args:
            _check_value(f"{method}: {name}", args[name], param)
        elif param.required:
            raise MalformedMessage(f"{method}: argument {name!r} missing")


def _check_value(where: str, value: Any, param: Param) -> None:
    if param.kinds is None:
        return
    if type(value) not in param.kinds:
        raise MalformedMessage(f"{where} is {type(value).__name__}")
    _check_number(where, value)
    if param.items is None or not value:
        return
    if type(value) is dict and any(type(key) is not str for key in value):
        raise MalformedMessage(f"{where} has a key that is not text")
    for item in value.values() if type(value) is dict else value:
        if type(item) not in param.items:
            raise MalformedMessage(f"{where} holds a {type(item).__name__}")
        _check_number(where, item)


def _check_number(where: str, value: Any) -> None:
    """Numbers fit in 64 bits and are finite (a NaN deadline stops no timer)."""
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        raise MalformedMessage(f"{where} is an integer out of range")
    if type(value) is float and not math.isfinite(value):
        raise MalformedMessage(f"{where} is {value}")

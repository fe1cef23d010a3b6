"""A package's public names, imported when first used (PEP 562).

`shoal --version`, `shoal status` and every call interpreter import shoal's packages
but use few of their names; importing all of them made each start pay for the Executor,
the worker loop and every view (tests/test_startup.py keeps it from coming back). A
package lists each name with the module that defines it, next to a `TYPE_CHECKING`
import of the same names for type checkers and readers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(namespace: dict[str, Any],
            homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of the package whose globals are `namespace`:
    `homes` maps each public name to its module, relative to the package (".executor").
    A name, once imported, is kept in the package, so the next use is a plain lookup."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *homes})

    return __getattr__, __dir__

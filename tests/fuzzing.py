"""Hypothesis settings shared by the fuzz tests (tests/test_fuzz_*.py).

A default run is short: a few dozen examples per property, so all the fuzz files take
well under a minute on a loaded 2-core machine. `SHOAL_FUZZ_LONG=1` selects the long
profile (1500 examples per property, about ten minutes for all the files on an idle
machine):

    SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_*.py

No example database is written (a failing example is printed, with its seed), and no
deadline applies per example: the machine is shared, and a hang is caught by the
test's own timeout instead.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

LONG = os.environ.get("SHOAL_FUZZ_LONG", "") not in ("", "0")

settings.register_profile(
    "shoal-fuzz", max_examples=40, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "shoal-fuzz-long", max_examples=1500, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: the settings each fuzz test uses (`@FUZZ`); `scaled(n)` for properties that cost more
FUZZ = settings.get_profile("shoal-fuzz-long" if LONG else "shoal-fuzz")

#: a fuzz test's own time limit: a parser that hangs fails here, not silently
TIMEOUT = pytest.mark.timeout(900 if LONG else 120)


def scaled(share: float) -> settings:
    """The profile with `share` of its examples, for a property that does real I/O."""
    return settings(FUZZ, max_examples=max(10, int(FUZZ.max_examples * share)))

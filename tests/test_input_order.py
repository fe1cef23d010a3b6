"""Jobs start in input order (issue 14: `-j 1` over 1..15 used to run 5 8 13 9 2 ...)."""

from __future__ import annotations

import pytest

from tests.test_cli import shoal

pytestmark = pytest.mark.timeout(120)


def test_run_with_one_slot_starts_jobs_in_input_order(tmp_path):
    numbers = [str(n) for n in range(1, 16)]
    shoal("run", "--no-progress", "-j", "1", "echo {} >> order", ":::", *numbers, cwd=tmp_path)
    assert (tmp_path / "order").read_text().split() == numbers
    more = [str(n) for n in range(16, 31)]  # a second run on the same queue comes after
    shoal("run", "--no-progress", "-j", "1", "echo {} >> order", ":::", *more, cwd=tmp_path)
    assert (tmp_path / "order").read_text().split() == numbers + more

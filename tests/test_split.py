"""The job splitter: weighted, complete, deterministic across processes, checkable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from shoal.errors import UsageError
from shoal.split import Machine, describe, load_machines, make_plan, share_for

WEIGHT_SETS = [
    [(1.0, 1), (1.0, 1)],
    [(1.0, 1), (2.0, 1)],
    [(1.0, 4), (2.0, 2), (0.5, 8), (3.0, 1)],
    [(1.7, 3), (0.3, 1), (2.25, 16)],
    [(1.0, 1)] * 7,
    [(1.0, 1), (1000.0, 64)],
]
SIZES = [1, 2, 3, 5, 6, 7, 10, 33, 100, 257, 1000]


def machines_from(weights: list[tuple[float, int]]) -> list[Machine]:
    return [Machine(f"m{i}", speed, cores) for i, (speed, cores) in enumerate(weights)]


def keys(n: int, prefix: str = "job") -> list[str]:
    return [f"{prefix} {i} --input data/{i}.csv" for i in range(n)]


@pytest.mark.parametrize("weights", WEIGHT_SETS)
@pytest.mark.parametrize("n", SIZES)
def test_shares_are_proportional_within_one_job(weights: list[tuple[float, int]], n: int) -> None:
    machines = machines_from(weights)
    plan = make_plan(keys(n), machines)
    total = sum(s * c for s, c in weights)
    assert sum(len(v) for v in plan.shares.values()) == n
    for m in machines:
        exact = n * m.speed * m.cores / total
        assert abs(len(plan.shares[m.name]) - exact) < 1, (m, exact)


@pytest.mark.parametrize("weights", WEIGHT_SETS)
@pytest.mark.parametrize("n", SIZES)
def test_every_job_exactly_once(weights: list[tuple[float, int]], n: int) -> None:
    plan = make_plan(keys(n), machines_from(weights))
    everything = [j for share in plan.shares.values() for j in share]
    assert sorted(everything) == list(range(n))
    assert sorted(plan.order) == list(range(n))
    assert everything == plan.order  # shares are contiguous slices of the plan order


def test_twice_as_fast_or_twice_the_cores_gets_twice_the_jobs() -> None:
    plan = make_plan(keys(300), [Machine("a", 1.0, 1), Machine("b", 2.0, 1), Machine("c", 1, 2)])
    assert [len(plan.shares[n]) for n in "abc"] == [60, 120, 120]


def test_plan_does_not_depend_on_machine_order_given() -> None:
    ms = machines_from(WEIGHT_SETS[2])
    assert make_plan(keys(50), ms) == make_plan(keys(50), list(reversed(ms)))


def test_shuffle_spreads_jobs() -> None:
    plan = make_plan(keys(100), [Machine("a", 1, 1), Machine("b", 1, 1)])
    first = plan.shares["a"]
    assert len(first) == 50
    assert first != list(range(50))
    assert 10 <= len(set(first) & set(range(50))) <= 40  # roughly half of the early jobs


def test_shuffle_reaches_every_permutation_about_evenly() -> None:
    counts = Counter(
        tuple(make_plan(["x", "y", "z"], [Machine("a", 1, 1)], f"c{i}".encode()).order)
        for i in range(1200)
    )
    assert len(counts) == 6
    assert all(120 <= c <= 280 for c in counts.values()), counts


SNIPPET = """
import json, sys
from shoal.split import load_machines, make_plan
keys = json.loads(sys.argv[2])
plan = make_plan(keys, load_machines(sys.argv[1]), sys.argv[3].encode())
print(json.dumps({"order": plan.order, "shares": plan.shares, "checksum": plan.checksum,
                  "machines": [[m.name, m.speed, m.cores] for m in plan.machines]}))
"""


def test_same_plan_in_other_processes(tmp_path: Path) -> None:
    spec = {"zeta": [1.5, 4], "alpha": [1, 8], "mid": {"speed": 0.75, "cores": 2}, "b": [3, 1]}
    files = []
    for i, items in enumerate([list(spec.items()), list(reversed(spec.items()))]):
        path = tmp_path / f"machines{i}.json"
        path.write_text(json.dumps(dict(items)))
        files.append(path)
    job_keys = [*keys(77), "ünïcode job", 'job with "quotes"']
    outputs = set()
    for i, (hashseed, host) in enumerate([("0", "alpha"), ("1", "zeta"), ("12345", "other"),
                                          ("random", "x.example.org")]):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "HOSTNAME": host}
        result = subprocess.run(
            [sys.executable, "-c", SNIPPET, str(files[i % 2]), json.dumps(job_keys), "cfg=1"],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    remote = json.loads(outputs.pop())
    local = make_plan(job_keys, load_machines(files[0]), b"cfg=1")
    assert remote["order"] == local.order
    assert remote["shares"] == local.shares
    assert remote["checksum"] == local.checksum


def test_checksum_changes_with_what_the_plan_depends_on() -> None:
    ms = [Machine("a", 1.0, 2), Machine("b", 2.0, 1)]
    base = make_plan(keys(20), ms, b"config")
    variants = [
        make_plan(keys(21), ms, b"config"),  # a job more
        make_plan([*keys(20)[:-1], "other"], ms, b"config"),  # a job changed
        make_plan(list(reversed(keys(20))), ms, b"config"),  # job order
        make_plan(keys(20), [Machine("a", 1.0, 3), ms[1]], b"config"),  # cores
        make_plan(keys(20), [Machine("a", 1.5, 2), ms[1]], b"config"),  # speed
        make_plan(keys(20), [Machine("c", 1.0, 2), ms[1]], b"config"),  # name
        make_plan(keys(20), ms, b"config2"),  # config
        make_plan(keys(20), ms),  # no config
    ]
    sums = {base.checksum, *(v.checksum for v in variants)}
    assert len(sums) == len(variants) + 1
    assert make_plan(keys(20), ms, b"config").checksum == base.checksum


def test_checksum_ignores_key_order_in_machines_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    one.write_text('{"a": [1, 2], "b": {"cores": 4, "speed": 0.5}, "c": [2.0, 1]}')
    two.write_text('{"c": [2, 1], "b": {"speed": 0.5, "cores": 4}, "a": [1.0, 2]}')
    p1 = make_plan(keys(40), load_machines(one))
    p2 = make_plan(keys(40), load_machines(two))
    assert p1 == p2


def test_checksum_format() -> None:
    checksum = make_plan(["a"], [Machine("m", 1, 1)]).checksum
    parts = checksum.split("-")
    assert [len(p) for p in parts] == [4, 4, 4]
    assert all(c in "0123456789abcdef" for c in "".join(parts))


def test_join_of_keys_is_not_ambiguous() -> None:
    ms = [Machine("m", 1, 1)]
    assert make_plan(["ab", "c"], ms).checksum != make_plan(["a", "bc"], ms).checksum


def test_share_for_and_describe() -> None:
    plan = make_plan(keys(10), [Machine("fast", 2.0, 4), Machine("slow", 1.0, 2)])
    assert share_for(plan, "fast") == plan.shares["fast"]
    with pytest.raises(UsageError, match="fast, slow"):
        share_for(plan, "fats")
    text = describe(plan)
    assert plan.checksum in text
    assert "fast" in text and "80.0%" in text and "20.0%" in text
    assert "10 jobs over 2 machines" in text


def test_make_plan_refuses_bad_input() -> None:
    with pytest.raises(UsageError, match="no jobs"):
        make_plan([], [Machine("a", 1, 1)])
    with pytest.raises(UsageError, match="duplicate machine names: a"):
        make_plan(["x"], [Machine("a", 1, 1), Machine("a", 2, 1)])
    with pytest.raises(UsageError, match="no machines"):
        make_plan(["x"], [])
    with pytest.raises(UsageError):
        make_plan(["x"], [Machine("a", 0, 1)])
    with pytest.raises(UsageError):
        make_plan("abc", [Machine("a", 1, 1)])


@pytest.mark.parametrize(("content", "problem"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("{}", "no machines"),
    ('{"a": [0, 1]}', "speed"),
    ('{"a": [-1, 1]}', "speed"),
    ('{"a": ["fast", 1]}', "speed"),
    ('{"a": [true, 1]}', "speed"),
    ('{"a": [NaN, 1]}', "speed"),
    ('{"a": [1, 0]}', "cores"),
    ('{"a": [1, 1.5]}', "cores"),
    ('{"a": [1, "4"]}', "cores"),
    ('{"a": [1]}', "speed, cores"),
    ('{"a": 3}', "speed, cores"),
    ('{"a": {"speed": 1}}', "speed and cores"),
    ('{"a": {"speed": 1, "cores": 1, "ram": 4}}', "speed and cores"),
    ('{"a": [1, 1], "a": [2, 2]}', "duplicate key"),
    ('{"": [1, 1]}', "empty"),
])
def test_bad_machines_files(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "machines.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=problem) as info:
        load_machines(path)
    assert str(path) in str(info.value)


def test_missing_machines_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(UsageError) as info:
        load_machines(path)
    assert str(path) in str(info.value)


def test_load_machines_accepts_both_forms_sorted(tmp_path: Path) -> None:
    path = tmp_path / "machines.json"
    path.write_text('{"z": [2, 4], "a": {"speed": 0.5, "cores": 16}, "m": [1.25, 1.0]}')
    assert load_machines(path) == [Machine("a", 0.5, 16), Machine("m", 1.25, 1),
                                   Machine("z", 2.0, 4)]

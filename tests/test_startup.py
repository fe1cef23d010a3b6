"""Start-up stays light: `shoal --version`, `--help` and `status`, and the interpreter that
runs calls, import only what they use (issue 18: `shoal --version` <= 40 ms). Each is
checked by the modules a real process holds, not by a stopwatch (the machine is shared);
bench/bench_startup.py gives the times."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import shoal
from shoal.job import Job

# Never needed to start: the transports, the stores and the pools of other backends.
HEAVY = ("msgpack", "zmq", "rich", "redis", "starlette", "uvicorn", "sqlite3",
         "multiprocessing", "concurrent.futures", "asyncio")
# What only some commands use (syncfs, `shoal work`, coordinators).
SOME = ("ctypes", "socket", "subprocess")
# shoal's own machinery that no look at a queue and no call needs.
MACHINERY = ("shoal.executor", "shoal.worker.loop", "shoal.sessions", "shoal.splitrun",
             "shoal.serve", "shoal.web", "shoal.providers", "shoal.submission")

# Runs the CLI as the `shoal` script does and prints the modules it left loaded.
CLI = """\
import sys
from shoal.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="shoal")
except SystemExit as exc:
    code = exc.code
print("\\nMODULES", *sorted(sys.modules), file=sys.stderr)
sys.exit(code)
"""


def cli_modules(*args: str, cwd: Path | None = None) -> tuple[str, set[str]]:
    """What `shoal ARGS` printed, and every module it had imported when it ended."""
    done = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    errors, _, modules = done.stderr.rpartition("MODULES ")
    return done.stdout + errors, set(modules.split())


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of `names` that are among `modules` (a package's submodules count)."""
    return sorted(m for m in modules for name in names if m == name or m.startswith(name + "."))


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_neither_a_queue_nor_the_worker(args):
    printed, modules = cli_modules(*args)
    assert ("shoal, version " in printed) if args == ["--version"] else ("status" in printed)
    extra = ("cloudpickle", "logging", "shoal.job", "shoal.queue.base", "shoal.worker",
             "shoal.calls", "shoal.views", "shoal.net")
    assert loaded(modules, HEAVY + SOME + MACHINERY + extra) == []


def test_status_of_a_folder_queue_imports_only_the_folder_queue_and_its_view(tmp_path):
    queue = shoal.open_queue(tmp_path / "q")
    queue.submit([Job.command_job(f"echo {i}") for i in range(3)])
    printed, modules = cli_modules("status", str(tmp_path / "q"))
    assert "3 pending" in printed
    others = ("cloudpickle", "shoal.calls", "shoal.worker", "shoal.queue.sqlite",
              "shoal.queue.remote", "shoal.queue.redisq", "shoal.queue.memory",
              "shoal.views.results", "shoal.views.logs")
    assert loaded(modules, HEAVY + SOME + MACHINERY + others) == []


def test_running_shell_jobs_loads_nothing_for_python_calls(tmp_path):
    printed, modules = cli_modules("run", "--no-progress", "-k", "-j", "2", "echo", ":::", "a", "b",
                                   cwd=tmp_path)
    assert printed.startswith("a\nb\n")  # their output first, then the summary
    calls = ("cloudpickle", "shoal.calls", "shoal.executor")
    assert loaded(modules, HEAVY + calls) == []


def test_import_shoal_alone_imports_none_of_its_modules():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, shoal; print(*sorted(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True)
    ours = sorted(m for m in done.stdout.split() if m.startswith("shoal"))
    assert ours == ["shoal", "shoal.lazy"]


@pytest.mark.parametrize("package", ["shoal", "shoal.queue", "shoal.worker", "shoal.views"])
def test_every_public_name_is_there_when_used(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None, f"{package}.{name}"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018 - the error a user gets for a typo
    assert not hasattr(module, "no_such_name")


def test_public_names_are_the_defining_modules_objects():
    from shoal import Executor, State, open_queue, progress, split_map
    from shoal.context import progress as context_progress
    from shoal.executor import Executor as executor_class

    assert Executor is executor_class and progress is context_progress
    assert State.DONE.value == "done" and callable(open_queue) and callable(split_map)
    assert shoal.__version__ and "__version__" in shoal.__all__
    namespace: dict[str, object] = {}
    exec("from shoal import *", namespace)
    assert set(shoal.__all__) <= set(namespace)


def test_the_call_interpreter_holds_only_what_a_call_needs(tmp_path: Path):
    with shoal.Executor(f"dir://{tmp_path / 'q'}", workers=1) as executor:
        modules = set(executor.submit(lambda: sorted(__import__("sys").modules)).result(60))
    assert "cloudpickle" in modules  # every call's value goes back through it
    others = ("shoal.queue", "shoal.worker.slot", "shoal.worker.processes", "shoal.jobfiles",
              "shoal.views", "shoal.net", "click", "tests")
    assert loaded(modules, HEAVY + SOME + MACHINERY + others) == []

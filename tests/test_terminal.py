"""`shoal run` on a real terminal: the live line at 80 and 200 columns, and a run in the
background (`&`, Ctrl-Z then bg) that is never stopped by the terminal (SIGTTOU/SIGTTIN).

Each test starts a private tmux server (its own -L socket) running an interactive bash,
types commands into it as a user would, reads the screen with capture-pane, and stops
the server and everything in its panes by PID at the end."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import NoSuchQueue
from shoal.job import State
from shoal.live import line_columns
from shoal.queue import open_queue
from tests.conftest import wait_for

TMUX = shutil.which("tmux")
SRC = str(Path(__file__).resolve().parents[1] / "src")
SCREEN_S = 60.0  # generous: the machine is shared and loaded
WAIT_ALL = 'wait; echo "ex""it=$?"'  # "exit=" shows only once it ran, not as typed


class Terminal:
    """One tmux window of WIDTH columns with an interactive bash (job control on)."""

    def __init__(self, tmp: Path, width: int) -> None:
        self.socket = f"shoal-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        env = {"PS1": "$ ", "PYTHONPATH": SRC, "HISTFILE": "/dev/null", "TERM": "xterm-256color"}
        shell = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) \
            + " bash --norc --noprofile -i"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", "30",
                  "-c", str(tmp), shell)
        self.server_pid = int(self.tmux("display", "-p", "#{pid}"))
        self.pane_pid = int(self.tmux("display", "-p", "#{pane_pid}"))
        wait_for(lambda: "$" in self.screen(), SCREEN_S, 0.1, "the shell's prompt")

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, *args], check=True, text=True,
                              capture_output=True, timeout=30).stdout.strip()

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-l", line)
        self.tmux("send-keys", "Enter")

    def key(self, key: str) -> None:
        self.tmux("send-keys", key)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_screen(self, text: str, message: str) -> str:
        def shown() -> str:
            screen = self.screen()
            return screen if text in screen else ""

        try:
            return str(wait_for(shown, SCREEN_S, 0.1, f"{message} ({text!r} on the screen)"))
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}; the screen:\n{self.screen()}")

    def close(self) -> None:
        """Kill what runs in the pane (its session, by PID), then the tmux server."""
        for pid in _session_members(self.pane_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server_pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{self.server_pid}").exists(), SCREEN_S, 0.05,
                 "the tmux server to exit")


def _session_members(sid: int) -> list[int]:
    """PIDs in session `sid` (tmux makes each pane's shell a session leader)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the name: state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


@pytest.fixture
def terminal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    term = Terminal(tmp_path, request.param)
    try:
        yield term
    finally:
        term.close()


def gated_run(tmp_path: Path, jobs: int = 6) -> str:
    """A `shoal run` whose jobs wait until the file `gate` exists, then print their input."""
    gate = tmp_path / "gate"
    body = f"while [ ! -e {gate} ]; do sleep 0.1; done; echo out-{{}}"
    inputs = " ".join(str(i) for i in range(1, jobs + 1))
    return (f"{shlex.quote(sys.executable)} -m shoal run -j 2 --queue {tmp_path / 'q'} "
            f"{shlex.quote(body)} ::: {inputs}")


def running(folder: Path) -> int:
    """Jobs running in the queue at `folder` (0 while it does not exist yet)."""
    try:
        return open_queue(folder, create=False).counts()[State.RUNNING]
    except NoSuchQueue:
        return 0


def bar_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.startswith("shoal run ")]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("terminal", [80], indirect=True)
def test_bar_at_80_columns_keeps_count_and_eta(terminal: Terminal, tmp_path: Path) -> None:
    terminal.type(gated_run(tmp_path))
    screen = terminal.wait_screen("running 2", "the live line with two jobs running")
    line = bar_line(screen)
    assert "0/6" in line and "ETA" in line, screen
    assert len(line) <= 80
    assert "Enter: workers" not in screen  # the hint is the first thing dropped
    (tmp_path / "gate").touch()
    screen = terminal.wait_screen("6 done", "the run's summary")
    assert "6/6" in bar_line(screen) and "ETA" in bar_line(screen), screen


@pytest.mark.parametrize("terminal", [200], indirect=True)
def test_bar_at_200_columns_shows_everything(terminal: Terminal, tmp_path: Path) -> None:
    terminal.type(gated_run(tmp_path))
    screen = terminal.wait_screen("running 2", "the live line with two jobs running")
    line = bar_line(screen)
    for part in ("0/6", "━", "failed 0", "running 2", "Enter: workers, q: quit", "ETA"):
        assert part in line, f"{part!r} missing from {line!r}"
    terminal.key("Enter")  # the key reader is on: Enter lists the workers
    terminal.wait_screen("slots", "the workers table after Enter")
    terminal.key("q")  # q: the running jobs finish, no other starts
    terminal.wait_screen("q pressed", "q acknowledged")
    (tmp_path / "gate").touch()
    terminal.wait_screen("interrupted", "the run stopping after q")
    counts = open_queue(tmp_path / "q", create=False).counts()
    assert (counts[State.DONE], counts[State.PENDING]) == (2, 4)
    terminal.type('stty -a | grep -o " icanon"; echo "che""cked"')
    assert " icanon" in terminal.wait_screen("checked", "stty's answer"), \
        "the terminal was left in cbreak mode"


@pytest.mark.parametrize("terminal", [100], indirect=True)
def test_run_in_background_is_not_stopped(terminal: Terminal, tmp_path: Path) -> None:
    terminal.type(gated_run(tmp_path) + " &")
    terminal.wait_screen("[1]", "bash reporting the background job")
    # Long enough for the key reader to have touched the terminal, had it started.
    wait_for(lambda: running(tmp_path / "q") == 2, SCREEN_S, 0.1, "two jobs running")
    terminal.type("jobs")
    screen = terminal.wait_screen("Running", "`jobs` listing the run as Running")
    assert "Stopped" not in screen, screen
    (tmp_path / "gate").touch()
    terminal.type(WAIT_ALL)
    screen = terminal.wait_screen("exit=", "the background run to end")
    assert "exit=0" in screen and "6 done" in screen, screen
    assert "Stopped" not in screen, screen
    assert "ETA" not in screen, "the live line was drawn over the shell from the background"


@pytest.mark.parametrize("terminal", [200], indirect=True)
def test_ctrl_z_then_bg_keeps_running(terminal: Terminal, tmp_path: Path) -> None:
    """In the foreground the key reader runs and the terminal is in cbreak mode; after
    Ctrl-Z and bg it must neither read nor restore the terminal (both would stop it)."""
    terminal.type(gated_run(tmp_path))
    terminal.wait_screen("Enter: workers", "the live line with the key hint")
    terminal.key("C-z")
    terminal.wait_screen("Stopped", "Ctrl-Z stopping the run")
    terminal.type("bg")
    terminal.type("jobs")
    wait_for(lambda: "Running" in terminal.screen().rsplit("$ jobs", 1)[-1], SCREEN_S, 0.1,
             "`jobs` listing the run as Running after bg")
    (tmp_path / "gate").touch()
    terminal.type(WAIT_ALL)
    screen = terminal.wait_screen("exit=", "the background run to end")
    after_bg = screen.rsplit("$ bg", 1)[-1]
    assert "exit=0" in after_bg and "6 done" in after_bg, screen
    assert "Stopped" not in after_bg, screen
    terminal.type('stty -a | grep -o " icanon"; echo "che""cked"')
    assert " icanon" in terminal.wait_screen("checked", "stty's answer"), \
        "the shell's terminal was left in cbreak mode"


@pytest.mark.parametrize("width", range(30, 260, 7))
@pytest.mark.parametrize("total", [6, 100_000])
def test_line_never_wider_than_the_terminal(width: int, total: int) -> None:
    """Every width: one line, never longer than the terminal; count and ETA always."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(width=width, force_terminal=True, color_system=None)
    bar = Progress(console=console, auto_refresh=False)
    task = bar.add_task("jobs", total=total)
    bar.columns = line_columns(width, total, "failed 3 · running 2 · workers 12",
                               " · Enter: workers, q: quit")
    bar.update(task, completed=total // 2)
    with console.capture() as captured:
        console.print(bar.make_tasks_table(bar.tasks))
    lines = captured.get().rstrip("\n").split("\n")
    assert len(lines) == 1 and len(lines[0]) < width, lines
    assert f"{total // 2}/{total}" in lines[0] and "ETA" in lines[0]
    if width >= 200:
        assert "Enter: workers" in lines[0] and "workers 12" in lines[0]


@pytest.mark.parametrize("terminal", [200], indirect=True)
def test_ctrl_z_then_fg_keys_work_again(terminal: Terminal, tmp_path: Path) -> None:
    """Back in the foreground, a single key is read at once again (cbreak mode)."""
    terminal.type(gated_run(tmp_path))
    terminal.wait_screen("Enter: workers", "the live line with the key hint")
    terminal.key("C-z")
    terminal.wait_screen("Stopped", "Ctrl-Z stopping the run")
    terminal.type("fg")
    wait_for(lambda: "shoal run" in terminal.screen().rsplit("$ fg", 1)[-1], SCREEN_S, 0.1,
             "the run back in the foreground")
    terminal.key("q")  # no Enter: only read if the terminal is in cbreak mode again
    terminal.wait_screen("q pressed", "q read after fg")
    (tmp_path / "gate").touch()
    terminal.wait_screen("interrupted", "the run stopping after q")

"""shoal.session: the first run serves, later runs (on other machines) work, then exit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent("""
    import os, sys, time
    import shoal

    def simulate(seed):
        meet = os.environ.get("MEET")  # machines that must each run a call: wait for all
        if meet:
            open(os.path.join(meet, os.environ["MACHINE"]), "w").close()
            deadline = time.monotonic() + 90
            while len(os.listdir(meet)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.1)
        return seed * seed, os.environ["MACHINE"]

    with shoal.session("sweep", where=sys.argv[1], workers=1, progress=False) as ex:
        results = list(ex.map(simulate, range(int(sys.argv[2]))))
        machines = sorted({m for _, m in results})
        print("RESULTS", sum(v for v, _ in results), *machines, flush=True)
    print("AFTER THE SESSION", flush=True)
""")


def run_script(tmp_path: Path, where: Path, machine: str, n: int,
               meet: Path | None = None) -> subprocess.Popen[str]:
    """Run the sweep as `machine`; with `meet`, its calls wait until each of two machines
    ran one (so both work whatever their start-up takes on a loaded machine)."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    log = open(tmp_path / f"{machine}.log", "w")  # noqa: SIM115
    env = {**os.environ, "MACHINE": machine, "HOME": str(tmp_path / f"home-{machine}"),
           "SHOAL_HOST": f"{machine}.test"}  # two machines: their own names, no shared folder
    if meet is not None:
        meet.mkdir(exist_ok=True)
        env["MEET"] = str(meet)
    proc = subprocess.Popen([sys.executable, str(script), str(where), str(n)], stdout=log,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    log.close()
    return proc


def output(tmp_path: Path, machine: str) -> str:
    return (tmp_path / f"{machine}.log").read_text()


@pytest.fixture
def reap(request):
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_first_run_serves_and_a_second_machine_with_a_copy_of_the_status_works(tmp_path, reap):
    a, b = tmp_path / "a", tmp_path / "b"  # two machines that share no folder
    first = run_script(tmp_path, a, "alpha", 60, meet=tmp_path / "met-1")
    reap.append(first)
    wait_for(lambda: (a / "status.json").exists(), 60, message="the coordinator's status file")
    b.mkdir(mode=0o700)
    shutil.copy(a / "status.json", b / "status.json")  # what scp would do
    second = run_script(tmp_path, b, "beta", 60, meet=tmp_path / "met-1")
    reap.append(second)
    assert first.wait(timeout=90) == 0, output(tmp_path, "alpha")
    assert second.wait(timeout=60) == 0, output(tmp_path, "beta")
    expected = sum(i * i for i in range(60))
    assert f"RESULTS {expected} alpha beta" in output(tmp_path, "alpha")
    assert "AFTER THE SESSION" in output(tmp_path, "alpha")
    there = output(tmp_path, "beta")
    assert "working for it" in there and "session over" in there
    assert "RESULTS" not in there and "AFTER THE SESSION" not in there  # the body ran once
    from shoal.serve.locate import live_contact

    assert live_contact(a) is None  # the session ended; its status file is not trusted

    # The next sweep: same keys and address, so the copy on the other machine still works.
    again = run_script(tmp_path, a, "alpha", 40, meet=tmp_path / "met-2")
    reap.append(again)
    wait_for(lambda: live_contact(a) is not None, 60, message="the coordinator to come back")
    there_again = run_script(tmp_path, b, "beta", 40, meet=tmp_path / "met-2")
    reap.append(there_again)
    assert again.wait(timeout=90) == 0, output(tmp_path, "alpha")
    assert there_again.wait(timeout=60) == 0, output(tmp_path, "beta")
    assert f"RESULTS {sum(i * i for i in range(40))} alpha beta" in output(tmp_path, "alpha")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("where", ["this host, dead pid", "another host, no answer"])
def test_a_stale_status_file_is_not_trusted(tmp_path, reap, where):
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    from shoal.net.contact import Keys

    keys = Keys.new()
    stale = {"address": "tcp://127.0.0.1:9", "server_public": keys.server_public,
             "client_public": keys.client_public, "client_secret": keys.client_secret,
             "host": "alpha.test" if where.startswith("this") else "elsewhere.invalid",
             "pid": dead_pid(), "boot": "old", "started": 0.0, "queue": "sqlite:///x",
             "bound": "tcp://127.0.0.1:9"}
    (folder / "status.json").write_text(json.dumps(stale))
    (folder / "server.secret").write_text(keys.server_secret)
    proc = run_script(tmp_path, folder, "alpha", 5)
    reap.append(proc)
    assert proc.wait(timeout=90) == 0, output(tmp_path, "alpha")
    assert "RESULTS 30 alpha" in output(tmp_path, "alpha")
    assert "served at" in output(tmp_path, "alpha")


def test_a_coordinator_too_slow_for_one_ping_is_still_alive(tmp_path, reap):
    """A loaded machine can leave a live coordinator silent past the first ping (here: it
    is stopped for longer); it must not be taken for dead, or a second one would serve."""
    from shoal.serve import locate

    folder = tmp_path / "s"
    server = subprocess.Popen([sys.executable, "-m", "shoal", "serve", "sqlite://" + str(
        tmp_path / "q.sqlite"), "--status", str(folder)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "SHOAL_HOST": "elsewhere.test"})  # not this host: ping only
    reap.append(server)
    wait_for(lambda: locate.live_contact(folder), 60, message="the coordinator to answer")
    os.kill(server.pid, signal.SIGSTOP)
    waking = threading.Timer(locate.PING_S + 2, os.kill, (server.pid, signal.SIGCONT))
    waking.start()
    try:
        assert locate.live_contact(folder) is not None
    finally:
        waking.cancel()
        os.kill(server.pid, signal.SIGCONT)
    server.kill()
    server.wait()
    assert locate.live_contact(folder) is None  # gone for good: nothing listens, no long wait


def test_two_first_runs_started_together_elect_one_coordinator(tmp_path, reap):
    folder = tmp_path / "s"
    runs = [run_script(tmp_path, folder, name, 20) for name in ("alpha", "beta")]
    reap.extend(runs)
    for proc in runs:
        assert proc.wait(timeout=90) == 0
    texts = [output(tmp_path, name) for name in ("alpha", "beta")]
    assert sorted("served at" in t for t in texts) == [False, True]
    assert sum("RESULTS" in t for t in texts) == 1


def test_shoal_run_serve_first_run_serves_a_later_run_works_for_it(tmp_path, reap):
    a, b, out, meet = tmp_path / "a", tmp_path / "b", tmp_path / "out", tmp_path / "met"
    out.mkdir()
    meet.mkdir()
    # Each job waits (90 s at most) until both machines ran one, whatever their start-up takes.
    both = (f'touch {meet}/$MACHINE; i=0; while [ "$(ls {meet} | wc -l)" -lt 2 ] && '
            f'[ $i -lt 1800 ]; do sleep 0.05; i=$((i+1)); done')
    command = ["run", "--no-progress", "-j", "1",
               f'{both}; sleep 0.2; echo $MACHINE > {out}/{{}}', ":::", *map(str, range(30))]

    def start(where: Path, machine: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"{machine}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "run", "--serve", str(where),
                                 *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "MACHINE": machine,
                                                "SHOAL_HOST": f"{machine}.test"},
                                start_new_session=True)
        log.close()
        reap.append(proc)
        return proc

    first = start(a, "alpha")
    wait_for(lambda: (a / "status.json").exists(), 60, message="the coordinator's status file")
    b.mkdir(mode=0o700)
    shutil.copy(a / "status.json", b / "status.json")
    second = start(b, "beta")
    assert first.wait(timeout=90) == 0, output(tmp_path, "alpha")
    assert second.wait(timeout=60) == 0, output(tmp_path, "beta")
    assert "30 jobs: 30 done" in output(tmp_path, "alpha")
    ran_on = sorted({p.read_text().strip() for p in out.iterdir()})
    assert len(list(out.iterdir())) == 30 and ran_on == ["alpha", "beta"]
    assert "working for it" in output(tmp_path, "beta")

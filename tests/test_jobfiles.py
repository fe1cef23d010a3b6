"""Job files as people write them: real files in tmp_path, and real runs of what they say."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shoal.defaults import INTERPRETERS
from shoal.errors import MalformedJob, ShoalError
from shoal.jobfiles import JobFileSpec, is_job_file, load_job_file

PY = sys.executable


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path | str, worker_dir: Path | str, **kw: object) -> JobFileSpec:
    interpreters = kw.pop("interpreters", INTERPRETERS)
    return load_job_file(path, interpreters=interpreters, worker_dir=worker_dir)  # type: ignore[arg-type]


def malformed(path: Path | str, worker_dir: Path | str, *fragments: str) -> str:
    """Load, expect MalformedJob whose message starts with the path and holds each fragment."""
    with pytest.raises(MalformedJob) as info:
        load(path, worker_dir)
    message = str(info.value)
    assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", message), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def run(spec: JobFileSpec) -> str:
    done = subprocess.run(spec.command, cwd=spec.cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    """The directory `shoal work` was started in, apart from the jobs folder."""
    path = tmp_path / "worker"
    path.mkdir()
    return path


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs"
    path.mkdir()
    return path


# --- is_job_file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a.py", "b.sh", "c.m", "d.R", "e.r", "f.jl", "g.ini", "h.toml", "H.INI", "I.TOML", "C.M"],
)
def test_job_file_names(name: str) -> None:
    assert is_job_file(name, INTERPRETERS)


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.py",
        ".nfs000000000123",
        ".job.ini",
        "a.py~",
        "run.log",
        "a.tmp",
        "a.ini.part",
        "a.py.tmp",
        "A.LOG",
        "notes.txt",
        "Makefile",
        "trailingdot.",
        "",
    ],
)
def test_not_job_file_names(name: str) -> None:
    assert not is_job_file(name, INTERPRETERS)


def test_job_file_names_follow_the_queue_interpreters() -> None:
    custom = {".lua": ["lua"]}
    assert is_job_file("x.lua", custom)
    assert not is_job_file("x.py", custom)
    assert is_job_file("x.ini", custom) and is_job_file("x.toml", custom)


def test_is_job_file_looks_at_the_base_name_only() -> None:
    assert is_job_file("/shared/.queue/a.py", INTERPRETERS)
    assert not is_job_file("/shared/jobs/.a.py", INTERPRETERS)


# --- scripts ---------------------------------------------------------------------------


def test_script_command_and_cwd(jobs: Path, worker: Path) -> None:
    script = write(jobs / "sub" / "a.py", "print('hi')\n")
    spec = load(script, worker)
    assert spec == JobFileSpec(command=["python3", str(script)], cwd=str(jobs / "sub"), log=None)
    assert spec.params == {} and spec.timeout_s is None and spec.retries is None


def test_script_interpreter_argv_is_copied(jobs: Path, worker: Path) -> None:
    script = write(jobs / "model.m", "disp(1)\n")
    spec = load(script, worker)
    assert spec.command == ["octave", "--no-gui", "--quiet", str(script)]
    spec.command.append("x")
    assert INTERPRETERS[".m"] == ["octave", "--no-gui", "--quiet"]


def test_script_extension_case_falls_back(jobs: Path, worker: Path) -> None:
    script = write(jobs / "MODEL.M", "disp(1)\n")
    assert load(script, worker).command[0] == "octave"
    r_script = write(jobs / "fit.R", "1\n")
    assert load(r_script, worker, interpreters={".r": ["R", "-f"]}).command[:2] == ["R", "-f"]


def test_script_relative_path_becomes_absolute(
    tmp_path: Path, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "jobs" / "a.sh", "echo hi\n")
    monkeypatch.chdir(tmp_path)
    spec = load("jobs/a.sh", worker)
    assert spec.command == ["bash", str(tmp_path / "jobs" / "a.sh")]
    assert spec.cwd == str(tmp_path / "jobs")


def test_run_python_script(jobs: Path, worker: Path) -> None:
    script = write(
        jobs / "hello.py",
        """
        import os, sys
        print("hello from", os.path.basename(sys.argv[0]), "in", os.getcwd())
        """,
    )
    spec = load(script, worker, interpreters={".py": [PY]})
    assert run(spec).strip() == f"hello from hello.py in {jobs}"


def test_run_shell_script(jobs: Path, worker: Path) -> None:
    write(jobs / "data.txt", "42\n")
    script = write(jobs / "count.sh", 'echo "sum=$(( $(cat data.txt) + 1 )) args=$#"\n')
    assert run(load(script, worker)).strip() == "sum=43 args=0"


def test_empty_interpreter_runs_the_file_itself(jobs: Path, worker: Path) -> None:
    script = write(jobs / "self.sh", "#!/bin/sh\necho itself\n")
    script.chmod(0o755)
    spec = load(script, worker, interpreters={".sh": []})
    assert spec.command == [str(script)]
    assert run(spec).strip() == "itself"


# --- INI: what fjd documented ----------------------------------------------------------


READER = """
import configparser, json, os, sys
conf = configparser.ConfigParser(interpolation=None)
conf.optionxform = str
conf.read(sys.argv[-1], encoding="utf-8")
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "params": dict(conf["params"])}))
"""


def test_run_ini_job_reads_its_own_params(jobs: Path, worker: Path) -> None:
    import json

    write(worker / "reader.py", READER)
    job = write(
        jobs / "run1.ini",
        """
        [control]
        executable = python3 reader.py --fast
        logfile = out/run1.dat

        [params]
        Rate = 50%
        seed = 7
        """,
    )
    spec = load(job, worker)
    assert spec.command == ["python3", "reader.py", "--fast", str(job)]
    assert spec.cwd == str(worker)
    assert spec.log == str(jobs / "out" / "run1.dat")
    assert spec.params == {"Rate": "50%", "seed": "7"}
    seen = json.loads(run(spec))
    assert seen == {
        "argv": ["--fast", str(job)],
        "cwd": str(worker),
        "params": {"Rate": "50%", "seed": "7"},
    }


def test_ini_executable_path_is_relative_to_worker_dir(jobs: Path, worker: Path) -> None:
    write(worker / "bin" / "job.sh", '#!/bin/sh\necho "job file: $1"\n').chmod(0o755)
    job = write(jobs / "a.ini", "[control]\nexecutable = ./bin/job.sh\n")
    spec = load(job, worker)
    assert spec.command == [str(worker / "bin" / "job.sh"), str(job)]
    assert run(spec).strip() == f"job file: {job}"


def test_ini_bare_program_name_is_left_for_path(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = bash -c 'echo $0'\n")
    spec = load(job, worker)
    assert spec.command == ["bash", "-c", "echo $0", str(job)]
    assert run(spec).strip() == str(job)


def test_ini_executable_home_is_expanded(
    jobs: Path, worker: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = write(jobs / "a.ini", "[control]\nexecutable = ~/bin/sim --n 3\n")
    assert load(job, worker).command[0] == str(tmp_path / "home" / "bin" / "sim")


def test_ini_absolute_executable_and_quoting(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = /opt/x/sim \"two words\" '%d'\n")
    assert load(job, worker).command == ["/opt/x/sim", "two words", "%d", str(job)]


def test_ini_logfile_absolute_and_absent(jobs: Path, worker: Path, tmp_path: Path) -> None:
    absolute = write(jobs / "a.ini", f"[control]\nexecutable = x\nlogfile = {jobs}/l.txt\n")
    assert load(absolute, worker).log == str(jobs / "l.txt")
    outside = write(jobs / "o.ini", f"[control]\nexecutable = x\nlogfile = {tmp_path}/l.txt\n")
    malformed(outside, worker, "o.ini:3: logfile: ", "outside the job file's folder")
    allowed = load_job_file(outside, interpreters=INTERPRETERS, worker_dir=worker,
                            log_dirs=[str(tmp_path)])  # the queue's log_dirs
    assert allowed.log == str(tmp_path / "l.txt")
    absent = write(jobs / "b.ini", "[control]\nexecutable = x\n")
    assert load(absent, worker).log is None
    blank = write(jobs / "c.ini", "[control]\nexecutable = x\nlogfile =\n")
    assert load(blank, worker).log is None


def test_ini_without_params_has_empty_params(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = x\n[other]\nfree = 1\n")
    assert load(job, worker).params == {}


def test_ini_control_keys_ignore_case_but_params_keep_it(jobs: Path, worker: Path) -> None:
    job = write(
        jobs / "a.ini",
        """
        [control]
        Executable: sim
        TIMEOUT: 2.5
        [params]
        alphaBeta: 1
        URL = http://h/x#frag;not-a-comment ; a comment
        # a comment
        ; another
        """,
    )
    spec = load(job, worker)
    assert spec.command == ["sim", str(job)] and spec.timeout_s == 2.5
    assert spec.params == {"alphaBeta": "1", "URL": "http://h/x#frag;not-a-comment"}


def test_ini_fjd_section_alias(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[fjd]\nexecutable = python a_config_job.py\n[params]\np = 1\n")
    spec = load(job, worker)
    assert spec.command == ["python", "a_config_job.py", str(job)] and spec.params == {"p": "1"}


def test_ini_default_section_is_inherited(jobs: Path, worker: Path) -> None:
    job = write(
        jobs / "a.ini",
        "[DEFAULT]\nshared = yes\n[control]\nexecutable = x\n[params]\nown = 1\n",
    )
    assert load(job, worker).params == {"own": "1", "shared": "yes"}


def test_ini_byte_order_mark_is_accepted(jobs: Path, worker: Path) -> None:
    job = jobs / "bom.ini"
    job.write_bytes(b"\xef\xbb\xbf[control]\nexecutable = x\n")
    assert load(job, worker).command == ["x", str(job)]


def test_ini_shoal_fields(jobs: Path, worker: Path) -> None:
    (jobs / "scratch").mkdir()
    job = write(
        jobs / "a.ini",
        "[control]\nexecutable = x\ntimeout = 90\nretries = 2\ncwd = scratch\n",
    )
    spec = load(job, worker)
    assert (spec.timeout_s, spec.retries, spec.cwd) == (90.0, 2, str(jobs / "scratch"))
    assert isinstance(spec.timeout_s, float)


def test_ini_cwd_dot_is_the_job_folder(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = pwd\ncwd = .\n")
    spec = load(job, worker)
    assert spec.cwd == str(jobs)
    assert run(spec).strip() == str(jobs)


def test_worker_dir_may_be_relative(
    jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = write(jobs / "a.ini", "[control]\nexecutable = bin/x\n")
    spec = load(job, "worker")
    assert spec.cwd == str(tmp_path / "worker")
    assert spec.command[0] == str(tmp_path / "worker" / "bin" / "x")


# --- TOML ------------------------------------------------------------------------------


TOML_READER = """
import json, os, sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open(sys.argv[-1], "rb") as f:
    params = tomllib.load(f)["params"]
print(json.dumps({"cwd": os.getcwd(), "params": params}))
"""


def test_run_toml_job(jobs: Path, worker: Path) -> None:
    import json

    write(jobs / "reader.py", TOML_READER)
    job = write(
        jobs / "sweep.toml",
        f"""
        [control]
        executable = ["{PY}", "reader.py"]
        cwd = "."
        timeout = 30
        retries = 1
        logfile = "logs/sweep.log"

        [params]
        n = 3
        rate = 0.5
        fast = true
        name = "50% off"
        sizes = [1, 2]
        solver = {{ kind = "cg", tol = 1e-6 }}
        """,
    )
    spec = load(job, worker)
    expected = {
        "n": 3,
        "rate": 0.5,
        "fast": True,
        "name": "50% off",
        "sizes": [1, 2],
        "solver": {"kind": "cg", "tol": 1e-6},
    }
    assert spec.params == expected
    assert (spec.timeout_s, spec.retries) == (30.0, 1)
    assert spec.log == str(jobs / "logs" / "sweep.log")
    assert spec.command == [PY, "reader.py", str(job)]
    assert json.loads(run(spec)) == {"cwd": str(jobs), "params": expected}


def test_toml_executable_string_is_split(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.toml", '[control]\nexecutable = "scripts/sim.sh --n 4"\n')
    spec = load(job, worker)
    assert spec.command == [str(worker / "scripts" / "sim.sh"), "--n", "4", str(job)]
    assert spec.cwd == str(worker) and spec.params == {} and spec.log is None


# --- malformed job files ---------------------------------------------------------------


def test_malformed_is_a_shoal_error() -> None:
    assert issubclass(MalformedJob, ShoalError)


def test_message_names_the_file_as_given(
    tmp_path: Path, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "jobs" / "a.ini", "[control]\nlogfile = x.log\n")
    monkeypatch.chdir(tmp_path)
    assert malformed("jobs/a.ini", worker) == "jobs/a.ini:1: [control] has no 'executable'"


@pytest.mark.parametrize("name", ["gone.ini", "gone.toml", "gone.py"])
def test_missing_file(jobs: Path, worker: Path, name: str) -> None:
    malformed(jobs / name, worker, "no such file")


@pytest.mark.parametrize("name", ["adir.ini", "adir.toml", "adir.sh"])
def test_directory_is_unreadable(jobs: Path, worker: Path, name: str) -> None:
    (jobs / name).mkdir()
    malformed(jobs / name, worker, "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("name", ["locked.ini", "locked.py"])
def test_permission_denied(jobs: Path, worker: Path, name: str) -> None:
    path = write(jobs / name, "[control]\nexecutable = x\n")
    path.chmod(0)
    try:
        malformed(path, worker, "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize("name", ["denied.toml", "denied.R"])
def test_permission_denied_even_as_root(
    jobs: Path, worker: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores file modes, so make the OS refuse the open for this one path."""
    path = write(jobs / name, '[control]\nexecutable = "x"\n')
    real_open = os.open

    def refusing_open(target: object, *args: object, **kw: object) -> int:
        if os.fspath(target) == str(path):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(target, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    malformed(path, worker, "cannot be read (permission denied)")


@pytest.mark.parametrize("name", ["fifo.ini", "fifo.py"])
def test_fifo_is_refused_without_blocking(jobs: Path, worker: Path, name: str) -> None:
    os.mkfifo(jobs / name)
    malformed(jobs / name, worker, "is not a regular file")


@pytest.mark.parametrize("name", ["latin1.ini", "latin1.toml"])
def test_not_utf8(jobs: Path, worker: Path, name: str) -> None:
    path = jobs / name
    path.write_bytes(b"[control]\nexecutable = caf\xe9\n")
    malformed(path, worker, ":2: is not UTF-8 text (byte 0xe9 on line 2)")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("executable = x\n", "bad.ini:1: INI syntax error: text before the first [section] header"),
        ("[control]\nexecutable = x\nthis line has no equals\n",
         "bad.ini:3: INI syntax error: cannot parse 'this line has no equals'"),
        ("[control]\nexecutable = x\nexecutable = y\n",
         "bad.ini:3: INI syntax error: key 'executable'"),
        ("[control]\nexecutable = x\n[params]\n[params]\n",
         "bad.ini:4: INI syntax error: section [params]"),
        ("[control\nexecutable = x\n", "bad.ini:1: "),
    ],
)
def test_ini_syntax_error(jobs: Path, worker: Path, text: str, fragment: str) -> None:
    msg = malformed(write(jobs / "bad.ini", text), worker, "INI syntax error", fragment)
    assert "\n" not in msg


def test_ini_keys_differing_in_case_clash_in_control(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = x\nExecutable = y\n")
    malformed(job, worker, "given twice")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.ini", "[params]\nx = 1\n"),
        ("a.ini", ""),
        ("a.ini", "[Control]\nexecutable = x\n"),
        ("a.toml", "[params]\nx = 1\n"),
        ("a.toml", ""),
    ],
)
def test_missing_control(jobs: Path, worker: Path, name: str, text: str) -> None:
    malformed(write(jobs / name, text), worker, "has no [control]")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("a.ini", "[control]\nlogfile = x.log\n", "[control] has no 'executable'"),
        ("b.ini", "[control]\nexecutable =\n", ":2: executable: is empty"),
        ("c.ini", "[control]\nexecutable = '  '\n", ":2: executable: is empty"),
        ("d.ini", "[fjd]\nlogfile = x\n", "[fjd] has no 'executable'"),
        ("a.toml", "[control]\nretries = 1\n", "[control] has no 'executable'"),
        ("b.toml", '[control]\nexecutable = ""\n', ":2: executable: is empty"),
        ("c.toml", "[control]\nexecutable = []\n", ":2: executable: is empty"),
    ],
)
def test_missing_or_empty_executable(
    jobs: Path, worker: Path, name: str, text: str, fragment: str
) -> None:
    malformed(write(jobs / name, text), worker, fragment)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.ini", "[control]\nexecutable = python3 'unclosed\n"),
        ("a.toml", "[control]\nexecutable = 3\n"),
        ("b.toml", '[control]\nexecutable = ["x", 1]\n'),
    ],
)
def test_bad_executable(jobs: Path, worker: Path, name: str, text: str) -> None:
    malformed(write(jobs / name, text), worker, ":2: executable: ")


def test_toml_syntax_error_names_the_line(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.toml", '[control]\nexecutable = "x"\nretries = \n')
    malformed(job, worker, "a.toml:3: TOML syntax error: Invalid value (column 11)")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("a.ini", "abc"),
        ("a.ini", "10s"),
        ("a.ini", ""),
        ("a.ini", "-1"),
        ("a.ini", "0"),
        ("a.ini", "inf"),
        ("a.ini", "nan"),
        ("a.toml", '"10"'),
        ("a.toml", "true"),
        ("a.toml", "-0.5"),
        ("a.toml", "inf"),
        ("a.toml", "[1]"),
    ],
)
def test_bad_timeout(jobs: Path, worker: Path, name: str, value: str) -> None:
    exe = "x" if name.endswith(".ini") else '"x"'
    job = write(jobs / name, f"[control]\nexecutable = {exe}\ntimeout = {value}\n")
    malformed(job, worker, ":3: timeout: ", "not a ")


def test_good_timeout_forms(jobs: Path, worker: Path) -> None:
    ini = write(jobs / "a.ini", "[control]\nexecutable = x\ntimeout = 1e3\nretries = 0\n")
    assert (load(ini, worker).timeout_s, load(ini, worker).retries) == (1000.0, 0)
    toml = write(jobs / "a.toml", '[control]\nexecutable = "x"\ntimeout = 0.25\n')
    assert load(toml, worker).timeout_s == 0.25


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("a.ini", "-1"),
        ("a.ini", "1.5"),
        ("a.ini", "two"),
        ("a.ini", ""),
        ("a.toml", "1.5"),
        ("a.toml", "true"),
        ("a.toml", "-2"),
        ("a.toml", '"3"'),
    ],
)
def test_bad_retries(jobs: Path, worker: Path, name: str, value: str) -> None:
    exe = "x" if name.endswith(".ini") else '"x"'
    job = write(jobs / name, f"[control]\nexecutable = {exe}\nretries = {value}\n")
    malformed(job, worker, ":3: retries: ", "not a whole number >= 0")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('params = 3\n[control]\nexecutable = "x"\n', "[params] must be a table, not an integer"),
        ('params = "a=1"\n[control]\nexecutable = "x"\n', "[params] must be a table, not a string"),
        ('control = "x"\n', "[control] must be a table, not a string"),
        ('control = ["x"]\n', "[control] must be a table, not an array"),
    ],
)
def test_toml_tables_must_be_tables(jobs: Path, worker: Path, text: str, fragment: str) -> None:
    malformed(write(jobs / "a.toml", text), worker, fragment)


@pytest.mark.parametrize("name", ["notes.txt", "Makefile", "data.csv", "job.ini.bak"])
def test_unknown_extension(jobs: Path, worker: Path, name: str) -> None:
    path = write(jobs / name, "[control]\nexecutable = x\n")
    malformed(path, worker, "unknown extension", ".ini", ".py")


def test_unknown_control_key(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = x\ntimout = 5\n")
    malformed(job, worker, "a.ini:3: timout: unknown key in [control]", "known: executable")


def test_cwd_must_exist(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", "[control]\nexecutable = x\ncwd = nowhere\n")
    malformed(job, worker, "a.ini:3: cwd: ", str(jobs / "nowhere"), "is not an existing directory")


@pytest.mark.parametrize("key", ["logfile", "cwd"])
def test_toml_paths_must_be_strings(jobs: Path, worker: Path, key: str) -> None:
    job = write(jobs / "a.toml", f'[control]\nexecutable = "x"\n{key} = 5\n')
    malformed(job, worker, f"a.toml:3: {key}: 5 is an integer, not a path (a string)")


# --- inline comments, line numbers, and the checks at submit ----------------------------


def test_ini_inline_comments_after_values(jobs: Path, worker: Path) -> None:
    job = write(jobs / "a.ini", """
        [control]
        executable = python3 sim.py    ; relative to the worker's directory
        timeout = 90                   # seconds
        retries = 1 ; one more
        [params]
        url = http://h/x#frag;tail     ; a comment needs a space before it
        """)
    spec = load(job, worker)
    assert spec.command == ["python3", "sim.py", str(job)]
    assert (spec.timeout_s, spec.retries) == (90.0, 1)
    assert spec.params == {"url": "http://h/x#frag;tail"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.ini", "[control]\nexecutable = x\ntimeout = ten\n",
         "a.ini:3: timeout: 'ten' is not a number"),
        ("a.ini", "; head\n[control]\n\ntimout = 5\nexecutable = x\n",
         "a.ini:4: timout: unknown key in [control]"),
        ("a.ini", "[DEFAULT]\nretries = many\n[control]\nexecutable = x\n",
         "a.ini:2: retries: 'many' is not a whole number >= 0"),
        ("a.ini", "# jobs\n[params]\nx = 1\n[control]\nlogfile = x.log\n",
         "a.ini:4: [control] has no 'executable'"),
        ("a.toml", '[control]\nexecutable = "x"\n\nretries = "2"\n',
         "a.toml:4: retries: '2' is a string, not a whole number >= 0"),
        ("a.toml", 'control.executable = "x"\ncontrol.timeout = -3\n',
         "a.toml:2: timeout: -3 is not a positive number of seconds"),
    ],
)
def test_messages_name_the_line(
    jobs: Path, worker: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str,
    message: str,
) -> None:
    write(jobs / name, text)
    monkeypatch.chdir(jobs)
    assert malformed(name, worker).startswith(message)


def shoal_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "shoal", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_submit_refuses_a_malformed_job_file_and_submits_nothing(tmp_path: Path) -> None:
    write(tmp_path / "good.ini", "[control]\nexecutable = true\n")
    write(tmp_path / "bad.ini", "[control]\nexecutable = true\ntimeout = ten\n")
    done = shoal_cli("submit", "q", "good.ini", "bad.ini", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "shoal: error: bad.ini:3: timeout: 'ten' is not a number\n"
    assert not [p for p in (tmp_path / "q").glob("*") if p.name != ".shoal"]
    listed = shoal_cli("results", "q", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout == ""


def test_run_refuses_a_malformed_job_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.toml", '[control]\nexecutable = "touch ran"\nspeed = 3\n')
    done = shoal_cli("run", "--no-progress", "bad.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("shoal: error: bad.toml:3: speed: unknown key in [control]")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "ran").exists()


def test_submit_names_a_missing_job_file(tmp_path: Path) -> None:
    done = shoal_cli("submit", "q", "./nonexist.py", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "shoal: error: ./nonexist.py: no such file\n")


def test_submit_counts_every_bad_file(tmp_path: Path) -> None:
    for name in ("a.ini", "b.ini", "c.ini"):
        write(tmp_path / name, "[control]\n")
    done = shoal_cli("submit", "q", "a.ini", "b.ini", "c.ini", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("shoal: error: a.ini:1: [control] has no 'executable' "
                           "(and 2 more bad job files)\n")


def test_template_arguments_are_not_taken_for_job_files(tmp_path: Path) -> None:
    done = shoal_cli("submit", "q", "echo", ":::", "missing.py", "other.ini", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 new" in done.stdout

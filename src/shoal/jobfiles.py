"""Read the job files people write by hand and say how to run them.

Three kinds of file are job files (``is_job_file`` decides, ``load_job_file`` reads):

* **Scripts** (``.py``, ``.sh``, ``.m``, ``.R``, ``.jl`` ... whatever the queue's
  ``interpreters`` mapping lists). Command: the interpreter's argv plus the script's
  absolute path; working directory: the folder that holds the script. An empty
  interpreter argv means "run the file itself" (it then needs a shebang and +x).
  Extensions match exactly first, then case-insensitively (``.M`` finds ``.m``).
* **fjd-style INI** (``.ini``), see below.
* **TOML** (``.toml``): the same fields, in tables ``[control]`` and ``[params]``;
  params keep their TOML types, and ``executable`` may also be a list (an argv that
  is used as is, no splitting).

The fjd format
--------------
fjd ("file-based job distribution", Nicolas Höning, github.com/nhoening/fjd) is
where the INI format comes from. What its README and code said (read in the fjd
repository, README.md / README.rst of 2013-2014 and ``fjd/worker.py``):

* A job file is an INI file with a ``[control]`` section holding ``executable``
  (a command line, e.g. ``python example/ajob.py``) and ``logfile``; any other
  section (by convention ``[params]``) is free-form for the job itself. fjd had no
  other ``[control]`` fields.
* "Your executable gets this configuration file passed as a command line
  argument": the worker ran ``EXECUTABLE <absolute path of the job file>``.
* "If the paths are relative, the path to the executable should be relative to the
  workers working directory, whereas the path to the logfile should be relative to
  the jobs working directory."
* ``fjd/worker.py`` ran ``touch LOGFILE; EXECUTABLE JOBFILE`` through a shell
  without changing directory, so a job ran in the worker's own directory.
* Later fjd versions renamed the section to ``[fjd]``, moved ``logfile`` into
  ``[params]``, switched to ``RawConfigParser`` (no ``%`` interpolation) and ran
  non-INI job files directly as scripts.

What shoal does with INI files
------------------------------
* ``[control]`` is required; a file without it but with an ``[fjd]`` section is
  read from ``[fjd]`` instead (later fjd files keep working).
* ``executable`` is split with ``shlex`` (POSIX shell quoting) and run without a
  shell: no pipes, redirections, ``$VARS`` or globs (use a ``.sh`` job or
  ``bash -c '...'`` for those). Only the program (first word) is resolved: a name
  with a ``/`` in it is taken relative to ``worker_dir`` (the directory
  ``shoal work`` was started in, as fjd documented), ``~`` is expanded, and a bare
  name such as ``python3`` is left for the ``PATH`` lookup. The other words are
  passed as written, so relative ones are relative to the job's working directory.
  The job file's absolute path is appended as the last argument.
* ``logfile`` (optional) is relative to the job file's directory; without it
  ``JobFileSpec.log`` is None and the caller picks ``NAME.EXT.log`` beside the file.
  It must stay in that directory (not in its ``.shoal``) or in one of the queue's
  ``log_dirs`` (``trust.log_path_problem``): ``../../x`` or ``/etc/x`` is refused
  (``JobRefused``), so a job file dropped by someone else cannot write outside.
  Like that one, it is written only when the job succeeds and never over an existing
  file (queue/files.py); a running attempt writes its own log.
* No interpolation: ``%`` in values survives. Keys keep the case they are written
  in (configparser lowercases them by default); ``[control]`` keys are matched
  case-insensitively. Comments start with ``#`` or ``;``: a whole line, or the
  rest of a line after a value when whitespace comes before them
  (``timeout = 90   ; seconds``), so ``a;b`` or ``x#1`` inside a value survive.
  ``[DEFAULT]`` works as in configparser. Duplicate sections or keys are errors.

Fields shoal adds to ``[control]`` (both formats; unknown keys are errors, so a
typo such as ``timout`` is not silently ignored):

* ``timeout``: seconds (a finite number > 0) before the job is stopped.
* ``retries``: extra attempts after a failed run (an integer >= 0).
  (In INI these are text such as ``90`` or ``2.5``; in TOML they must be numbers,
  a quoted ``"90"`` is refused, as TOML values keep their types.)
* ``cwd``: the working directory, relative to the job file's directory; it must
  exist. Default: ``worker_dir``, which is where fjd ran its jobs and what makes a
  relative ``executable`` such as ``python3 sim.py`` find ``sim.py``.

Scheduling fields (also in ``[control]``; see shoal.queue.scheduling):

* ``after``: jobs this one waits for, comma separated: names of other job files in
  the same folder (``prepare.ini``), globs over them (``*.sim.ini``; the file itself is
  never among its own matches), or job ids. A name or glob that finds no job file is an
  error (in a drop-in folder: the job fails with it, the others run).
* ``priority``: a whole number, higher first (default 0).
* ``cpus``, ``gpus`` (whole numbers), ``mem`` (``16G``: K M G T, 1024-based),
  ``resource.NAME = AMOUNT`` (any named resource, e.g. ``resource.license = 1``; also a
  ``[resources]`` section or table), ``requires`` (labels the worker must have, comma
  separated).

Job files must be UTF-8 (a byte order mark is dropped). Every problem raises
``MalformedJob`` with one line that starts with the path as the caller gave it and,
where one line is to blame, its number, e.g. ``jobs/a.ini:3: timeout: 'ten' is not
a number``. ``check_job_files`` runs these checks on what a user submits, so a bad
file is refused at submit, not found failed later on a worker.
"""

from __future__ import annotations

import codecs
import configparser
import errno
import fnmatch
import math
import os
import re
import shlex
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from .defaults import JOBFILE_SUFFIXES
from .errors import JobRefused, MalformedJob
from .trust import log_path_problem

CONTROL_KEYS = ("executable", "logfile", "timeout", "retries", "cwd", "after", "priority",
                "cpus", "gpus", "mem", "requires", "resource.NAME")
RESOURCE_PREFIX = "resource."
_JOB_ID = re.compile(r"[0-9a-f]{16}")  # what content_id makes: an `after` entry may be one

# Names a drop folder may hold that are not jobs: editors' and copiers' temp files,
# our own logs, NFS's silly-renamed files (hidden, so caught by the dot rule).
_NOT_JOB_SUFFIXES = (".log", ".tmp", ".part")


@dataclass(frozen=True)
class JobFileSpec:
    """How to run one job file: argv (no shell), where, where its log goes, its params."""

    command: list[str]
    cwd: str
    log: str | None
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    retries: int | None = None
    priority: int | None = None  # None: not said (a submitter's --priority applies)
    after_files: tuple[str, ...] = ()  # absolute paths of the job files it waits for
    after_ids: tuple[str, ...] = ()  # job ids it waits for, as written
    needs: dict[str, float] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    def job_fields(self) -> dict[str, Any]:
        """The Job fields the file sets itself (priority, needs, labels), for the job
        built from it; `after` is resolved by the caller, which knows the file names."""
        found: dict[str, Any] = {}
        if self.priority is not None:
            found["priority"] = self.priority
        if self.needs:
            found["needs"] = self.needs
        if self.labels:
            found["labels"] = self.labels
        return found


@dataclass(frozen=True)
class _Source:
    """The file being read, kept together so every error can name it."""

    shown: str  # the path as the caller gave it, for messages
    path: Path  # absolute path of the job file
    worker_dir: str  # absolute
    section: str = "control"
    text_values: bool = False  # INI: every value is a string to convert; TOML: values are typed
    text: str = ""  # the file's text once read: where the line numbers come from
    interpreters: Mapping[str, Sequence[str]] = field(default_factory=dict)  # job file names
    # read the scheduling keys (after, priority, needs): at submit, not when a worker runs
    # the file (the job carries them, and an `after` file may be gone by then)
    scheduling: bool = True
    log_dirs: tuple[str, ...] = ()  # where a `logfile` may be besides the file's folder
    copied_to: Path | None = None  # the folder a submit copies the file into (its `logfile`
    # is checked as from there)

    def error(self, problem: str, line: int | None = None) -> MalformedJob:
        where = f"{self.shown}:{line}" if line else self.shown
        return MalformedJob(f"{where}: {problem}")

    def field_error(self, key: str, problem: str) -> MalformedJob:
        return self.error(f"{key}: {problem}", key_line(self.text, self.section, key))

    def section_error(self, problem: str) -> MalformedJob:
        return self.error(problem, key_line(self.text, None, self.section, header=True))


def is_job_file(name: str, interpreters: Mapping[str, Sequence[str]]) -> bool:
    """True for names shoal runs when dropped in a folder.

    That is a known script extension, .ini or .toml; never hidden files (starting
    with '.'), never temp/log names (*.log, *.tmp, *.part, *~, .nfs*), which are
    half-written copies, editor backups or our own output.
    """
    base = os.path.basename(name)
    if not base or base.startswith(".") or base.endswith("~"):
        return False
    suffix = os.path.splitext(base)[1]
    if suffix.lower() in _NOT_JOB_SUFFIXES:
        return False
    return suffix.lower() in JOBFILE_SUFFIXES or _interpreter_for(suffix, interpreters) is not None


def load_job_file(
    path: str | Path,
    *,
    interpreters: Mapping[str, Sequence[str]],
    worker_dir: str | Path,
    scheduling: bool = True,
    log_dirs: Sequence[str] = (),
    copied_to: Path | None = None,
) -> JobFileSpec:
    """Read a job file and say how to run it; MalformedJob naming the file for anything wrong.
    Without `scheduling`, its after/priority/needs keys are left unread (a worker running
    it: the job carries them since submit). `log_dirs`: where its `logfile` may be
    besides its own folder (the queue's `Trust.log_dirs`); `copied_to`: the folder a
    submit will copy it into, where its `logfile` must then stay."""
    src = _Source(
        shown=str(path),
        path=Path(os.path.abspath(path)),
        worker_dir=os.path.abspath(os.path.expanduser(worker_dir)),
        interpreters=interpreters,
        scheduling=scheduling,
        log_dirs=tuple(log_dirs),
        copied_to=copied_to,
    )
    suffix = src.path.suffix
    if suffix.lower() == ".ini":
        return _from_ini(src)
    if suffix.lower() == ".toml":
        return _from_toml(src)
    argv = _interpreter_for(suffix, interpreters)
    if argv is None:
        known = sorted({*interpreters, *JOBFILE_SUFFIXES})
        shown_suffix = f"'{suffix}'" if suffix else "none"
        raise src.error(f"unknown extension {shown_suffix} (known: {', '.join(known)})")
    return _from_script(src, argv)


def check_job_files(
    words: Sequence[str],
    interpreters: Mapping[str, Sequence[str]],
    worker_dir: str | Path = ".",
    log_dirs: Sequence[str] = (),
    copied_to: Path | None = None,
) -> None:
    """Refuse a submission that names a missing or malformed job file, before anything
    of it is submitted: one MalformedJob naming the first bad file, its line and problem.

    Words of a command template (any ``:::`` marker) are arguments, not files: skipped.
    """
    if any(word.startswith(":::") for word in words):
        return
    problems = []
    for word in words:
        if not is_job_file(word, interpreters):
            continue
        if not os.path.lexists(word):
            problems.append(f"{word}: no such file")
            continue
        try:
            load_job_file(word, interpreters=interpreters, worker_dir=worker_dir,
                          log_dirs=log_dirs, copied_to=copied_to)
        except MalformedJob as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - 1} more bad job files)" if len(problems) > 1 else ""
        raise MalformedJob(problems[0] + more)


def named_log(path: str | Path, log_dirs: Sequence[str] = ()) -> str | None:
    """The `logfile` an .ini/.toml job file names (absolute); None for a script, a file
    that names none, or one that cannot be read now (or names a place it may not)."""
    if Path(path).suffix.lower() not in JOBFILE_SUFFIXES:
        return None
    try:
        return load_job_file(path, interpreters={}, worker_dir=".", log_dirs=log_dirs).log
    except MalformedJob:
        return None


def _interpreter_for(
    suffix: str, interpreters: Mapping[str, Sequence[str]]
) -> Sequence[str] | None:
    """Exact match first so '.R' and '.r' may differ; else any key equal ignoring case."""
    if len(suffix) < 2:
        return None
    if suffix in interpreters:
        return interpreters[suffix]
    lowered = suffix.lower()
    return next((argv for ext, argv in interpreters.items() if ext.lower() == lowered), None)


# --- line numbers ----------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r"""^\s*["']?([^\s=:"'\[][^=:"']*?)["']?\s*[=:]""")


def key_line(text: str, section: str | None, key: str, *, header: bool = False) -> int | None:
    """The line (1-based) where `key` is set in `section` (None: before any header), or
    with `header`, the line of the header `[key]`; None if not found. INI keys inherited
    from [DEFAULT] are found there; TOML's dotted `section.key` at the top works too."""
    wanted = key.strip().lower()
    sections = {None if section is None else section.lower(), "default"}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        head = _HEADER.match(line)
        if head:
            current = head.group(1).strip().strip("\"'").lower()
            if header and current == wanted:
                return number
            continue
        found = _KEY.match(line)
        if header or not found:
            continue
        name = found.group(1).strip().lower()
        if current in sections and name == wanted:
            return number
        if current is None and section and name == f"{section.lower()}.{wanted}":
            return number
    return None


# --- reading ---------------------------------------------------------------------------


def _unreadable(src: _Source, exc: OSError) -> MalformedJob:
    """Turn an OS error into a message a person can act on."""
    if isinstance(exc, FileNotFoundError):
        return src.error("no such file")
    if isinstance(exc, IsADirectoryError):
        return src.error("is a directory, not a job file")
    if isinstance(exc, PermissionError):
        return src.error("cannot be read (permission denied)")
    return src.error(f"cannot be read: {exc.strerror or exc}")


def _check_readable(src: _Source) -> None:
    """A regular file we may open; never opens a FIFO in blocking mode (it would hang a worker)."""
    try:
        mode = os.stat(src.path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise src.error("is not a regular file")
        os.close(os.open(src.path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        raise _unreadable(src, exc) from None


def _read_text(src: _Source) -> str:
    """The file's text; UTF-8 only (a BOM is dropped), so params mean the same everywhere."""
    _check_readable(src)
    try:
        data = src.path.read_bytes()
    except OSError as exc:
        raise _unreadable(src, exc) from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"byte 0x{data[exc.start]:02x} on line {line}"
        raise src.error(f"is not UTF-8 text ({problem}); save it as UTF-8", line) from None


def _from_script(src: _Source, argv: Sequence[str]) -> JobFileSpec:
    """Interpreter + script; checked readable now so a typo fails at submit, not on a worker."""
    _check_readable(src)
    return JobFileSpec(
        command=[*argv, str(src.path)],
        cwd=str(src.path.parent),
        log=None,
        params={},
    )


# --- INI -------------------------------------------------------------------------------


def _ini_problem(exc: configparser.Error, text: str) -> tuple[int | None, str]:
    """configparser's messages span lines and repeat the file name: (line, one short line)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return exc.lineno, f"text before the first [section] header: {exc.line.strip()!r}"
    if isinstance(exc, (configparser.DuplicateSectionError, configparser.DuplicateOptionError)):
        what = (
            f"key '{exc.option}' in [{exc.section}]"
            if isinstance(exc, configparser.DuplicateOptionError)
            else f"section [{exc.section}]"
        )
        return exc.lineno, f"{what} is given twice"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno = exc.errors[0][0]  # its text is a repr on some Pythons: take ours
        lines = text.splitlines()
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        more = f" (and {len(exc.errors) - 1} more bad lines)" if len(exc.errors) > 1 else ""
        return lineno, f"cannot parse {line!r}{more}"
    return None, " ".join(str(exc).split())


def _parse_ini(src: _Source) -> configparser.ConfigParser:
    """Parse without interpolation and keeping key case, the two configparser defaults we
    drop; comments after a value need whitespace before them (module docstring)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        parser.read_string(src.text, source=src.shown)
    except configparser.Error as exc:
        line, problem = _ini_problem(exc, src.text)
        raise src.error(f"INI syntax error: {problem}", line) from None
    return parser


def _from_ini(src: _Source) -> JobFileSpec:
    src = replace(src, text=_read_text(src))
    parser = _parse_ini(src)
    section = next((s for s in ("control", "fjd") if parser.has_section(s)), None)
    if section is None:
        raise src.error("has no [control] section (it needs at least 'executable')")
    src = replace(src, section=section, text_values=True)
    control: dict[str, Any] = {}
    for key, value in parser.items(section):
        if key.lower() in control:
            raise src.field_error(key, "given twice (keys are case-insensitive here)")
        control[key.lower()] = value
    inherited = {key.lower() for key in parser.defaults()}
    params = dict(parser.items("params")) if parser.has_section("params") else {}
    if parser.has_section("resources"):
        control.update({RESOURCE_PREFIX + key: value for key, value
                        in parser.items("resources") if key.lower() not in inherited})
    return _build(src, control, params, ignore=inherited)


# --- TOML ------------------------------------------------------------------------------


_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def _from_toml(src: _Source) -> JobFileSpec:
    src = replace(src, text=_read_text(src))
    try:
        data = tomllib.loads(src.text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_WHERE.search(message)
        if where is None:
            raise src.error(f"TOML syntax error: {message}") from None
        problem = f"{message[:where.start()]} (column {where.group(2)})"
        raise src.error(f"TOML syntax error: {problem}", int(where.group(1))) from None
    except RecursionError:  # tomllib recurses per nesting level (found by the fuzzer)
        raise src.error("TOML syntax error: arrays or tables nested too deeply") from None
    control = data.get("control")
    if control is None:
        raise src.error("has no [control] table (it needs at least 'executable')")
    if not isinstance(control, dict):
        raise src.error(f"[control] must be a table, not {_type_name(control)}",
                        key_line(src.text, None, "control"))
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise src.error(f"[params] must be a table, not {_type_name(params)}",
                        key_line(src.text, None, "params"))
    control = dict(control)
    for table, where in ((control.pop("resource", None), "resource"),
                         (data.get("resources"), "resources")):
        if table is None:
            continue
        if not isinstance(table, dict):
            raise src.error(f"[{where}] must be a table, not {_type_name(table)}",
                            key_line(src.text, None, where))
        control.update({RESOURCE_PREFIX + key: value for key, value in table.items()})
    return _build(src, control, params)


def _type_name(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), f"a {type(value).__name__}")


# --- the [control] fields --------------------------------------------------------------


def _build(
    src: _Source,
    control: Mapping[str, Any],
    params: dict[str, Any],
    ignore: frozenset[str] | set[str] = frozenset(),
) -> JobFileSpec:
    """Validate [control] (same rules for INI strings and TOML values) and make the spec."""
    unknown = sorted(set(control) - set(CONTROL_KEYS) - set(ignore)
                     - {key for key in control if key.startswith(RESOURCE_PREFIX)},
                     key=lambda k: key_line(src.text, src.section, k) or 0)
    if unknown:
        others = f" (and {', '.join(repr(k) for k in unknown[1:])})" if unknown[1:] else ""
        raise src.field_error(unknown[0], f"unknown key in [{src.section}]{others} "
                                          f"(known: {', '.join(CONTROL_KEYS)})")
    if "executable" not in control:
        raise src.section_error(f"[{src.section}] has no 'executable'")
    return JobFileSpec(
        command=_command(src, control["executable"]),
        cwd=_cwd(src, control.get("cwd")),
        log=_logfile(src, control.get("logfile")),
        params=dict(params),
        timeout_s=_timeout(src, control.get("timeout")),
        retries=_retries(src, control.get("retries")),
        **(_scheduling(src, control) if src.scheduling else {}),
    )


def _command(src: _Source, raw: Any) -> list[str]:
    """shlex-split a string (a list is an argv already); resolve the program; add the job file."""
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise src.field_error("executable", f"cannot be split into words ({exc})") from None
    elif isinstance(raw, list) and all(isinstance(word, str) for word in raw):
        argv = list(raw)
    else:
        raise src.field_error("executable", "must be a command line or a list of strings")
    if not argv or not argv[0].strip():
        raise src.field_error("executable", "is empty (it names the program to run)")
    argv[0] = _program(argv[0], src.worker_dir)
    return [*argv, str(src.path)]


def _program(word: str, worker_dir: str) -> str:
    """A path (has a "/") is relative to the worker dir, as fjd said; a bare name uses PATH."""
    word = os.path.expanduser(word)
    if "/" not in word:
        return word
    return os.path.normpath(os.path.join(worker_dir, word))


def _relative_path(src: _Source, key: str, raw: Any, base: Path | None = None) -> str | None:
    """A path written in the job file, relative to the job file's directory (or `base`);
    None when blank."""
    if not isinstance(raw, str):
        raise src.field_error(key, f"{raw!r} is {_type_name(raw)}, not a path (a string)")
    text = raw.strip()
    if not text:
        return None
    return os.path.normpath(os.path.join(base or src.path.parent, os.path.expanduser(text)))


def _logfile(src: _Source, raw: Any) -> str | None:
    """Where the job file wants its log: only inside its folder or a log dir (trust.py)."""
    log = None if raw is None else _relative_path(src, "logfile", raw)
    if log is None:
        return None
    folder = src.copied_to or src.path.parent  # where the file runs from
    seen = _relative_path(src, "logfile", raw, folder) if src.copied_to else log
    problem = log_path_problem(seen or log, folder, src.log_dirs)
    if problem:
        raise JobRefused(str(src.field_error("logfile", problem)))
    return log


def _cwd(src: _Source, raw: Any) -> str:
    """Default is the worker's directory (fjd's behaviour); a given one must exist now."""
    cwd = None if raw is None else _relative_path(src, "cwd", raw)
    if cwd is None:
        return src.worker_dir
    if not os.path.isdir(cwd):
        raise src.field_error("cwd", f"{cwd} is not an existing directory")
    return cwd


def _not_a_number(src: _Source, raw: Any, wanted: str) -> str:
    """Why `raw` is refused; a quoted TOML number gets a hint, as it looks right."""
    if isinstance(raw, str) and not src.text_values:
        return f"{raw!r} is a string, not {wanted} (write it without quotes)"
    return f"{raw!r} is not {wanted}"


def _timeout(src: _Source, raw: Any) -> float | None:
    """Seconds, > 0 and finite: zero, negative or infinite timeouts are typos, not wishes."""
    if raw is None:
        return None
    value: float | None = None
    if isinstance(raw, str) and src.text_values:
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    if value is None:
        raise src.field_error("timeout", _not_a_number(src, raw, "a number"))
    if not math.isfinite(value) or value <= 0:
        raise src.field_error("timeout", f"{raw!r} is not a positive number of seconds")
    return value


def _retries(src: _Source, raw: Any) -> int | None:
    """A whole count >= 0; '1.5' or true are refused rather than guessed at."""
    if raw is None:
        return None
    value: int | None = None
    if isinstance(raw, str) and src.text_values:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    if value is None or value < 0:
        raise src.field_error("retries", _not_a_number(src, raw, "a whole number >= 0"))
    return value


# --- scheduling: after, priority, needs, requires ---------------------------------------


def _scheduling(src: _Source, control: Mapping[str, Any]) -> dict[str, Any]:
    """The JobFileSpec fields for when and where the job may run; needs.py reads the values."""
    from .errors import UsageError
    from .needs import parse_priority, resource_amount, split_list

    found: dict[str, Any] = {}
    try:
        if control.get("priority") is not None:
            found["priority"] = parse_priority("priority", control["priority"])
        needs = {}
        for key, value in control.items():
            name = key[len(RESOURCE_PREFIX):] if key.startswith(RESOURCE_PREFIX) else key
            if key.startswith(RESOURCE_PREFIX) or key in ("cpus", "gpus", "mem"):
                needs[name] = resource_amount(key, name, value)
        found["needs"] = needs
        if control.get("requires") is not None:
            found["labels"] = tuple(dict.fromkeys(split_list(control["requires"])))
    except UsageError as exc:
        key = str(exc).split(":", 1)[0]
        raise src.error(str(exc), key_line(src.text, src.section, key)) from None
    if control.get("after") is not None:
        found["after_files"], found["after_ids"] = _after(src, split_list(control["after"]))
    return found


def _after(src: _Source, entries: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Job files (absolute paths) and ids an `after` names; see the module docstring."""
    folder = src.path.parent
    files: dict[str, None] = {}
    ids: dict[str, None] = {}
    for entry in entries:
        if any(char in entry for char in "*?["):
            matched = sorted(str(folder / name) for name in _names(folder)
                             if fnmatch.fnmatchcase(name, entry) and name != src.path.name
                             and is_job_file(name, src.interpreters))
            if not matched:
                raise src.field_error("after", f"{entry!r} matches no job file in {folder}")
            files.update(dict.fromkeys(matched))
        elif (folder / entry).is_file():
            if not is_job_file(entry, src.interpreters):
                raise src.field_error("after", f"{entry}: not a job file")
            files[os.path.normpath(folder / entry)] = None
        elif _JOB_ID.fullmatch(entry):
            ids[entry] = None
        else:
            raise src.field_error("after", f"{entry}: no such job file in {folder}")
    return tuple(files), tuple(ids)


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []

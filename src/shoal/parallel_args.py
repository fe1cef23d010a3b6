"""The words after `shoal run`, read as GNU parallel reads them: options first, then the
command and its input sources.

Why: people switch from `parallel` by changing one word, so every parallel option shoal can
honour means what it means there, and every other one is refused with exit 2 and a pointer
before anything runs (parallel's own parser would otherwise hand `--sshlogin` to the shell
as a command). shoal's own options (--queue, --slots, --fresh, ...) sit beside them.
Parsing reads no file and opens no queue: `RunArgs.expand` reads the inputs, the caller
builds the jobs and `RunArgs.plan` says how to run them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from . import defaults
from .errors import UsageError
from .job import Job
from .runplan import Halt, RunPlan
from .templates import (
    Expanded,
    InputOptions,
    check_table_alone,
    expand_command_line,
    expand_table,
    has_inputs,
    read_text,
    split_lines,
)

DEFAULT_RUN_QUEUE = ".shoal-run"
J0_SLOTS = 250  # -j 0 ("as many as possible") runs at most this many jobs at once here


@dataclass
class RunArgs:
    """Everything `shoal run` was told, before any input is read."""

    words: list[str] = field(default_factory=list)  # the command and its ::: / :::: sections
    inputs: InputOptions = field(default_factory=InputOptions)
    tag: bool = False  # --tag (or --tagstring): tags are wanted
    queue_url: str = DEFAULT_RUN_QUEUE
    session: str | None = None
    bind: str | None = None
    dashboard: bool = False  # --dashboard: the web dashboard beside the run
    dashboard_bind: str | None = None  # --dashboard-bind HOST:PORT (implies --dashboard)
    table: str | None = None
    jobs_spec: str | None = None  # -j as typed: N, 0, +N, -N, N%
    slots: int | None = None  # --slots (shoal's: 0 = only other workers)
    show_progress: bool = True
    keep_order: bool = False
    line_buffer: bool = False
    dry_run: bool = False
    halt: Halt = field(default_factory=Halt)
    joblog: str | None = None
    resume: bool = False
    resume_failed: bool = False
    fresh: bool = False
    timeout_s: float | None = None
    attempts: int | None = None  # --retries N: N attempts in all (parallel's meaning)
    max_attempts: int = defaults.MAX_ATTEMPTS
    priority: int = 0  # --priority N: higher first, beside other runs' jobs in the queue
    help: bool = False

    def job_options(self) -> dict[str, Any]:
        """What every job of this run carries (Job fields)."""
        options: dict[str, Any] = {"max_attempts": self.max_attempts}
        if self.timeout_s is not None:
            options["timeout_s"] = self.timeout_s
        if self.attempts is not None:
            options["retries"] = self.attempts - 1
        if self.priority:
            options["priority"] = self.priority
        return options

    def uses_inputs(self) -> bool:
        """True when the words (or -a, --table) name where the arguments come from."""
        return bool(self.table or self.inputs.arg_files or has_inputs(self.words))

    def expand(self, stdin: IO[str] | None = None,
               base_dir: Path | None = None) -> list[Expanded] | None:
        """The command lines in input order, or None when the words are job files.

        With no input source named, standard input gives the arguments (GNU parallel);
        shoal's job files (`shoal run a.py b.sh`) are run when it is a terminal or empty.
        """
        if not self.words and not self.inputs.arg_files and not self.table:
            raise UsageError("nothing to run: give a command with ::: arguments (e.g. "
                             "shoal run echo ::: a b), or job files (see shoal run --help)")
        if self.table:
            check_table_alone(self.words, self.inputs.arg_files)
            if replace(self.inputs, tagstring=None) != InputOptions() or \
                    self.inputs.tagstring not in (None, "{}"):
                raise UsageError("--table cannot go with --colsep, -N, -n, --link, -q, -0 or "
                                 "--tagstring (a table's columns are its {names})")
            return [replace(e, tag=" ".join(e.params.values())) if self.tag else e
                    for e in expand_table(self.words, Path(self.table))]
        if self.uses_inputs():
            return expand_command_line(self.words, base_dir=base_dir, options=self.inputs)
        stdin = stdin if stdin is not None else sys.stdin
        lines = [] if _is_terminal(stdin) else split_lines(
            read_text(stdin), "\0" if self.inputs.null else "\n")
        if lines:
            return expand_command_line(self.words, base_dir=base_dir, options=self.inputs,
                                       stdin_lines=lines)
        if all(Path(word).is_file() for word in self.words):
            if self.tag:
                raise UsageError("--tag/--tagstring: job files have no arguments to tag; "
                                 "tags go with a command and its ::: arguments")
            return None
        where = "standard input is a terminal" if _is_terminal(stdin) else \
            "standard input gave no arguments"
        raise UsageError(f"{self.words[0]}: not a job file, and {where}: give the command's "
                         "arguments after ::: (e.g. shoal run echo ::: a b), :::: FILE, or a pipe")

    def plan(self, jobs: list[Job], expanded: Sequence[Expanded] | None) -> RunPlan:
        """How to run `jobs` (in input order; `expanded` gives their tags when asked)."""
        tags: dict[str, str] = {}
        if self.tag and expanded is not None:
            tags = {job.id: e.tag for job, e in zip(jobs, expanded, strict=True)}
        return RunPlan(
            jobs=jobs, slots=self.resolve_slots(len(jobs)), show_progress=self.show_progress,
            keep_order=self.keep_order, line_buffer=self.line_buffer, tags=tags,
            halt=self.halt, joblog=self.joblog, resume=self.resume,
            resume_failed=self.resume_failed, fresh=self.fresh,
        )

    def resolve_slots(self, n_jobs: int) -> int | None:
        """Local slots from --slots or -j (None: one per CPU)."""
        if self.slots is not None or self.jobs_spec is None:
            return self.slots
        return jobs_to_slots(self.jobs_spec, n_jobs)

    def dry_run_lines(self, expanded: Sequence[Expanded] | None) -> list[str]:
        """What `parallel --dry-run` prints: one command a job (tag and TAB first)."""
        if expanded is None:
            return list(self.words)
        return [f"{e.tag}\t{e.command}" if self.tag else e.command for e in expanded]


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- values


def bad_value(option: str, value: str, problem: str) -> UsageError:
    """A bad option value, worded as click words it for shoal's other commands."""
    return UsageError(f"Invalid value for '{option}': {value!r}: {problem}")


def _count(option: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise bad_value(option, value, f"give a whole number, at least {minimum}")
    return number


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(option: str, value: str) -> float:
    """Seconds from GNU parallel's durations: `30`, `1.5m`, `1d3.5h16.6m4s`."""
    if value.endswith("%"):
        raise bad_value(option, value, "a timeout relative to the median run time is "
                         "not supported; give seconds")
    parts = list(_DURATION_PART.finditer(value))
    if not value or "".join(p.group(0) for p in parts) != value:
        raise bad_value(option, value, "give seconds, e.g. 30, 1.5m or 2h")
    seconds = sum(float(p.group(1)) * _UNIT_S[p.group(2)] for p in parts)
    if seconds <= 0:
        raise bad_value(option, value, "must be more than 0 seconds")
    return seconds


_HALT_SHORT = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1", "-1": "soon,success=1",
               "-2": "now,success=1"}
_HALT_WHY = re.compile(r"(fail|success|done)=(\d+(?:\.\d+)?)(%?)")


def parse_halt(value: str) -> Halt:
    """GNU parallel's --halt: never, now|soon,fail=N|P%, now|soon,success=N, short forms."""
    text = _HALT_SHORT.get(value, value)
    if re.fullmatch(r"[1-9]\d?%", text):  # 1-99%: soon,fail=P%
        text = f"soon,fail={text}"
    if text == "never":
        return Halt()
    when, _, why = text.partition(",")
    match = _HALT_WHY.fullmatch(why)
    if when not in ("now", "soon") or match is None:
        raise bad_value("--halt", value, "give never, now|soon,fail=N|P% or "
                         "now|soon,success=N (e.g. --halt now,fail=1)")
    kind, number, percent = match.groups()
    if kind == "done":
        raise bad_value("--halt", value, "done=... is not supported; use fail= or success=")
    amount = float(number)
    if percent and kind == "success":
        raise bad_value("--halt", value, "success=P% is not supported; use success=N")
    if percent:
        if not 0 < amount <= 100:
            raise bad_value("--halt", value, "the percentage must be above 0 and at most 100")
        return Halt(when=when, **{f"{kind}_pct": amount})
    if amount != int(amount) or amount < 1:
        raise bad_value("--halt", value, "the number of jobs must be a whole number >= 1")
    return Halt(when=when, **{kind: int(amount)})


def jobs_to_slots(spec: str, n_jobs: int) -> int:
    """-j N, 0 (as many as there are jobs, up to J0_SLOTS), +N, -N (CPUs plus or minus N)
    or N% (of the CPUs), as GNU parallel counts them."""
    cpus = os.cpu_count() or 1
    if spec.endswith("%"):
        return max(1, int(cpus * _count("-j", spec[:-1], 1) / 100))
    if spec.startswith("+"):
        return cpus + _count("-j", spec[1:])
    if spec.startswith("-"):
        return max(1, cpus - _count("-j", spec[1:]))
    number = _count("-j", spec)
    return number if number else max(1, min(n_jobs, J0_SLOTS))


def _check_jobs_spec(value: str) -> str:
    if not re.fullmatch(r"[+-]?\d+|\d+%", value):
        raise bad_value("-j", value, "give N, 0, +N, -N or N% (a file of -j values is not "
                         "supported)")
    return value


# -------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One option `shoal run` honours: its names, its value's name (None: a flag), what it
    does to RunArgs, and its line in `shoal run --help`."""

    names: tuple[str, ...]
    metavar: str | None
    apply: Callable[[RunArgs, str], None]
    help: str


def _set(name: str, convert: Callable[[str], Any] = str) -> Callable[[RunArgs, str], None]:
    def apply(args: RunArgs, value: str) -> None:
        setattr(args, name, convert(value))
    return apply


def _flag(name: str, value: Any = True) -> Callable[[RunArgs, str], None]:
    def apply(args: RunArgs, _value: str) -> None:
        setattr(args, name, value)
    return apply


def _inputs(**change: Callable[[str], Any] | Any) -> Callable[[RunArgs, str], None]:
    """An option that changes InputOptions: a callable gets the value, anything else is set."""
    def apply(args: RunArgs, value: str) -> None:
        new = {k: (v(value, args) if callable(v) else v) for k, v in change.items()}
        args.inputs = replace(args.inputs, **new)
    return apply


def _tagstring(value: str, args: RunArgs) -> str:
    args.tag = True
    return value


def _tag(_value: str, args: RunArgs) -> str:
    args.tag = True
    return args.inputs.tagstring or "{}"


def _retries(value: str) -> int:
    if value.strip() == "0":
        raise UsageError("--retries 0 (GNU parallel: try forever) is not supported; give the "
                         "number of attempts in all, e.g. --retries 3")
    return _count("--retries", value, 1)


def _priority(value: str) -> int:
    from .needs import parse_priority

    return parse_priority("--priority", value)


def _dashboard_bind(args: RunArgs, value: str) -> None:
    args.dashboard, args.dashboard_bind = True, value


def _resume_failed(args: RunArgs, _value: str) -> None:
    args.resume = args.resume_failed = True


OPTIONS: list[Option] = [
    Option(("-j", "--jobs", "-P", "--max-procs"), "N", _set("jobs_spec", _check_jobs_spec),
           "Jobs at once here: N, 0 (all, up to 250), +N/-N (CPUs +/- N), N%."),
    Option(("-k", "--keep-order"), None, _flag("keep_order"),
           "Print outputs in input order."),
    Option(("--no-keep-order",), None, _flag("keep_order", False), "Undo -k."),
    Option(("--tag",), None, _inputs(tagstring=_tag),
           "Put the job's arguments and a TAB before each output line."),
    Option(("--tagstring",), "STR", _inputs(tagstring=_tagstring),
           "Put STR (replacement strings work) and a TAB before each output line."),
    Option(("--line-buffer", "--lb"), None, _flag("line_buffer"),
           "Print output lines as they come, not a job's output at its end."),
    Option(("--group",), None, _flag("line_buffer", False), "A job's output at its end "
           "(the default)."),
    Option(("--dry-run",), None, _flag("dry_run"),
           "Print the commands, run nothing, create no queue."),
    Option(("--halt", "--halt-on-error"), "WHEN", _set("halt", parse_halt),
           "never, now|soon,fail=N|P%, now|soon,success=N (also 0 1 2 -1 -2, P%)."),
    Option(("--joblog", "--jl"), "FILE", _set("joblog"),
           "Write GNU parallel's job log (TAB separated columns) to FILE."),
    Option(("--resume",), None, _flag("resume"),
           "Skip the jobs the --joblog shows as run."),
    Option(("--resume-failed",), None, _resume_failed,
           "Like --resume, and run again those that failed."),
    Option(("--retries",), "N", _set("attempts", _retries),
           "Run a failing job at most N times in all."),
    Option(("--timeout",), "SECONDS", _set("timeout_s", lambda v: parse_duration("--timeout", v)),
           "Kill a job after SECONDS (also 1.5m, 2h, 1d)."),
    Option(("--colsep", "-C"), "REGEX", _inputs(colsep=lambda v, _a: v),
           "Split each argument into columns {1} {2} ..."),
    Option(("-N", "--max-replace-args"), "N",
           _inputs(max_args=lambda v, _a: _count("-N", v), context=True),
           "N arguments per command line, as {1}..{N}."),
    Option(("-n", "--max-args"), "N",
           _inputs(max_args=lambda v, _a: _count("-n", v), context=False),
           "N arguments per command line."),
    Option(("--link", "--xapply"), None, _inputs(link=True),
           "Read the input sources side by side (shorter ones start over)."),
    Option(("-q", "--quote"), None, _inputs(quote=True),
           "Quote the command's words (GNU parallel's -q; the queue is --queue)."),
    Option(("-0", "--null"), None, _inputs(null=True),
           "Arguments in files and on standard input end with NUL, not newline."),
    Option(("-a", "--arg-file"), "FILE",
           _inputs(arg_files=lambda v, a: (*a.inputs.arg_files, v)),
           "Read arguments from FILE (an input source; repeat for more)."),
    Option(("--eta", "--bar", "--progress"), None, _flag("show_progress"),
           "Accepted: shoal's live bar (with ETA) is on anyway."),
    Option(("--will-cite",), None, lambda _a, _v: None, "Accepted and ignored."),
    Option(("--queue",), "URL", _set("queue_url"),
           f"Queue to use (default {DEFAULT_RUN_QUEUE}); other machines may join it."),
    Option(("--slots",), "N", _set("slots", lambda v: _count("--slots", v)),
           "Local slots (0 = only other workers: `shoal work QUEUE`)."),
    Option(("--no-progress",), None, _flag("show_progress", False), "No live progress bar."),
    Option(("--serve",), "NAME|DIR", _set("session"),
           "First run serves the jobs over TCP; the same command elsewhere works for it."),
    Option(("--bind",), "URL", _set("bind"), "With --serve: where to listen."),
    Option(("--dashboard",), None, _flag("dashboard"),
           "Watch the run in a browser: prints the dashboard's URL (needs shoal[web])."),
    Option(("--dashboard-bind",), "HOST:PORT", _dashboard_bind,
           "Where the dashboard listens (default 127.0.0.1:8265 or a free port)."),
    Option(("--table",), "FILE", _set("table"),
           "CSV or JSON table: one job per row, {column} in the command."),
    Option(("--max-attempts",), "N", _set("max_attempts", lambda v: _count("--max-attempts",
                                                                          v, 1)),
           f"Attempts before a job whose worker keeps dying fails (default "
           f"{defaults.MAX_ATTEMPTS})."),
    Option(("--fresh",), None, _flag("fresh"), "Run every job again, done ones too."),
    Option(("--priority",), "N", _set("priority", _priority),
           "Higher runs first, before other jobs in the same --queue (default 0)."),
    Option(("-h", "--help"), None, _flag("help"), "Show this and exit."),
]
_BY_NAME = {name: option for option in OPTIONS for name in option.names}

# Pointers for GNU parallel options shoal run refuses (any other is refused plainly).
_HIRE = "use `shoal hire` (or `shoal work QUEUE` on the other machines)"
_REPL = "use the standard replacement strings {} {.} {/} {//} {/.} {#} {n}"
_POINTERS: dict[str, str] = {
    **dict.fromkeys(["-S", "--sshlogin", "--slf", "--sshloginfile", "--ssh", "--sshdelay",
                     "--ssh-delay", "-M", "--controlmaster", "--transfer", "--transferfile",
                     "--tf", "--return", "--cleanup", "--trc", "--basefile", "--bf",
                     "--onall", "--nonall", "--filter-hosts", "--hostgroups", "--hgrp",
                     "--workdir", "--wd"], _HIRE),
    **dict.fromkeys(["--results", "--res", "--files", "--output-as-files",
                     "--outputasfiles"],
                    "every job's output is kept in the queue: see `shoal results QUEUE` and "
                    "`shoal logs QUEUE JOB`"),
    **dict.fromkeys(["-u", "--ungroup"], "use --line-buffer"),
    **dict.fromkeys(["-X", "-m", "--xargs"], "use -N N for several arguments per command"),
    **dict.fromkeys(["-I", "-i", "--replace", "--er", "--extensionreplace", "--bnr",
                     "--basenamereplace", "--dnr", "--dirnamereplace", "--bner",
                     "--basenameextensionreplace", "--seqreplace", "--slotreplace",
                     "--rpl", "--plus"], _REPL),
    **dict.fromkeys(["-t", "-v", "--verbose"], "use --dry-run to see the commands"),
    **dict.fromkeys(["--retry-failed"], "use --resume-failed with --joblog, or "
                    "`shoal retry QUEUE --failed`"),
    **dict.fromkeys(["--header", "--csv"], "use --table FILE (a CSV with a header row)"),
    **dict.fromkeys(["--env", "--record-env"], "jobs get the environment of `shoal run`"),
    **dict.fromkeys(["-V", "--version"], "use `shoal --version`"),
    **dict.fromkeys(["--shuf"], "jobs are claimed roughly in input order"),
    **dict.fromkeys(["--pipe", "--spreadstdin", "--pipe-part", "--pipepart", "--block",
                     "--block-size", "--round-robin", "--round", "--cat", "--fifo"],
                    "shoal runs one job per argument, it does not split standard input"),
}


def _refuse(name: str) -> UsageError:
    pointer = _POINTERS.get(name)
    hint = f"; {pointer}" if pointer else ""
    return UsageError(f"{name} is not supported by shoal run{hint} (see shoal run --help)")


def _take_value(name: str, attached: str | None, words: Sequence[str], i: int
                ) -> tuple[str, int]:
    """The option's value: `--opt=V`, `-oV`, or the next word."""
    if attached is not None:
        return attached, i + 1
    if i + 1 >= len(words):
        raise UsageError(f"{name} needs a value (see shoal run --help)")
    return words[i + 1], i + 2


def _apply(args: RunArgs, name: str, attached: str | None, words: Sequence[str],
           i: int) -> int:
    option = _BY_NAME.get(name)
    if option is None:
        raise _refuse(name)
    if option.metavar is None:
        if attached:
            raise UsageError(f"{name} takes no value (see shoal run --help)")
        option.apply(args, "")
        return i + 1
    value, after = _take_value(name, attached, words, i)
    option.apply(args, value)
    return after


def _apply_short(args: RunArgs, word: str, words: Sequence[str], i: int) -> int:
    """`-k`, `-j4`, `-kj4`: flags may be bundled, a value ends the bundle."""
    for pos in range(1, len(word)):
        name = "-" + word[pos]
        option = _BY_NAME.get(name)
        if option is None:
            raise _refuse(name)
        rest = word[pos + 1:]
        if option.metavar is not None:
            return _apply(args, name, rest or None, words, i)
        option.apply(args, "")
    return i + 1


def parse_run_words(words: Sequence[str]) -> RunArgs:
    """RunArgs from the words after `shoal run`; options stop at the first other word."""
    args = RunArgs()
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            name, eq, attached = word.partition("=")
            i = _apply(args, name, attached if eq else None, words, i)
        else:
            i = _apply_short(args, word, words, i)
    args.words = list(words[i:])
    _check(args)
    return args


def _check(args: RunArgs) -> None:
    if (args.resume or args.resume_failed) and not args.joblog:
        flag = "--resume-failed" if args.resume_failed else "--resume"
        raise UsageError(f"{flag} needs --joblog FILE (without it, running the "
                         "same command again already skips the jobs that are done)")
    if args.fresh and (args.resume or args.resume_failed):
        raise UsageError("--fresh runs every job again: it cannot go with --resume")
    if args.dry_run and args.session:
        raise UsageError("--dry-run runs nothing, so --serve has nothing to serve")


def run_help() -> str:
    """`shoal run --help`: what it does and every option it honours."""
    lines = [
        "Usage: shoal run [OPTIONS] COMMAND [ARGS] (::: ARGS | :::: FILES | :::+ ...)...",
        "       shoal run [OPTIONS] JOB_FILE...",
        "       ... | shoal run [OPTIONS] COMMAND [ARGS]",
        "",
        "  Run COMMAND once per argument here, like GNU parallel, and wait for all of it.",
        "  Jobs go into a queue (--queue) that other machines may join (`shoal work`);",
        "  the same command again skips what is done and retries what failed.",
        "  Replacement strings: {} {.} {/} {//} {/.} {#} {%} {n} {n.} ... ({%}: the job",
        "  slot, as $SHOAL_SLOT when the job runs). A job's stdout comes on stdout, its",
        "  stderr on stderr. Other GNU parallel options are refused with a pointer.",
        "",
        "Options:",
    ]
    for option in OPTIONS:
        names = ", ".join(option.names) + (f" {option.metavar}" if option.metavar else "")
        lines.append(f"  {names:<30} {option.help}" if len(names) <= 30
                     else f"  {names}\n  {'':<30} {option.help}")
    return "\n".join(lines)

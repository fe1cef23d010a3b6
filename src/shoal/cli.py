"""The `shoal` command: parses what the user typed and calls the modules that do the work."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__, defaults
from .errors import ShoalError, UsageError, os_error_line
from .queue import open_queue

if TYPE_CHECKING:  # the rest is imported by the commands that use it: start-up stays light
    from .job import Job
    from .queue.base import Queue
    from .web.server import Beside
    from .worker import Worker

DEFAULT_SERVE_STATUS = "~/.shoal/servers/default"
CLI_PATIENCE_S = 10.0  # how long status/results/logs wait for a coordinator that is silent
PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


class Seconds(click.ParamType):
    """A duration in seconds: finite and > 0. --timeout 0 would kill every job at once,
    --lease 0 reap every job as it starts, inf and nan overflow clocks; all are refused
    with the option named (leave --timeout out for no limit). A unit may follow: 90s,
    10m, 2h."""

    name = "seconds"
    UNITS = {"s": 1, "m": 60, "h": 3600}

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        text = str(value).strip()
        unit = self.UNITS.get(text[-1:].lower()) if len(text) > 1 else None
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r}: give a finite number of seconds > 0", param, ctx)
        return seconds


SECONDS = Seconds()


class ShoalGroup(click.Group):
    """Turns every ShoalError and OSError into one line `shoal: error: ...` and exit status 2;
    a traceback only with `shoal --debug`. Click's own usage errors print as click prints
    them (also exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BrokenPipeError, KeyboardInterrupt):
            sys.exit(130)
        except (ShoalError, OSError) as exc:
            if ctx.params.get("debug"):
                raise
            line = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            if isinstance(exc, OSError) and exc.filename is None:  # e.g. ENOSPC from write(2)
                line = f"{self._queue_of(ctx) or 'shoal ' + str(ctx.invoked_subcommand)}: {line}"
            click.echo(f"shoal: error: {line}", err=True)
            sys.exit(2)

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        ctx.meta["shoal.words"] = list(args)  # for _queue_of, should the command fail
        return super().resolve_command(ctx, args)

    def _queue_of(self, ctx: click.Context) -> str | None:
        """The queue the failed command was given (its arguments parsed again)."""
        words = ctx.meta.get("shoal.words", [])
        try:
            name, command, rest = super().resolve_command(ctx, words)
            assert name is not None and command is not None
            parsed = command.make_context(name, rest, parent=ctx, resilient_parsing=True)
        except (click.ClickException, AssertionError):
            return None
        return parsed.params.get("queue") or parsed.params.get("queue_url")


@click.group(cls=ShoalGroup)
@click.version_option(__version__, prog_name="shoal")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error, not one line.")
def main(verbose: int, debug: bool) -> None:
    """Run many jobs in parallel over many machines with almost nothing to set up."""
    import logging

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def job_options(func: Any) -> Any:
    """Options shared by `submit` and `run` that shape each job."""
    for option in reversed([
        click.option("--timeout", "timeout_s", type=SECONDS, metavar="SECONDS",
                     help="Kill a job after SECONDS (> 0; default: no limit)."),
        click.option("--retries", "attempts", type=click.IntRange(min=1), metavar="N",
                     help="Attempts in all for a job that fails, as GNU parallel counts "
                     "them (--retries 3: at most 3 runs; default: 1)."),
        click.option("--max-attempts", type=click.IntRange(min=1),
                     default=defaults.MAX_ATTEMPTS, show_default=True,
                     help="Attempts before a job whose worker keeps dying is failed."),
        click.option("--table", type=click.Path(exists=True, dir_okay=False),
                     help="CSV or JSON table: one job per row, {column} in the template."),
    ]):
        func = option(func)
    return func


def build_jobs(queue: Queue, words: Sequence[str], table: str | None,
               **options: Any) -> list[Job]:
    """Jobs from job files, or from a command template with ::: inputs or a table."""
    from .submission import is_template, jobs_from_files, jobs_from_template

    if not words:
        raise UsageError("nothing to run: give job files, or a command with ::: arguments")
    options = {k: v for k, v in options.items() if v is not None}
    if "attempts" in options:  # the command line counts attempts; a Job, the extra ones
        options["retries"] = options.pop("attempts") - 1
    if table or is_template(words):
        return jobs_from_template(words, table=table, **options)
    if all(Path(word).is_file() for word in words):
        return jobs_from_files(queue, words, **options)
    raise UsageError(f"{words[0]}: not a job file; for a command give its inputs with ::: "
                     "(e.g. shoal run echo ::: a b) or --table FILE")


def schedule_options(func: Any) -> Any:
    """`submit`'s options for when and where its jobs run (read by submission.py, so a bad
    value is one line naming the option)."""
    for option in reversed([
        click.option("--after", multiple=True, metavar="JOB",
                     help="Wait until JOB is done (#N, id or name; repeat for more)."),
        click.option("--priority", metavar="N", help="Higher runs first (default 0)."),
        click.option("--cpus", metavar="N", help="Cores each job takes (default 1)."),
        click.option("--gpus", metavar="N", help="GPUs each job takes."),
        click.option("--mem", metavar="SIZE", help="Memory each job takes: 512M, 16G "
                     "(K M G T, 1024-based)."),
        click.option("--resource", "resources", multiple=True, metavar="NAME=N",
                     help="Any named resource each job takes, e.g. license=1 (repeat)."),
        click.option("--requires", multiple=True, metavar="LABEL",
                     help="Run only on workers with this label (shoal work --label; repeat)."),
    ]):
        func = option(func)
    return func


@main.command(context_settings=PASS_THROUGH)
@click.argument("queue")
@job_options
@schedule_options
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def submit(queue: str, words: tuple[str, ...], table: str | None, after: tuple[str, ...],
           priority: str | None, cpus: str | None, gpus: str | None, mem: str | None,
           resources: tuple[str, ...], requires: tuple[str, ...], **options: Any) -> None:
    """Add jobs to QUEUE: job files, or COMMAND ::: ARGS (GNU parallel syntax), or a table."""
    from .jobfiles import check_job_files
    from .submission import scheduling_from_options

    ctx = click.get_current_context()
    known = {name for param in ctx.command.params for name in getattr(param, "opts", ())}
    if words and words[0].split("=", 1)[0] in known:  # `submit Q --after X cmd` would
        raise UsageError(f"{words[0]}: options go before QUEUE "  # run `--after X cmd`
                         f"(shoal submit [OPTIONS] QUEUE ...)")
    q = open_queue(queue)
    options.update(scheduling_from_options(q, after=after, priority=priority, cpus=cpus,
                                           gpus=gpus, mem=mem, resources=resources,
                                           requires=requires))
    check_job_files(() if table else words, q.settings.interpreters,  # before any copy
                    log_dirs=q.settings.trust.log_dirs,
                    copied_to=q.settings.root if q.keeps_job_files else None)
    jobs = build_jobs(q, words, table, **options)
    new = q.submit(jobs)
    click.echo(f"submitted {len(new)} new job(s) to {q.url} "
               f"({len(jobs) - len(new)} already there)")


@main.command()
@click.argument("queue")
@click.option("--slots", "-j", type=click.IntRange(min=1),
              help="Most jobs at once (default: --cpus); without --cpus, also the cpus.")
@click.option("--cpus", type=int, help="Cores the jobs share (default: this machine's); "
              "a job takes 1 unless it asks for more.")
@click.option("--gpus", help="GPUs to hand out: device ids (0,1) or a count "
              "(default: CUDA_VISIBLE_DEVICES, else nvidia-smi -L).")
@click.option("--mem", help="Memory the jobs share, e.g. 64G (default: this machine's).")
@click.option("--resource", "named", multiple=True, metavar="NAME=AMOUNT",
              help="A named resource jobs may ask for, e.g. license=2 (repeatable).")
@click.option("--label", "labels", multiple=True,
              help="A label jobs may require, e.g. bigmem (repeatable).")
@click.option("--pin", is_flag=True, help="Pin each job to its own cores (sched_setaffinity).")
@click.option("--drain", is_flag=True, help="Exit when no job is pending or running.")
@click.option("--on-stop", type=click.Choice(["finish", "release"]), default="finish",
              show_default=True,
              help="On SIGINT/SIGTERM: let running jobs finish, or release them at once.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many jobs.")
@click.option("--idle-timeout", "idle_timeout_s", type=SECONDS, envvar="SHOAL_IDLE_TIMEOUT",
              help="Exit after SECONDS with no job running (autoscaled workers: "
              "`shoal hire --max` sets it through SHOAL_IDLE_TIMEOUT).")
@click.option("--until", metavar="TIME", help="When this machine must be handed back (seconds "
              "since the epoch, or 2026-12-03T18:30:00): start only jobs expected to end "
              "before then (their timeout, else the median of their like), then leave.")
@click.option("--lease", "lease_s", type=SECONDS, help="Lease seconds (default: the queue's).")
@click.option("--grace", "grace_s", type=click.FloatRange(min=0), default=defaults.KILL_GRACE_S,
              show_default=True, help="Seconds between SIGTERM and SIGKILL when a job is "
              "stopped (timeout, lost lease, fire --now).")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="Write this worker's own log to DIR/HOST-PID.log (shoal hire sets it).")
@click.option("--quiet", "-q", is_flag=True,
              help="No line per finished job, only warnings and errors.")
def work(queue: str, slots: int | None, cpus: int | None, gpus: str | None, mem: str | None,
         named: tuple[str, ...], labels: tuple[str, ...], pin: bool, drain: bool,
         on_stop: str, max_jobs: int | None, idle_timeout_s: float | None, until: str | None,
         lease_s: float | None, grace_s: float, log_dir: str | None, quiet: bool) -> None:
    """Run jobs from QUEUE (a folder: also every job file dropped into it) while their
    needs fit in this worker's cpus, GPUs, memory and resources; a line on stderr for
    each job that ends (done, failed, retry)."""
    import logging

    from .net.contact import is_contact_file
    from .worker import Worker
    from .worker.resources import Resources
    from .worker.walltime import parse_until

    end = parse_until(until) if until is not None else None
    resources = Resources.detect(cpus=cpus, slots=slots, gpus=gpus, mem=mem,
                                 resources=named, labels=labels, pin=pin)
    if logging.getLogger().level > logging.INFO and not quiet:
        logging.getLogger("shoal").setLevel(logging.INFO)
    if "://" not in queue and not Path(queue).is_dir() and not is_contact_file(queue):
        raise UsageError(f"{queue}: no such folder (create it, or submit jobs to it first)")
    options = {"lease_s": lease_s} if lease_s else {}
    log_path = log_to_file(log_dir) if log_dir else None
    show_job_lines(quiet, log_path)
    worker = Worker(open_queue(queue, **options), slots=slots, drain=drain, on_stop=on_stop,
                    max_jobs=max_jobs, kill_grace_s=grace_s, log_path=log_path,
                    resources=resources, idle_timeout_s=idle_timeout_s, until=end)
    install_stop_signals(worker)
    worker.run()


def show_job_lines(quiet: bool, log_path: str | None) -> None:
    """The worker's line per ended job (logger shoal.jobs): bare on stderr, timed in the
    worker's log file; none with --quiet."""
    import logging

    lines = logging.getLogger("shoal.jobs")
    lines.propagate = False
    for old in [h for h in lines.handlers if getattr(h, "shoal_job_lines", False)]:
        lines.removeHandler(old)  # from an earlier `work` in this process (tests)
    if quiet:
        lines.setLevel(logging.WARNING)
        return
    lines.setLevel(logging.INFO)
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [plain]
    if log_path:
        timed = logging.FileHandler(log_path)
        timed.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        handlers.append(timed)
    for handler in handlers:
        handler.shoal_job_lines = True  # type: ignore[attr-defined]
        lines.addHandler(handler)


def log_to_file(log_dir: str) -> str:
    """Send shoal's log lines to LOG_DIR/HOST-PID.log; return its path."""
    import logging

    from .fsutil import HOST

    folder = Path(os.path.expanduser(log_dir)).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{HOST}-{os.getpid()}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("shoal").setLevel(logging.INFO)
    return str(path)


@main.command()
@click.argument("queue", required=False)
@click.option("--bind", help="Where to listen: tcp://HOST:PORT (default: this machine only, "
              "tcp://127.0.0.1 on a free port, or the last run's address; "
              "tcp://0.0.0.0:PORT lets other machines in).")
@click.option("--status", "status_dir", default=DEFAULT_SERVE_STATUS, show_default=True,
              help="Directory (0700) for status.json: the address and the client key.")
@click.option("--advertise", help="Host name or address clients should use (default: this "
              "host's name when listening on all interfaces).")
@click.option("--lease", "lease_s", type=SECONDS, help="Lease seconds (default: 30).")
@click.option("--dashboard", is_flag=True, help="Also serve the web dashboard of QUEUE "
              "(prints its URL; needs: pip install 'shoal[web]').")
@click.option("--dashboard-bind", metavar="HOST:PORT", help="Where the dashboard listens "
              "(implies --dashboard; default 127.0.0.1:8265 or a free port).")
def serve(queue: str | None, bind: str | None, status_dir: str, advertise: str | None,
          lease_s: float | None, dashboard: bool, dashboard_bind: str | None) -> None:
    """Serve QUEUE (default: a SQLite file on local disk) to workers and clients over TCP.

    Clients need the status file: `shoal work STATUS_DIR` here, or copy its
    status.json to another machine and point shoal at the copy there.
    """
    import logging
    import signal

    from .serve import locate

    if logging.getLogger().level > logging.INFO:
        logging.getLogger("shoal").setLevel(logging.INFO)
    folder = Path(os.path.expanduser(status_dir))
    url = queue or locate.default_queue(folder)
    options = {"lease_s": lease_s} if lease_s else {}
    beside = dashboard_listening(dashboard, dashboard_bind)
    coordinator = locate.serve(open_queue(url, **options), folder, bind=bind,
                               advertise=advertise)
    click.echo(f"shoal: serving {coordinator.queue.url} at {coordinator.address}\n"
               f"status: {folder / 'status.json'} (private: it holds the client key)\n"
               f"workers here: shoal work {folder}; elsewhere copy status.json there first",
               err=True)

    def stop(_signum: int, _frame: object) -> None:
        if beside is None:
            coordinator.stop()
        else:  # the dashboard first, while the coordinator still answers its last calls
            threading.Thread(target=lambda: (beside.stop(), coordinator.stop()),
                             daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # the dashboard is a client of this coordinator: its actions wake parked claims and
    # reach watchers as anyone's do
    with dashboard_running(beside, lambda: open_queue(str(folder)), coordinator.queue.url,
                           close_queue=True):
        coordinator.serve_forever()


def dashboard_listening(wanted: bool, bind: str | None) -> Beside | None:
    """`--dashboard` (or `--dashboard-bind`): the web extra checked and the port taken
    before the command starts (one line if not); None without them."""
    if not wanted and bind is None:
        return None
    from .web import require_web

    require_web("--dashboard")
    from .web.server import Beside

    return Beside(bind)


def dashboard_running(beside: Beside | None, open_: Callable[[], Queue], url: str, *,
                      close_queue: bool = False) -> contextlib.AbstractContextManager:
    """The dashboard `dashboard_listening` made, serving while the block runs (its URL on
    stderr: stdout is the jobs' output); nothing if there is none."""
    if beside is None:
        return contextlib.nullcontext()
    return beside.start(open_, url, close_queue=close_queue,
                        say=lambda line: click.echo(line, err=True))


def install_stop_signals(worker: Worker) -> None:
    """First SIGINT/SIGTERM: graceful stop; the second: release running jobs and exit."""
    import logging
    import signal

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("shoal.worker").warning(
            "worker %s: %s received, stopping", worker.id, signal.Signals(signum).name)
        worker.stop(signum=signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class RawWords(click.Command):
    """Hands every word after the command to its function untouched (`--` and `--help`
    included): `shoal run` reads them itself, as GNU parallel does (parallel_args.py)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["words"] = tuple(args)
        return []


@main.command(cls=RawWords, add_help_option=False)
def run(words: tuple[str, ...]) -> None:
    """Run COMMAND ::: ARGS (or job files) here, like GNU parallel (see shoal run --help)."""
    from .parallel_args import parse_run_words, run_help

    args = parse_run_words(words)
    if args.help:
        click.echo(run_help())
        return
    expanded = args.expand()
    if args.dry_run:  # like parallel --dry-run: nothing runs, no queue is created
        for line in args.dry_run_lines(expanded):
            click.echo(line)
        return
    beside = dashboard_listening(args.dashboard, args.dashboard_bind)
    if args.session is None:
        queue = open_queue(args.queue_url)
        with dashboard_running(beside, lambda: queue, queue.url):
            code = run_in(queue, args, expanded)
        sys.exit(code)
    from . import sessions

    session = args.session
    folder = sessions.session_dir(Path(session).name, session if "/" in session else None)
    coordinator = sessions.lead(folder, folder.name, bind=args.bind)
    if coordinator is None:  # a later run: work for the first one
        sessions.work_for(folder, args.resolve_slots(len(expanded or ())))
        sys.exit(0)
    queue = open_queue(str(folder))
    try:
        with dashboard_running(beside, lambda: queue, queue.url):
            code = run_in(queue, args, expanded)
        sessions.dismiss_workers(queue)
    finally:
        queue.close()
        coordinator.stop()
    sys.exit(code)


def run_in(queue: Queue, args: Any, expanded: Any) -> int:
    """Build the run's jobs for `queue` and carry out its plan; the exit status."""
    from .runwatch import run_plan
    from .submission import jobs_from_expanded, jobs_from_files

    options = args.job_options()
    if expanded is None:
        jobs = jobs_from_files(queue, args.words, **options)
    else:
        jobs = jobs_from_expanded(expanded, stderr_apart=True, **options)  # as parallel
    return run_plan(queue, args.plan(jobs, expanded))


@main.command()
@click.argument("queue")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: counts, workers, failure reasons, progress.")
@click.option("--watch", is_flag=True,
              help="Show it again every second until Ctrl-C (redrawn in place on a terminal).")
def status(queue: str, fmt: str, watch: bool) -> None:
    """Counts of jobs by state, workers alive and lost, why jobs failed."""
    from .views import show_status, watch_status

    q = open_existing(queue)
    if watch:
        watch_status(q, fmt)
    else:
        show_status(q, fmt)


@main.command()
@click.argument("queue")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="csv: one column per parameter; json: one object a line.")
@click.option("--state", "states", metavar="STATE[,STATE...]",
              help="Only jobs in these states (pending, running, done, failed, cancelled).")
@click.option("--limit", type=click.IntRange(min=0), help="At most N rows (the first in order).")
def results(queue: str, fmt: str, states: str | None, limit: int | None) -> None:
    """One row per job in submission order: state, exit status, reason, timings, log."""
    from .views import parse_states, show_results

    wanted = parse_states(states)
    show_results(open_existing(queue), fmt, states=wanted, limit=limit)


@main.command()
@click.argument("queue")
@click.option("--state", "states", metavar="STATE[,STATE...]",
              help="Only jobs in these states (default: done, failed, cancelled).")
def output(queue: str, states: str | None) -> None:
    """Print every finished job's output (its log) in submission order, as `shoal run -k`
    prints it: the whole sweep's output again, from any machine that sees QUEUE."""
    from .views import parse_states, show_outputs

    show_outputs(open_existing(queue), parse_states(states))


@main.command()
@click.argument("queue")
@click.argument("job")
@click.option("--attempt", type=click.IntRange(min=1), help="The log of attempt N (1 = first).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing the running job's log as it grows, until the job ends.")
def logs(queue: str, job: str, attempt: int | None, follow: bool) -> None:
    """Print the log of JOB: '#N' (its number, quoted for the shell), its id or its name;
    a running job's log so far."""
    from .views import show_log

    if follow and attempt is not None:
        raise UsageError("--follow and --attempt: give one or the other")
    show_log(open_existing(queue), job, attempt=attempt, follow=follow)


@main.command()
@click.argument("queue")
@click.argument("jobs", nargs=-1)
@click.option("--failed", is_flag=True, help="Retry every failed job.")
@click.option("--cancelled", is_flag=True, help="Retry every cancelled job.")
@click.option("--all", "every", is_flag=True,
              help="Retry every final job (done ones only with --force).")
@click.option("--force", is_flag=True,
              help="Run done jobs again too (their results are set aside).")
@click.option("--keep-order", is_flag=True,
              help="Retried jobs take their place in input order again (default: they go "
              "before every job not run yet of their priority).")
def retry(queue: str, jobs: tuple[str, ...], failed: bool, cancelled: bool, every: bool,
          force: bool, keep_order: bool) -> None:
    """Put final jobs back to pending: failed and cancelled ones, done ones with --force.
    They run first (before jobs not run yet of the same priority) unless --keep-order;
    jobs that waited for them (ended without running) wait again."""
    from .job import State
    from .queue.scheduling import ended_by_dependency
    from .views import resolve_jobs

    if not jobs and not (failed or cancelled or every):
        raise UsageError("name jobs to retry, or give --failed / --cancelled / --all")
    q = open_existing(queue)
    named = resolve_jobs(q, jobs) if jobs else []
    wanted = {state for state, asked in ((State.FAILED, failed or every),
                                         (State.CANCELLED, cancelled or every),
                                         (State.DONE, every and force)) if asked}
    ids = [status.job.id for status in named if status.state.final]
    done_left = [status.job.name or status.job.id for status in named
                 if status.state is State.DONE and not force]
    unfinished = [status.job.name or status.job.id for status in named
                  if not status.state.final]
    done_count = 0
    followers = []  # ended because a job they wait for did: they come back with it
    for result in q.results() if wanted or every else ():
        if result.state in wanted and ended_by_dependency(result):
            followers.append(result.job_id)
        elif result.state in wanted:
            ids.append(result.job_id)
        elif result.state is State.DONE and every and not force:
            done_count += 1
    moved = q.retry(list(dict.fromkeys(ids)), force=force, first=not keep_order)
    back = [job_id for job_id, state in q.states(followers).items() if not state.final]
    click.echo(f"{len(moved)} job(s) back to pending"
               + (f", {len(back)} waiting for them again" if back else ""))
    if done_left:
        click.echo(f"left alone: {len(done_left)} named job(s) are done "
                   f"({_listed(done_left)}); add --force to run them again", err=True)
    if done_count:
        click.echo(f"left alone: {done_count} done job(s); add --force to run them again "
                   "too", err=True)
    if unfinished:
        click.echo(f"left alone: {len(unfinished)} named job(s) not finished yet "
                   f"({_listed(unfinished)})", err=True)


def _listed(names: list[str], most: int = 3) -> str:
    """A few names, and how many more."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


@main.command()
@click.argument("queue")
@click.option("--force", is_flag=True,
              help="Even while workers are running (their running jobs are stopped).")
def clean(queue: str, force: bool) -> None:
    """Remove every job, result and log from QUEUE to start a sweep afresh.

    Your job files stay: a folder queue's job files are picked up again and run again
    by the next `shoal work`. Refused while workers are running, unless --force."""
    q = open_existing(queue)
    removed = q.purge(force=force)
    click.echo(f"{removed} job(s) removed from {q.url}")


@main.command()
@click.argument("queue")
@click.argument("jobs", nargs=-1, required=True)
def cancel(queue: str, jobs: tuple[str, ...]) -> None:
    """Cancel jobs that are pending or running (running ones are killed)."""
    from .views import resolve_jobs

    q = open_existing(queue)
    ids = [status.job.id for status in resolve_jobs(q, jobs)]
    click.echo(f"{len(q.cancel(ids))} job(s) cancelled")


def slurm_options(func: Any) -> Any:
    """`shoal hire --slurm`: what each worker asks of Slurm (sbatch's flags of that name)."""
    for option in reversed([
        click.option("--slurm", is_flag=True,
                     help="Hire through Slurm: COUNT workers as one job array (sbatch)."),
        click.option("--partition", help="Slurm partition (sbatch --partition)."),
        click.option("--time", "walltime", metavar="TIME",
                     help="Each worker's time limit, e.g. 2:00:00 (sbatch --time)."),
        click.option("--cpus-per-task", type=click.IntRange(min=1),
                     help="CPUs per worker (sbatch --cpus-per-task)."),
        click.option("--mem", help="Memory per worker, e.g. 8G (sbatch --mem)."),
        click.option("--gres", help="Generic resources per worker, e.g. gpu:1 (sbatch --gres)."),
        click.option("--account", help="Slurm account to charge (sbatch --account)."),
        click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="ARG",
                     help="Any other sbatch flag, passed as it is (repeat), e.g. --qos=low."),
    ]):
        func = option(func)
    return func


def hired_queue(queue: str) -> str:
    """The queue as hired workers name it: a folder or a contact file by absolute path."""
    from .net.contact import contact_path, is_contact_file

    if is_contact_file(queue):
        return str(contact_path(queue).absolute())
    return queue if "://" in queue else str(Path(queue).absolute())


def scale_options(func: Any) -> Any:
    """`shoal hire --slurm --max N`: autoscaling, a loop in the foreground."""
    for option in reversed([
        click.option("--max", "most", type=click.IntRange(min=1),
                     help="Autoscale (with --slurm): up to N workers while jobs wait, in "
                     "the foreground until Ctrl-C; workers leave when idle."),
        click.option("--min", "least", type=click.IntRange(min=0),
                     help="With --max: workers kept even when no job waits (they stay "
                     "until fired). Default: 0."),
        click.option("--idle-timeout", "idle_timeout_s", type=SECONDS,
                     help="With --max: a worker above --min leaves after SECONDS without a "
                     "job (e.g. 90s, 5m). Default: 60."),
        click.option("--every", "every_s", type=SECONDS,
                     help="With --max: seconds between looks at the queue. Default: 10."),
    ]):
        func = option(func)
    return func


@main.command()
@click.argument("queue")
@click.argument("count", type=click.IntRange(min=1), required=False)
@click.option("--host", "hosts", multiple=True, metavar="HOST[:SLOTS]",
              help="Where to hire (repeat; default: here). user@host works.")
@click.option("--hosts", "hosts_file", type=click.Path(exists=True, dir_okay=False),
              help="machines.json (name -> [speed, cores]) or one `HOST [SLOTS]` a line.")
@click.option("--slots", type=click.IntRange(min=1), help="Slots per worker (default: CPUs).")
@click.option("--ssh", "ssh_command", default="ssh -o BatchMode=yes", show_default=True,
              help="How to reach remote hosts (your ssh config, agent and keys apply).")
@click.option("--remote-python", default="python3", show_default=True,
              help="The Python on remote hosts that has shoal installed.")
@slurm_options
@scale_options
def hire(queue: str, count: int | None, hosts: tuple[str, ...], hosts_file: str | None,
         slots: int | None, ssh_command: str, remote_python: str, most: int | None,
         least: int | None, idle_timeout_s: float | None, every_s: float | None,
         **slurm: Any) -> None:
    """Start COUNT (default 1) detached workers on QUEUE, here or on each --host (over
    SSH), or as Slurm jobs (--slurm); with --slurm --max N, keep up to N Slurm workers
    while jobs wait (autoscaling)."""
    import shlex
    from dataclasses import replace

    from .hire import default_log_dir
    from .net.contact import contact_path, is_contact_file
    from .providers.ssh import NotHired, SshProvider, parse_host, read_hosts_file

    targets = [parse_host(h) for h in hosts]
    if hosts_file:
        targets += read_hosts_file(hosts_file)
    status_file = None
    if is_contact_file(queue):  # a coordinator's: remote hosts get a copy of the file
        status_file = contact_path(queue).absolute()
    queue = hired_queue(queue)
    if "://" not in queue and status_file is None and not Path(queue).is_dir():
        raise UsageError(f"{queue}: no such folder (create it, or submit jobs to it first)")
    log_dir = default_log_dir(queue)
    check_scaling(count, most, slurm["slurm"], {"--min": least, "--idle-timeout":
                                                 idle_timeout_s, "--every": every_s})
    if slurm.pop("slurm"):
        if targets or slots:
            raise UsageError("--slurm: Slurm places the workers and sizes them; "
                             "drop --host/--hosts/--slots (use --cpus-per-task)")
        options = slurm_options_of(slurm)
        if most is not None:
            from .providers.scaler import Policy

            policy = Policy(most=most, least=least or 0, per_worker=options.cpus_per_task or 1)
            scale_slurm(queue, log_dir, options, policy, idle_timeout_s or 60.0, every_s or 10.0)
        else:
            hire_slurm(queue, count or 1, log_dir, options)
        return
    given = [name for name, value in slurm.items() if value]
    if given:
        flag = {"walltime": "time", "sbatch_args": "sbatch-arg"}.get(given[0], given[0])
        raise UsageError(f"--{flag.replace('_', '-')} is a Slurm option: add --slurm")
    provider = SshProvider(queue, log_dir, ssh=shlex.split(ssh_command),
                           python=remote_python, status_file=status_file)
    failed = 0
    for host in targets or [parse_host("localhost")]:
        try:
            handles = provider.start(count or 1, replace(host, slots=slots or host.slots))
        except NotHired as exc:
            failed += 1
            click.echo(f"{host.name}: not hired: {exc}", err=True)
            continue
        pids = ", ".join(h.id.rpartition(":")[2] for h in handles)
        click.echo(f"hired {len(handles)} worker(s) on {host.name} (pids {pids})")
    click.echo(f"worker logs: {log_dir}; see them with: shoal workers {queue}")
    if failed:
        sys.exit(1)


def check_scaling(count: int | None, most: int | None, slurm: bool,
                  scaling: dict[str, float | None]) -> None:
    """The autoscaling options make sense together (one line naming the option if not)."""
    given = [name for name, value in scaling.items() if value is not None]
    if most is None:
        if given:
            raise UsageError(f"{given[0]} is an autoscaling option: add --max N (and --slurm)")
        return
    if not slurm:
        raise UsageError("--max: autoscaling works with --slurm only (so far)")
    if count is not None:
        raise UsageError(f"COUNT ({count}) and --max: give one (--max scales on its own)")
    if (scaling["--min"] or 0) > most:
        raise UsageError(f"--min {scaling['--min']:g} is more than --max {most}")


def slurm_options_of(slurm: dict[str, Any]) -> Any:
    """The sbatch flags `shoal hire --slurm` was given, as SlurmOptions."""
    from .providers.slurm import SlurmOptions

    return SlurmOptions(partition=slurm["partition"], time=slurm["walltime"],
                        cpus_per_task=slurm["cpus_per_task"], mem=slurm["mem"],
                        gres=slurm["gres"], account=slurm["account"],
                        extra=tuple(slurm["sbatch_args"]))


def hire_slurm(queue: str, count: int, log_dir: str, options: Any) -> None:
    """`shoal hire --slurm`: COUNT workers as one job array."""
    from .providers.slurm import SlurmProvider

    handles = SlurmProvider(queue, log_dir).start(count, options)
    click.echo(f"submitted {count} Slurm worker(s): job array {handles[0].id.split('_')[0]} "
               f"(tasks {handles[0].id} to {handles[-1].id})")
    click.echo(f"worker logs: {log_dir}; see them with: shoal workers {queue}")


def scale_slurm(queue: str, log_dir: str, options: Any, policy: Any, idle_timeout_s: float,
                every_s: float) -> None:
    """`shoal hire --slurm --max N`: the autoscaler in the foreground until SIGINT/SIGTERM;
    the workers it started stay (those above --min leave when idle)."""
    import signal
    import threading
    from dataclasses import replace

    from .providers.scaler import Scaler
    from .providers.slurm import SlurmProvider

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    scaler = Scaler(open_existing(queue), SlurmProvider(queue, log_dir), policy,
                    elastic=replace(options, idle_timeout_s=idle_timeout_s), steady=options,
                    say=lambda line: click.echo(f"shoal hire: {line}", err=True))
    click.echo(f"autoscaling {queue}: {policy.least} to {policy.most} Slurm worker(s), idle "
               f"ones leave after {idle_timeout_s:g} s; Ctrl-C stops this (not the "
               f"workers); worker logs: {log_dir}", err=True)
    scaler.run(every_s, stop)
    click.echo("shoal hire: stopped autoscaling; workers above --min leave when idle, "
               f"`shoal fire --slurm {queue}` stops them all", err=True)


@main.command()
@click.argument("queue")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def workers(queue: str, fmt: str) -> None:
    """Every worker: host, pid, slots, running jobs, jobs done, heartbeat age, state."""
    from .views import show_workers

    show_workers(open_existing(queue), "json" if fmt == "json" else "text")


@main.command()
@click.argument("queue")
@click.argument("worker_ids", nargs=-1)
@click.option("--all", "everyone", is_flag=True, help="Every live worker.")
@click.option("--host", "hosts", multiple=True, help="Every live worker on HOST.")
@click.option("--now", is_flag=True, help="Release running jobs and stop at once.")
@click.option("--slurm", is_flag=True, help="Every Slurm worker of QUEUE (shoal hire --slurm): "
              "those not started are cancelled; the others scancelled if still there after "
              "--wait.")
@click.option("--wait", "wait_s", type=SECONDS, help="Seconds the workers get to leave; "
              "then hired ones still there are stopped the hard way (scancel; SIGTERM "
              "twice, then SIGKILL, over ssh). Default: 60 with --slurm, else do not wait.")
@click.option("--ssh", "ssh_command", default="ssh -o BatchMode=yes", show_default=True,
              help="How to reach the hosts of workers to stop after --wait.")
def fire(queue: str, worker_ids: tuple[str, ...], everyone: bool, hosts: tuple[str, ...],
         now: bool, slurm: bool, wait_s: float | None, ssh_command: str) -> None:
    """Stop workers through the queue: finish current jobs, then exit (or --now)."""
    import shlex

    from .hire import default_log_dir, hard_stop
    from .providers.slurm import SlurmProvider
    from .providers.ssh import SshProvider
    from .queue import STOP, STOP_NOW

    q = open_existing(queue)
    hired = hired_queue(queue)
    log_dir = default_log_dir(hired)
    slurm_provider = SlurmProvider(hired, log_dir)
    providers = [slurm_provider, SshProvider(hired, log_dir, ssh=shlex.split(ssh_command))]
    live = [w for w in q.workers() if not w.lost]
    chosen = [w for w in live if everyone or w.host in hosts or w.id in worker_ids
              or (slurm and slurm_provider.handle_of(w) is not None)]
    targets = [w.id for w in chosen]
    targets += [w for w in worker_ids if w not in targets]
    if not targets and not slurm:
        raise UsageError("no worker to fire: name workers (see `shoal workers`), or give "
                         "--host HOST, --slurm or --all")
    for worker_id in targets:
        q.send_control(worker_id, STOP_NOW if now else STOP)
    click.echo(f"asked {len(targets)} worker(s) to stop{' now' if now else ''}")
    if wait_s is None and not slurm:
        return
    wait_s = 60.0 if wait_s is None else wait_s
    fired = hard_stop(providers, chosen, wait_s, everything=[slurm_provider] if slurm else [])
    if slurm:
        click.echo(f"cancelled {fired.unstarted} Slurm worker(s) not started yet; "
                   f"scancelled {fired.late} that had not left after {wait_s:g} s")
    else:
        click.echo(f"stopped {fired.late} that had not left after {wait_s:g} s")


@main.command()
@click.argument("queue")
@click.option("--bind", metavar="HOST:PORT",
              help="Where to listen (default: 127.0.0.1, this machine only, port 8265 or a "
              "free one); 0.0.0.0:PORT lets other machines in (with the token).")
@click.option("--read-only", is_flag=True, help="Show the queue; refuse cancel and retry.")
def dashboard(queue: str, bind: str | None, read_only: bool) -> None:
    """Watch QUEUE in a browser: counts, workers, jobs, failures; cancel and retry.
    Prints the URL to open (it carries a secret token). Needs: pip install 'shoal[web]'."""
    from .web import require_web

    require_web()
    from .web.server import parse_bind, serve

    parse_bind(bind)  # a bad --bind is told before the queue is opened
    serve(open_existing(queue), bind, read_only=read_only,
          say=lambda line: click.echo(line, nl=True) or sys.stdout.flush())


@main.command()
@click.argument("queue")
@click.option("-o", "--output", "out", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="The HTML file to write.")
def report(queue: str, out: str) -> None:
    """Write one self-contained HTML file about QUEUE (counts, durations, failures by
    reason, results), to open from disk or mail after the run."""
    from .web.report import write_report

    jobs = write_report(open_existing(queue), Path(out))
    click.echo(f"report of {jobs} job(s) written to {out}")


@main.group()
def split() -> None:
    """Split one sweep statically over machines that cannot talk to each other."""


def split_options(func: Any) -> Any:
    for option in reversed([
        click.option("--machines", "machines_file", required=True,
                     type=click.Path(exists=True, dir_okay=False),
                     help="JSON: machine name -> [relative speed, cores]."),
        click.option("--config", type=click.Path(exists=True, dir_okay=False),
                     help="Shared TOML configuration (part of the plan's checksum)."),
    ]):
        func = option(func)
    return func


@split.command("plan", context_settings=PASS_THROUGH)
@split_options
@job_options
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def split_plan(machines_file: str, config: str | None, words: tuple[str, ...],
               table: str | None, **options: Any) -> None:
    """Show each machine's share of JOBS and the plan's checksum."""
    from .split import describe
    from .splitrun import plan_for

    jobs = build_jobs(open_queue("memory://"), words, table, **options)
    plan, _ = plan_for(jobs, machines_file, config)
    click.echo(describe(plan))


@split.command("run", context_settings=PASS_THROUGH)
@split_options
@click.option("--machine", help="This machine's name in the file (default: the host name).")
@click.option("--slots", type=click.IntRange(min=1), help="Local slots (default: its cores).")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@job_options
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def split_run(machines_file: str, config: str | None, machine: str | None, slots: int | None,
              no_progress: bool, words: tuple[str, ...], table: str | None,
              **options: Any) -> None:
    """Run only this machine's share of JOBS; write results-MACHINE.csv here."""
    from .runwatch import run_and_watch
    from .split import load_machines
    from .splitrun import choose_machine, plan_for, run_share, seeded

    name = choose_machine(load_machines(machines_file), machine)
    queue = open_queue(f".shoal-split-{name}")
    jobs = seeded(build_jobs(queue, words, table, **options), queue.settings.root)
    plan, machines = plan_for(jobs, machines_file, config, root=queue.settings.root)
    cores = next(m.cores for m in machines if m.name == name)
    click.echo(f"shoal split: machine {name}, plan {plan.checksum}, "
               f"{len(plan.shares[name])} of {len(jobs)} jobs", err=True)
    codes = []

    def runner(q: Any, mine: list[Job], n: int) -> None:
        codes.append(run_and_watch(q, mine, slots=n, show_progress=not no_progress))

    path = run_share(jobs, plan, name, slots=slots or cores, workdir=Path.cwd(),
                     config=config, runner=runner)
    click.echo(f"shoal split: results in {path}", err=True)
    sys.exit(codes[0] if codes else 0)


@split.command("merge")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", default="results.csv", show_default=True)
def split_merge(files: tuple[str, ...], output: str) -> None:
    """Combine machines' results files; check they share a plan; list missing jobs."""
    from .splitrun import merge

    written, missing, failed = merge(files, output)
    click.echo(f"merged {written} job(s) into {output}; {len(failed)} failed")
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        click.echo(f"missing {len(missing)} job(s) (indices in the job list): {shown}")
        sys.exit(1)


def open_existing(url: str) -> Queue:
    """Open a queue that must already exist: a typo is an error ("no such queue"), never a
    new empty queue, and opening it writes nothing (a reader may have read access only)."""
    from .net.contact import is_contact_file

    if url.startswith("tcp://") or is_contact_file(url):  # a CLI call gives up sooner
        return open_queue(url, patience_s=CLI_PATIENCE_S)
    return open_queue(url, create=False)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))

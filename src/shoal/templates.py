"""Turn a command template plus inputs into the list of concrete shell commands to run.

Why: people who run sweeps already know GNU parallel's `cmd {} ::: a b :::: file` syntax,
so shoal accepts the same words and builds exactly the command lines that
`parallel --dry-run` prints (same replacement strings, same quoting, same order).
A parameter table (CSV or JSON) is the other way to describe a sweep: one job per row,
`{column}` replaced by that row's value. Expansion happens once, up front, so every job
in a queue is a plain `/bin/sh -c` command plus the parameters that made it.

The job slot `{%}` is known only when the job runs: it becomes `${SHOAL_SLOT}`, which the
worker sets to the slot running the job (1..slots). So it is expanded by the shell, not
inside single quotes (`'{%}'` in a template stays a literal `${SHOAL_SLOT}`), and it
cannot be part of a --tagstring (tags are made before any job runs).

GNU parallel behaviours deliberately not reproduced (each raises UsageError instead):
an empty input source (parallel silently runs nothing or passes ''), `{n}` beyond the
number of inputs without --colsep or -N (parallel substitutes nothing), `{0}`, `{%}` in
--tagstring and `{= perl =}` expressions.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = [
    "SEPARATORS",
    "Expanded",
    "InputOptions",
    "check_table_alone",
    "expand_command_line",
    "expand_table",
    "has_inputs",
    "parse_command_line",
    "shell_quote",
]

# Input-source separators: `:::` arguments, `::::` files; a trailing `+` links the
# source to the one before it (element-wise) instead of crossing it.
_ARGS, _ARGS_LINKED, _FILES, _FILES_LINKED = ":::", ":::+", "::::", "::::+"
SEPARATORS = frozenset({_ARGS, _ARGS_LINKED, _FILES, _FILES_LINKED})


def has_inputs(words: Iterable[str]) -> bool:
    """True when the words name input sources (`:::`, `::::`...): a command template."""
    return not SEPARATORS.isdisjoint(words)


def check_table_alone(words: Iterable[str], arg_files: Sequence[str] = ()) -> None:
    """A parameter table gives every job's arguments: refuse other input sources with it."""
    if arg_files or has_inputs(words):
        raise UsageError("use either a parameter table (--table) or ::: inputs, not both")

# A replacement string: {}, {.}, {/}, {//}, {/.}, {#}, {%}, {n}, {-n}, {n.}, {n/}, ...
_TOKEN = re.compile(r"\{(?:(?P<hash>#)|(?P<slot>%)|(?P<pos>-?\d+)?(?P<mod>//|/\.|/|\.)?)\}")
_PERL_EXPR = re.compile(r"\{=.*?=\}", re.DOTALL)
# Characters GNU parallel leaves unquoted; anything else makes it single-quote the word.
_UNSAFE = re.compile(r"[^-_.+a-zA-Z0-9/]")
# What `{%}` becomes in a command: the job slot, which the worker exports when it runs.
SLOT_REF = "${SHOAL_SLOT}"
# -q: where `{%}` goes in a word before the word is quoted (no argument holds a NUL).
_SLOT_MARK = "\0"


@dataclass(frozen=True)
class Expanded:
    """One concrete job: the shell command line, the arguments used, its sequence number."""

    command: str  # a shell command line, run with /bin/sh -c (as GNU parallel runs it)
    params: dict[str, str]  # {"1": "a", "2": "x"} for positional inputs, column names for tables
    seq: int  # 1-based job sequence number ({#})
    tag: str = ""  # --tag/--tagstring: what GNU parallel puts before each output line's TAB
    #: a table row's scheduling columns as Job fields (priority, needs, labels, after: ids)
    #: and `after_rows`: the rows (seq) it waits for; see `row_scheduling`
    options: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- quoting


def shell_quote(value: str) -> str:
    """Quote `value` for a Bourne shell exactly as GNU parallel does.

    Words made only of `-_.+/`, ASCII letters and digits are left alone; anything else is
    wrapped in single quotes, each `'` becoming `'"'"'`, and a leading or trailing `''`
    left over by that is dropped (so `it's` -> `'it'"'"'s'`, `'` -> `"'"`).
    """
    if value == "":
        return "''"
    if not _UNSAFE.search(value):
        return value
    quoted = "'" + value.replace("'", "'\"'\"'") + "'"
    if quoted.startswith("''"):
        quoted = quoted[2:]
    if quoted.endswith("''"):
        quoted = quoted[:-2]
    return quoted


# ------------------------------------------------------------------ path modifiers


def _strip_ext(value: str) -> str:
    """`{.}`: drop the last `.ext` of the last path component (`a/b.c.d` -> `a/b.c`)."""
    return re.sub(r"\.[^/.]*\Z", "", value, count=1)


def _basename(value: str) -> str:
    """`{/}`: everything after the last `/` (empty for `dir/`)."""
    return value.rsplit("/", 1)[-1]


def _dirname(value: str) -> str:
    """`{//}`: the directory part, like Perl's File::Basename::dirname (`a` -> `.`)."""
    if value and value.strip("/") == "":
        return "/"
    trimmed = value.rstrip("/")
    if "/" not in trimmed:
        return "."
    head = trimmed.rsplit("/", 1)[0].rstrip("/")
    return head or "/"


_MODIFIERS = {
    None: lambda v: v,
    ".": _strip_ext,
    "/": _basename,
    "//": _dirname,
    "/.": lambda v: _strip_ext(_basename(v)),
}


# ------------------------------------------------------------------------- options


@dataclass(frozen=True)
class InputOptions:
    """GNU parallel's options that change how inputs become command lines (all off by default,
    which is `parallel CMD ::: ...` with nothing else)."""

    colsep: str | None = None  # --colsep REGEX: each argument split into columns {1} {2} ...
    max_args: int | None = None  # -N/-n: arguments per command line (0: read one, insert none)
    context: bool = True  # with -N a word holding {} is repeated once per argument (-n: not)
    link: bool = False  # --link: sources read side by side, the shorter ones wrapping around
    quote: bool = False  # -q: each command word quoted, arguments inserted into it unquoted
    null: bool = False  # -0: `::::` files and standard input separate arguments by NUL
    arg_files: tuple[str, ...] = ()  # -a FILE: input sources placed before any ::: / ::::
    tagstring: str | None = None  # --tagstring STR (--tag is "{}"): gives Expanded.tag


# ------------------------------------------------------------------------- parsing


def _split_arg(word: str) -> list[str]:
    # GNU parallel reads `:::` arguments as lines, so an argument holding a newline
    # becomes several arguments ("a\nb" -> "a", "b"; "b\n" -> "b", "").
    return word.split("\n")


def split_lines(text: str, separator: str = "\n") -> list[str]:
    """Arguments in a file's text: one per line (or per NUL), the last ending one not counted."""
    lines = text.split(separator)
    if lines[-1] == "":
        lines.pop()  # the separator ending the last line does not start another one
    return lines


def read_text(stream: Any) -> str:
    """All of a text stream, undecodable bytes kept (surrogateescape) rather than fatal."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return stream.read()
    return raw.read().decode("utf-8", "surrogateescape")


def _read_lines(name: str, base_dir: Path | None, separator: str = "\n") -> list[str]:
    """Arguments from a `::::` file, one per line (`-` is standard input)."""
    if name == "-":
        text = read_text(sys.stdin)
        label = "standard input"
    else:
        path = Path(name)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        label = str(path)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read input file {path}: {exc.strerror or exc}") from exc
    lines = split_lines(text, separator)
    if not lines:
        raise UsageError(f"input file {label} is empty: it gives no arguments")
    return lines


def _split_sections(words: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Cut words into the template and (separator, following words) sections (maybe none)."""
    starts = [i for i, word in enumerate(words) if word in SEPARATORS]
    end = starts[0] if starts else len(words)
    sections = []
    for start, stop in zip(starts, [*starts[1:], len(words)], strict=False):
        sections.append((words[start], list(words[start + 1 : stop])))
    return list(words[:end]), sections


def _read_sections(
    sections: list[tuple[str, list[str]]], base_dir: Path | None, separator: str
) -> tuple[list[list[str]], list[bool]]:
    groups: list[list[str]] = []
    linked: list[bool] = []
    for sep, operands in sections:
        if not operands:
            what = "arguments" if sep in (_ARGS, _ARGS_LINKED) else "file names"
            raise UsageError(f"'{sep}' is followed by no {what}: an empty input source")
        is_linked = sep in (_ARGS_LINKED, _FILES_LINKED)
        if sep in (_ARGS, _ARGS_LINKED):
            groups.append([arg for word in operands for arg in _split_arg(word)])
            linked.append(is_linked)
            continue
        for name in operands:  # `::::+ f g` links both files, as GNU parallel does
            groups.append(_read_lines(name, base_dir, separator))
            linked.append(is_linked)
    return groups, linked


def parse_command_line(
    words: Sequence[str], *, base_dir: Path | None = None
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Split `cmd args ::: a b :::+ c d :::: file` into its parts.

    Returns (template words, input sources, linked flags): one list of arguments per input
    source, and for each source whether it is linked (`:::+`, `::::+`) to the one before.
    `::::` files are read here, relative to `base_dir` (default: the current directory);
    `::::` followed by several files gives one input source per file, like GNU parallel.
    """
    template, sections = _split_sections(words)
    if not sections:
        raise UsageError(NO_INPUT)
    groups, linked = _read_sections(sections, base_dir, "\n")
    return template, groups, linked


NO_INPUT = "no input given: add arguments after ':::' (or files after '::::') to the command"


# ----------------------------------------------------------------------- combining


def _combine(groups: Sequence[list[str]], linked: Sequence[bool]) -> Iterable[tuple[str, ...]]:
    """All argument tuples, in GNU parallel's order (first source varies slowest).

    A linked source is zipped with the one before it. When the linked sources differ in
    length we do what GNU parallel does for `:::+` (unlike `--link`, it does not wrap
    around): the shortest one decides, the extra arguments are dropped.
    """
    chains: list[list[tuple[str, ...]]] = []
    for group, is_linked in zip(groups, linked, strict=True):
        if is_linked and chains:
            chains[-1] = [(*head, arg) for head, arg in zip(chains[-1], group, strict=False)]
        else:
            chains.append([(arg,) for arg in group])
    for combo in itertools.product(*chains):
        yield tuple(arg for chain_part in combo for arg in chain_part)


def _link_all(groups: Sequence[list[str]]) -> Iterable[tuple[str, ...]]:
    """--link: the i-th argument of every source; shorter sources start over (wrap)."""
    longest = max(len(group) for group in groups)
    for i in range(longest):
        yield tuple(group[i % len(group)] for group in groups)


def _columns(record: tuple[str, ...], colsep: re.Pattern[str]) -> tuple[str, ...]:
    """--colsep: every argument split into columns, spaces around each column trimmed."""
    return tuple(col.strip(" \t") for arg in record for col in colsep.split(arg))


def _chunks(
    records: Iterable[tuple[str, ...]], max_args: int | None
) -> Iterable[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(arguments read, arguments inserted) per command line; -N groups several records."""
    if max_args is None:
        for record in records:
            yield record, record
        return
    size = max(max_args, 1)
    batch: list[str] = []
    count = 0
    for record in records:
        batch.extend(record)
        count += 1
        if count == size:
            yield tuple(batch), (tuple(batch) if max_args else ())
            batch, count = [], 0
    if count:
        yield tuple(batch), tuple(batch)


# ---------------------------------------------------------------- template compiling

# A compiled piece is (False, literal text) or (True, token); a token is None for `{#}`,
# _SLOT for `{%}`, else (0-based or negative position, or None for all the arguments;
# path modifier).
Piece = tuple[bool, Any]
_SLOT = "%"


def _check_token(
    match: re.Match[str], n_inputs: int | None
) -> tuple[int | None, str | None] | str | None:
    """Validate one replacement string; None stands for `{#}`, _SLOT for `{%}`. `n_inputs`
    None: any position is allowed (with --colsep or -N a missing one is empty, as in GNU
    parallel)."""
    token = match.group(0)
    if match.group("slot"):
        return _SLOT
    if match.group("hash"):
        return None
    pos = match.group("pos")
    if pos is None:
        return None, match.group("mod")
    number = int(pos)
    if number == 0:
        raise UsageError(f"'{token}': input positions start at 1")
    if n_inputs is not None and abs(number) > n_inputs:
        plural = "" if n_inputs == 1 else "s"
        raise UsageError(
            f"'{token}' refers to input source {abs(number)}, "
            f"but the command line has only {n_inputs} input source{plural}"
        )
    return (number - 1 if number > 0 else number), match.group("mod")


def _compile(template: str, n_inputs: int | None) -> list[Piece]:
    """Split text into literal and token pieces (a single literal when it has no token)."""
    if _PERL_EXPR.search(template):
        raise UsageError("'{= ... =}' perl expressions are not supported by shoal")
    pieces: list[Piece] = []
    last = 0
    for match in _TOKEN.finditer(template):
        pieces.append((False, template[last : match.start()]))
        pieces.append((True, _check_token(match, n_inputs)))
        last = match.end()
    pieces.append((False, template[last:]))
    return pieces


def _has_token(pieces: list[Piece]) -> bool:
    return any(is_token for is_token, _ in pieces)


def _repeats(pieces: list[Piece]) -> bool:
    """True when the word holds `{}` (or `{.}`, ...): -N repeats it once per argument."""
    return any(is_token and isinstance(item, tuple) and item[0] is None
               for is_token, item in pieces)


def _insert(value: str, quote: bool) -> str:
    return shell_quote(value) if quote else value


def _render(pieces: list[Piece], args: tuple[str, ...], seq: int, quote: bool = True,
            each: str | None = None, slot: str = SLOT_REF) -> str:
    """Fill in the tokens; `each` narrows `{}`-like tokens to one argument (-N's context);
    `{%}` becomes `slot`."""
    out: list[str] = []
    for is_token, item in pieces:
        if not is_token:
            out.append(item)
        elif item is None:
            out.append(str(seq))
        elif item is _SLOT:
            out.append(slot)
        else:
            index, mod = item
            modify = _MODIFIERS[mod]
            if index is None:
                chosen = args if each is None else (each,)
                out.append(" ".join(_insert(modify(arg), quote) for arg in chosen))
            elif -len(args) <= index < len(args):
                out.append(_insert(modify(args[index]), quote))
            # a position beyond the arguments (--colsep, -N) gives nothing, unquoted
    return "".join(out)


def _starts_with_token(template: str) -> bool:
    """GNU parallel leaves arguments unquoted when the first word holds a replacement
    string (`{}`, `{2} -x`, `my_{}`): the argument is (part of) the command itself."""
    first = _TOKEN.search(template)
    return first is not None and not re.search(r"[ \t\n=]", template[: first.start()])


class _Template:
    """A command template compiled once: how every job's command line is rendered."""

    def __init__(self, words: Sequence[str], n_inputs: int | None, options: InputOptions):
        text = " ".join(words)
        if not words:
            words, text = ["{}"], "{}"  # no command: each argument is one (GNU parallel)
        if _PERL_EXPR.search(text):
            raise UsageError("'{= ... =}' perl expressions are not supported by shoal")
        self.quote_words = options.quote
        self.context = options.context and options.max_args is not None
        units = list(words) if options.quote else re.split(r"(\s+)", text)
        self.units = [_compile(unit, n_inputs) for unit in units]
        self.appends = not any(_has_token(unit) for unit in self.units)
        self.quote_args = not options.quote and not _starts_with_token(text)

    def render(self, args: tuple[str, ...], seq: int) -> str:
        if self.quote_words:
            line = " ".join(_quote_word(_render(unit, args, seq, False, slot=_SLOT_MARK))
                            for unit in self.units)
        else:
            line = "".join(self._render_unit(unit, args, seq) for unit in self.units)
        if self.appends:
            line += " " + " ".join(shell_quote(arg) for arg in args)
        return line

    def _render_unit(self, unit: list[Piece], args: tuple[str, ...], seq: int) -> str:
        if not (self.context and _repeats(unit)):
            return _render(unit, args, seq, self.quote_args)
        # -N's context replace: `x{}y` over a b gives `xay xby`, positions stay whole
        return " ".join(_render(unit, args, seq, self.quote_args, each=arg) for arg in args)


def _quote_word(word: str) -> str:
    """-q: a word quoted whole, but for its `{%}`s, left for the shell to expand."""
    if _SLOT_MARK not in word:
        return shell_quote(word)
    return f'"{SLOT_REF}"'.join(shell_quote(part) if part else ""
                                for part in word.split(_SLOT_MARK))


def expand_command_line(
    words: Sequence[str],
    *,
    base_dir: Path | None = None,
    options: InputOptions | None = None,
    stdin_lines: Sequence[str] | None = None,
) -> list[Expanded]:
    """Expand words as typed after `shoal run` / `shoal submit QUEUE`.

    The template words are joined with spaces, unquoted, so a word may hold a whole shell
    pipeline (`'echo {} | tr a-z A-Z'`); only the substituted arguments are quoted. With no
    replacement string in the template the arguments are appended, as GNU parallel does.
    `stdin_lines` is the input source when the words name none (`seq 3 | shoal run echo`).
    """
    options = options or InputOptions()
    separator = "\0" if options.null else "\n"
    template_words, sections = _split_sections(words)
    groups = [_read_lines(name, base_dir, separator) for name in options.arg_files]
    linked = [False] * len(groups)
    more_groups, more_linked = _read_sections(sections, base_dir, separator)
    groups, linked = groups + more_groups, linked + more_linked
    if not groups:
        if stdin_lines is None:
            raise UsageError(NO_INPUT)
        if not stdin_lines:
            raise UsageError("no arguments came on standard input: it was empty")
        groups, linked = [list(stdin_lines)], [False]
    free = options.colsep is not None or options.max_args is not None
    template = _Template(template_words, None if free else len(groups), options)
    tag = _compile(options.tagstring, None) if options.tagstring is not None else None
    if tag is not None and any(is_token and item is _SLOT for is_token, item in tag):
        raise UsageError("'--tagstring': {%} (the job slot) is known only when the job runs, "
                         "after its tag is made; use {#} or the arguments")
    records = _link_all(groups) if options.link else _combine(groups, linked)
    if options.colsep is not None:
        colsep = _colsep_pattern(options.colsep)
        records = (_columns(record, colsep) for record in records)
    jobs = []
    for seq, (read, inserted) in enumerate(_chunks(records, options.max_args), start=1):
        jobs.append(Expanded(
            command=template.render(inserted, seq),
            params={str(i): arg for i, arg in enumerate(read, start=1)},
            seq=seq,
            tag=_render(tag, inserted, seq, False) if tag is not None else "",
        ))
    return jobs


def _colsep_pattern(colsep: str) -> re.Pattern[str]:
    try:
        return re.compile(colsep)
    except re.error as exc:
        raise UsageError(
            f"Invalid value for '--colsep': {colsep!r}: not a regular expression ({exc})"
        ) from exc


# -------------------------------------------------------------------------- tables

# In table mode `{name}` is a column; `${NAME}` (shell) is left alone.
_TABLE_TOKEN = re.compile(r"(?<!\$)\{([^{}\n]*)\}")
_NAME_LIKE = re.compile(r"\w[\w.-]*")


def _cell(value: Any, path: Path, row: int, column: str) -> str:
    """A JSON value as the string passed to the command."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    raise UsageError(
        f"{path}: row {row}, column '{column}' holds a list or object; only strings, "
        "numbers, booleans and null can be passed to a command"
    )


def _read_json_table(path: Path, text: str) -> list[dict[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError:  # json's decoder recurses per nesting level
        raise UsageError(f"{path}: malformed JSON (nested too deeply)") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UsageError(f"{path}: a JSON table must be a list of objects, one per job")
    return [
        {key: _cell(value, path, number, key) for key, value in row.items()}
        for number, row in enumerate(data, start=1)
    ]


def _csv_header(path: Path, reader: Any) -> list[str]:
    header = next(reader, None)
    if not header:
        raise UsageError(f"{path}: the CSV table has no header row")
    names = [name.strip() for name in header]
    if "" in names or len(set(names)) != len(names):
        raise UsageError(f"{path}: CSV header has an empty or repeated column name: {header}")
    return names


def _read_csv_table(path: Path, text: str, delimiter: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    try:
        names = _csv_header(path, reader)
        rows = []
        for fields in reader:
            if not fields:
                continue  # blank line
            if len(fields) != len(names):
                raise UsageError(
                    f"{path}, line {reader.line_num}: {len(fields)} fields, "
                    f"but the header has {len(names)}"
                )
            rows.append(dict(zip(names, fields, strict=True)))
    except csv.Error as exc:
        raise UsageError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
    return rows


def _read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (header row), TSV or JSON (list of objects) table, as strings."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read table {path}: not UTF-8 text") from exc
    except OSError as exc:
        raise UsageError(f"cannot read table {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in (".csv", ".tsv") and text.lstrip().startswith("[")):
        rows = _read_json_table(path, text)
    else:
        rows = _read_csv_table(path, text, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise UsageError(f"{path}: the table has no rows, so there is no job to run")
    return rows


def _table_piece(name: str, columns: list[str], path: Path) -> tuple[bool, str]:
    """Classify the text inside `{...}`: (True, column) / (True, '#') / (False, literal)."""
    if name in ("#", _SLOT) or name in columns:
        return True, name
    if _TOKEN.fullmatch("{" + name + "}"):
        raise UsageError(
            f"'{{{name}}}' cannot be used with a table ({path}); use {{column}} or {{#}}"
        )
    if _NAME_LIKE.fullmatch(name):
        raise UsageError(
            f"unknown column '{name}' in template: table {path} has columns {', '.join(columns)}"
        )
    return False, "{" + name + "}"  # e.g. awk's `{print $1}`: not ours, kept as written


def _compile_table(template: str, columns: list[str], path: Path) -> list[tuple[bool, str]]:
    if _PERL_EXPR.search(template):
        raise UsageError("'{= ... =}' perl expressions are not supported by shoal")
    pieces: list[tuple[bool, str]] = []
    last = 0
    for match in _TABLE_TOKEN.finditer(template):
        pieces.append((False, template[last : match.start()]))
        pieces.append(_table_piece(match.group(1), columns, path))
        last = match.end()
    pieces.append((False, template[last:]))
    if not any(is_token for is_token, _ in pieces):
        raise UsageError(f"the template uses no column of table {path}: add {{column}} to it")
    return pieces


def _render_row(pieces: list[tuple[bool, str]], row: dict[str, str], seq: int, path: Path) -> str:
    out = []
    for is_token, item in pieces:
        if not is_token:
            out.append(item)
        elif item == "#":
            out.append(str(seq))
        elif item == _SLOT and item not in row:
            out.append(SLOT_REF)
        elif item in row:
            out.append(shell_quote(row[item]))
        else:
            raise UsageError(f"{path}: row {seq} has no value for column '{item}'")
    return "".join(out)


def expand_table(template_words: Sequence[str], table: Path) -> list[Expanded]:
    """One job per row of a CSV (header row) or JSON (list of objects) table.

    `{colname}` is replaced by that row's value (shell-quoted like GNU parallel does),
    `{#}` by the row number, `{%}` by the job slot; `{}` and positional replacement
    strings are an error here.
    Template words are joined with spaces, unquoted, as in `expand_command_line`.
    """
    template = " ".join(template_words)
    if not template.strip():
        raise UsageError(f"no command given to run for each row of {table}")
    table = Path(table)
    rows = _read_table(table)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    pieces = _compile_table(template, columns, table)
    return [
        Expanded(command=_render_row(pieces, row, seq, table), params=dict(row), seq=seq,
                 options=row_scheduling(row, seq, len(rows), table))
        for seq, row in enumerate(rows, start=1)
    ]


SCHEDULING_COLUMNS = ("after", "priority", "cpus", "gpus", "mem", "requires")
_ROW_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_JOB_ID = re.compile(r"[0-9a-f]{16}")


def row_scheduling(row: Mapping[str, str], seq: int, n_rows: int,
                   table: Path) -> dict[str, Any]:
    """A row's scheduling columns (`SCHEDULING_COLUMNS`, `resource.NAME`) as Job fields;
    an empty cell says nothing. `after` holds row numbers ({#}: `3`, `1-10`; a range
    leaves the row itself out) of this table and job ids already in the queue, separated
    by commas or spaces."""
    from .needs import needs_from, parse_priority, resource_amount, split_list

    def where(column: str) -> str:
        return f"{table}: row {seq}, column '{column}'"

    cells = {key: value.strip() for key, value in row.items() if value.strip()}
    found: dict[str, Any] = {}
    if "priority" in cells:
        found["priority"] = parse_priority(where("priority"), cells["priority"])
    resources = [(key[9:], resource_amount(where(key), key[9:], value))
                 for key, value in cells.items() if key.startswith("resource.")]
    needs = needs_from(cells.get("cpus"), cells.get("gpus"), cells.get("mem"), resources,
                       where={name: where(name) for name in ("cpus", "gpus", "mem")})
    if needs:
        found["needs"] = needs
    if "requires" in cells:
        found["labels"] = tuple(dict.fromkeys(split_list(cells["requires"])))
    rows: list[int] = []
    ids: list[str] = []
    for word in split_list(cells.get("after", "")):
        numbers = _ROW_RANGE.fullmatch(word)
        if _JOB_ID.fullmatch(word):
            ids.append(word)
        elif numbers:
            first, last = int(numbers.group(1)), int(numbers.group(2) or numbers.group(1))
            if not 1 <= first <= last <= n_rows:
                raise UsageError(f"{where('after')}: {word!r}: the table has rows 1-{n_rows}")
            rows.extend(n for n in range(first, last + 1) if n != seq or first == last)
        else:
            raise UsageError(f"{where('after')}: {word!r} is neither a row number (3, 1-10) "
                             "nor a job id")
    if ids:
        found["after"] = tuple(ids)
    if rows:
        found["after_rows"] = tuple(dict.fromkeys(rows))
    return found

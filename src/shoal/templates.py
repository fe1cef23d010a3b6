"""Turn a command template plus inputs into the list of concrete shell commands to run.

Why: people who run sweeps already know GNU parallel's `cmd {} ::: a b :::: file` syntax,
so shoal accepts the same words and builds exactly the command lines that
`parallel --dry-run` prints (same replacement strings, same quoting, same order).
A parameter table (CSV or JSON) is the other way to describe a sweep: one job per row,
`{column}` replaced by that row's value. Expansion happens once, up front, so every job
in a queue is a plain `/bin/sh -c` command plus the parameters that made it.

GNU parallel behaviours deliberately not reproduced (each raises UsageError instead):
an empty input source (parallel silently runs nothing or passes ''), `{n}` beyond the
number of inputs (parallel substitutes nothing), `{0}`, `{%}` (job slot: no meaning
before jobs are placed on machines) and `{= perl =}` expressions.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = [
    "Expanded",
    "expand_command_line",
    "expand_table",
    "parse_command_line",
    "shell_quote",
]

# Input-source separators: `:::` arguments, `::::` files; a trailing `+` links the
# source to the one before it (element-wise) instead of crossing it.
_ARGS, _ARGS_LINKED, _FILES, _FILES_LINKED = ":::", ":::+", "::::", "::::+"
_SEPARATORS = frozenset({_ARGS, _ARGS_LINKED, _FILES, _FILES_LINKED})

# A replacement string: {}, {.}, {/}, {//}, {/.}, {#}, {%}, {n}, {-n}, {n.}, {n/}, ...
_TOKEN = re.compile(r"\{(?:(?P<hash>#)|(?P<slot>%)|(?P<pos>-?\d+)?(?P<mod>//|/\.|/|\.)?)\}")
_PERL_EXPR = re.compile(r"\{=.*?=\}", re.DOTALL)
# Characters GNU parallel leaves unquoted; anything else makes it single-quote the word.
_UNSAFE = re.compile(r"[^-_.+a-zA-Z0-9/]")


@dataclass(frozen=True)
class Expanded:
    """One concrete job: the shell command line, the arguments used, its sequence number."""

    command: str  # a shell command line, run with /bin/sh -c (as GNU parallel runs it)
    params: dict[str, str]  # {"1": "a", "2": "x"} for positional inputs, column names for tables
    seq: int  # 1-based job sequence number ({#})


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


# ------------------------------------------------------------------------- parsing


def _split_arg(word: str) -> list[str]:
    # GNU parallel reads `:::` arguments as lines, so an argument holding a newline
    # becomes several arguments ("a\nb" -> "a", "b"; "b\n" -> "b", "").
    return word.split("\n")


def _read_lines(name: str, base_dir: Path | None) -> list[str]:
    """Arguments from a `::::` file, one per line (`-` is standard input)."""
    if name == "-":
        text = sys.stdin.read()
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
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another one
    if not lines:
        raise UsageError(f"input file {label} is empty: it gives no arguments")
    return lines


def _split_sections(words: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Cut words into the template and (separator, following words) sections."""
    starts = [i for i, word in enumerate(words) if word in _SEPARATORS]
    if not starts:
        raise UsageError(
            "no input given: add arguments after ':::' (or files after '::::') to the command"
        )
    template = list(words[: starts[0]])
    sections = []
    for start, end in zip(starts, [*starts[1:], len(words)], strict=True):
        sections.append((words[start], list(words[start + 1 : end])))
    return template, sections


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
    if not " ".join(template).strip():
        raise UsageError("no command given before ':::' or '::::'")
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
            groups.append(_read_lines(name, base_dir))
            linked.append(is_linked)
    return template, groups, linked


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


# ---------------------------------------------------------------- template compiling

# A compiled template is a list of (is_token, item): item is literal text for a
# non-token, else None for `{#}` or (0-based/negative index or None for all, modifier).


def _check_token(match: re.Match[str], n_inputs: int) -> tuple[int | None, str | None] | None:
    """Validate one replacement string; None stands for `{#}`."""
    token = match.group(0)
    if match.group("slot"):
        raise UsageError(f"'{token}' (job slot) is not supported by shoal")
    if match.group("hash"):
        return None
    pos = match.group("pos")
    if pos is None:
        return None, match.group("mod")
    number = int(pos)
    if number == 0:
        raise UsageError(f"'{token}': input positions start at 1")
    if abs(number) > n_inputs:
        plural = "" if n_inputs == 1 else "s"
        raise UsageError(
            f"'{token}' refers to input source {abs(number)}, "
            f"but the command line has only {n_inputs} input source{plural}"
        )
    return (number - 1 if number > 0 else number), match.group("mod")


def _compile(template: str, n_inputs: int) -> list[tuple[bool, Any]] | None:
    """Split the template into (is_token, literal-or-token); None when it has no tokens."""
    if _PERL_EXPR.search(template):
        raise UsageError("'{= ... =}' perl expressions are not supported by shoal")
    pieces: list[tuple[bool, Any]] = []
    last = 0
    for match in _TOKEN.finditer(template):
        pieces.append((False, template[last : match.start()]))
        pieces.append((True, _check_token(match, n_inputs)))
        last = match.end()
    if not pieces:
        return None
    pieces.append((False, template[last:]))
    return pieces


def _render(pieces: list[tuple[bool, Any]], args: tuple[str, ...], seq: int) -> str:
    out: list[str] = []
    for is_token, item in pieces:
        if not is_token:
            out.append(item)
        elif item is None:
            out.append(str(seq))
        else:
            index, mod = item
            modify = _MODIFIERS[mod]
            chosen = args if index is None else (args[index],)
            out.append(" ".join(shell_quote(modify(arg)) for arg in chosen))
    return "".join(out)


def expand_command_line(words: Sequence[str], *, base_dir: Path | None = None) -> list[Expanded]:
    """Expand words as typed after `shoal run` / `shoal submit QUEUE`.

    The template words are joined with spaces, unquoted, so a word may hold a whole shell
    pipeline (`'echo {} | tr a-z A-Z'`); only the substituted arguments are quoted. With no
    replacement string in the template the arguments are appended, as GNU parallel does.
    """
    template_words, groups, linked = parse_command_line(words, base_dir=base_dir)
    template = " ".join(template_words)
    pieces = _compile(template, len(groups))
    jobs = []
    for seq, args in enumerate(_combine(groups, linked), start=1):
        if pieces is None:
            command = template + " " + " ".join(shell_quote(arg) for arg in args)
        else:
            command = _render(pieces, args, seq)
        params = {str(i): arg for i, arg in enumerate(args, start=1)}
        jobs.append(Expanded(command=command, params=params, seq=seq))
    return jobs


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
    if name == "#" or name in columns:
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
        elif item in row:
            out.append(shell_quote(row[item]))
        else:
            raise UsageError(f"{path}: row {seq} has no value for column '{item}'")
    return "".join(out)


def expand_table(template_words: Sequence[str], table: Path) -> list[Expanded]:
    """One job per row of a CSV (header row) or JSON (list of objects) table.

    `{colname}` is replaced by that row's value (shell-quoted like GNU parallel does),
    `{#}` by the row number; `{}` and positional replacement strings are an error here.
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
        Expanded(command=_render_row(pieces, row, seq, table), params=dict(row), seq=seq)
        for seq, row in enumerate(rows, start=1)
    ]

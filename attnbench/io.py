"""Atomic file writes (a reader or a rerun never sees a half-written file), and reads
that report a damaged or missing file in one line naming it and the command that
rebuilds it.

A `Schema` says what one intermediate file must hold (attnbench.intermediates declares
one per file): its writer checks it before writing (`write_json`, `write_csv`,
`write_frame` with `schema=`) and every reader after reading (`read_json`, `read_csv`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Schema:
    """What an intermediate file must hold for the rules that read it.

    JSON: an object with every one of `keys`; each of `filled` a non-empty list or object;
    and, for each (key, value, more) in `when`, also the keys `more` when data[key] == value
    (metrics.json of a run with status ok holds its accuracy). CSV: a header with every
    one of `columns`; with `rows`, at least one row under it (`note` says why, in the
    message); every one of `row_columns` once it has a row.
    """

    keys: tuple[str, ...] = ()
    filled: tuple[str, ...] = ()
    when: tuple[tuple[str, Any, tuple[str, ...]], ...] = ()
    columns: tuple[str, ...] = ()
    rows: bool = False
    row_columns: tuple[str, ...] = ()
    note: str = ""


def _listed(what: str, names: Sequence[str]) -> str:
    return f"{what} {', '.join(repr(n) for n in names)} is missing"


def json_problem(data: Any, schema: Schema) -> str | None:
    """What `data` (a parsed JSON document) lacks against `schema`, or None."""
    if not (schema.keys or schema.filled or schema.when):
        return None
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    missing = [k for k in dict.fromkeys((*schema.keys, *schema.filled)) if k not in data]
    if missing:
        return _listed("key", missing)
    empty = [k for k in schema.filled if not isinstance(data[k], (list, dict)) or not data[k]]
    if empty:
        return f"key {', '.join(repr(k) for k in empty)} is empty"
    for key, value, more in schema.when:
        missing = [k for k in more if k not in data]
        if data.get(key) == value and missing:
            return f"{_listed('key', missing)} (needed when {key} is {value!r})"
    return None


def table_problem(columns: Iterable[str], n_rows: int, schema: Schema) -> str | None:
    """What a CSV with these `columns` (names stripped, as Ultralytics pads them) and
    `n_rows` rows lacks against `schema`, or None."""
    present = {str(c).strip() for c in columns}
    missing = [c for c in schema.columns if c not in present]
    if missing:
        return _listed("column", missing)
    if schema.rows and not n_rows:
        return "it has no rows under its header" + (f" ({schema.note})" if schema.note else "")
    missing = [c for c in schema.row_columns if c not in present]
    if n_rows and missing:
        return _listed("column", missing)
    return None


def incomplete(path: str | os.PathLike, problem: str) -> UserError:
    """The one-line error of a writer whose output would break its declared schema."""
    return UserError(
        f"{path} was not written: {problem}. The rule that writes it made it incomplete; "
        "nothing was left behind (report it with this line)"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes files 0600; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any, *, schema: Schema | None = None) -> None:
    """Write `data` as JSON, atomically; with `schema`, only if it holds what readers need."""
    if schema is not None and (problem := json_problem(data, schema)):
        raise incomplete(path, problem)
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to remake a rule's output and everything downstream of it (Snakemake 9)."""
    return (
        f"rebuild it and what depends on it with `snakemake --cores 1 --forcerun {path}` "
        "(plus the options you ran with, e.g. --use-conda)"
    )


def damaged(path: str | os.PathLike, problem: str, fix: str | None = None) -> UserError:
    """The one-line error for an unreadable input: the file, what is wrong, the fix."""
    return UserError(f"{path} {problem}: {fix or rebuild_hint(path)}")


def read_json(
    path: str | os.PathLike,
    *,
    keys: Sequence[str] = (),
    schema: Schema | None = None,
    fix: str | None = None,
) -> Any:
    """Read a JSON file written by another rule; with `keys`, it must be an object holding
    them, and with `schema` hold what that declares.

    A missing, empty, truncated or incomplete file raises UserError (one line naming the
    file and `fix`, by default the `--forcerun` command that rebuilds it), never a
    JSONDecodeError or KeyError traceback from deep inside a script.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise damaged(path, "is missing", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise damaged(path, f"cannot be read ({exc.__class__.__name__}: {exc})", fix) from None
    if not text.strip():
        raise damaged(path, "is empty (damaged)", fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise damaged(path, f"is damaged: not valid JSON ({exc.msg}; {where})", fix) from None
    if keys:
        if not isinstance(data, dict):
            raise damaged(
                path, f"is damaged: expected a JSON object, got {type(data).__name__}", fix
            )
        _require(path, "key", keys, data, fix)
    if schema is not None and (problem := json_problem(data, schema)):
        raise damaged(path, f"is damaged: {problem}", fix)
    return data


def read_csv(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] = (),
    schema: Schema | None = None,
    missing_ok: bool = False,
    fix: str | None = None,
) -> pd.DataFrame:
    """Read a CSV written by another rule into a DataFrame; an empty file is an empty frame
    (unless `schema` asks for rows).

    A file cut short (no final newline, or a row with fewer or more fields than the
    header), without one of `columns`, or short of what `schema` declares raises
    UserError naming the file and `fix`; pandas would otherwise fill a cut row with NaN
    and carry on.
    """
    import pandas as pd

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        if missing_ok:
            return pd.DataFrame()
        raise damaged(path, "is missing", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise damaged(path, f"cannot be read ({exc.__class__.__name__}: {exc})", fix) from None
    if not text.strip():
        if schema is not None and (schema.rows or schema.columns):
            note = f": {schema.note}" if schema.rows and schema.note else ""
            raise damaged(path, f"is empty (damaged{note})", fix)
        return pd.DataFrame()
    if not text.endswith("\n"):
        raise damaged(path, "is damaged: it ends mid-line (cut short)", fix)
    try:
        rows = list(csv.reader(StringIO(text)))
    except csv.Error as exc:
        raise damaged(path, f"is damaged: not valid CSV ({exc})", fix) from None
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if row and len(row) != width:
            raise damaged(
                path, f"is damaged: line {number} has {len(row)} field(s), the header {width}", fix
            )
    try:
        frame = pd.read_csv(StringIO(text))
    except (pd.errors.ParserError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise damaged(path, f"is damaged: not valid CSV ({detail})", fix) from None
    _require(path, "column", columns, {str(c).strip() for c in frame.columns}, fix)
    if schema is not None and (problem := table_problem(frame.columns, len(frame), schema)):
        raise damaged(path, f"is damaged: {problem}", fix)
    return frame


def _require(
    path: str | os.PathLike,
    what: str,
    names: Iterable[str],
    present: Container[str],
    fix: str | None,
) -> None:
    """Raise UserError naming every one of `names` (a `what`: key, column) not in `present`."""
    missing = [n for n in names if n not in present]
    if missing:
        raise damaged(path, f"is damaged: {_listed(what, missing)}", fix)


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    schema: Schema | None = None,
) -> None:
    """Write rows atomically with exactly `columns` (missing values empty); with `schema`,
    only if they hold what readers need."""
    rows = list(rows)
    if schema is not None and (problem := table_problem(columns, len(rows), schema)):
        raise incomplete(path, problem)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})


def write_frame(
    path: str | os.PathLike, frame: pd.DataFrame, *, schema: Schema | None = None
) -> None:
    """Write a DataFrame as CSV (no index), atomically; with `schema`, only if it holds
    what readers need."""
    if schema is not None and (problem := table_problem(frame.columns, len(frame), schema)):
        raise incomplete(path, problem)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)

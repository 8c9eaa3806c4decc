"""Strict readers for C-MAPSS text files.

A C-MAPSS engine file (``train_FD00x.txt``, ``test_FD00x.txt``) holds one row per
engine cycle: 26 whitespace-separated numbers (unit, cycle, 3 operational
settings, 21 sensors). Each unit's rows form one block whose cycles count
1, 2, 3, ... A RUL file (``RUL_FD00x.txt``) holds one remaining-useful-life
value per test unit, in unit order.

Valid files take a fast path (pandas' C parser plus vectorised checks); only a
file that fails it is scanned line by line, to say exactly where it is wrong:
every error names the file, the line and the column, and what was expected.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

KIND_TRAIN = "train"
KIND_TEST = "test"
KIND_RUL = "rul"
KINDS = (KIND_TRAIN, KIND_TEST, KIND_RUL)

SETTING_COLUMNS = [f"setting_{i}" for i in range(1, 4)]
SENSOR_COLUMNS = [f"s_{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", *SETTING_COLUMNS, *SENSOR_COLUMNS]
N_COLUMNS = len(COLUMNS)
_LAYOUT = "unit, cycle, 3 settings, 21 sensors"

# A plain decimal number: no "nan", "inf", "1_000" or hex, which Python's
# float() would take but which no C-MAPSS file contains.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
TOKEN = re.compile(r"\S+")
# Printable ASCII plus tab, LF and CR: anything else means a binary file.
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_ARCHIVE_MAGIC = {b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip archive"}


class DataFileError(ValueError):
    """A C-MAPSS file that is not in the expected format.

    Attributes
    ----------
    path, line, column : where the problem is (line and column 1-based, or None)
    problem : what is wrong and what was expected
    """

    def __init__(
        self, path: Path | str, problem: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f", line {self.line}"
            if self.column is not None:
                where += f", column {self.column}"
        return f"{where}: {self.problem}"


def detect_kind(path: Path | str) -> str | None:
    """The kind a file's name gives (``train_*``, ``test_*``, ``RUL_*``), if any."""
    name = Path(path).name.lower()
    for kind in KINDS:
        if name.startswith(kind + "_"):
            return kind
    return None


def subset_of(path: Path | str) -> str | None:
    """``FD001``..``FD004`` when the file name carries one, else None."""
    match = re.search(r"FD00\d", Path(path).name, re.IGNORECASE)
    return match.group(0).upper() if match else None


# --- reading bytes ----------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file as text, after the checks every C-MAPSS file must pass."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except IsADirectoryError:
        raise DataFileError(path, "is a folder, not a C-MAPSS text file") from None
    except PermissionError:
        raise DataFileError(path, "cannot be read: permission denied") from None
    if not data.strip():
        raise DataFileError(
            path, "the file is empty: expected rows of whitespace-separated numbers", line=1
        )
    _reject_binary(path, data)
    return data.decode("ascii")


def _reject_binary(path: Path, data: bytes) -> None:
    leftover = data.translate(None, _TEXT_BYTES)
    if not leftover:
        return
    offset = data.index(leftover[:1])
    line, column = _position(data, offset)
    kind = next((name for magic, name in _ARCHIVE_MAGIC.items() if data.startswith(magic)), None)
    hint = f"it looks like {kind}: extract it first" if kind else "it is not a text file"
    raise DataFileError(
        path,
        f"binary data (byte 0x{leftover[0]:02x}) where plain ASCII numbers were expected; {hint}",
        line=line,
        column=column,
    )


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def data_lines(text: str) -> list[str]:
    """Lines without their endings; blank lines at the very end are dropped."""
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.rstrip("\r") for line in lines]


# --- engine files -------------------------------------------------------------


def read_engine_file(path: Path | str, kind: str = KIND_TRAIN) -> pd.DataFrame:
    """Read and validate a train or test file.

    Parameters
    ----------
    path : the file
    kind : ``"train"`` or ``"test"`` (kept in ``frame.attrs``; both are checked alike)

    Returns
    -------
    DataFrame with columns :data:`COLUMNS`; ``unit`` and ``cycle`` as int64.

    Raises
    ------
    DataFileError
        naming the file, line and column of the first problem.
    """
    if kind not in (KIND_TRAIN, KIND_TEST):
        raise ValueError(f"kind must be 'train' or 'test', not {kind!r}")
    path = Path(path)
    text = _read_text(path)
    values = _parse_fast(text)
    if values is None:
        values = _parse_slow(path, text)
    _check_units_and_cycles(path, text, values)
    frame = pd.DataFrame(values, columns=COLUMNS)
    frame["unit"] = frame["unit"].astype(np.int64)
    frame["cycle"] = frame["cycle"].astype(np.int64)
    frame.attrs.update(path=str(path), kind=kind)
    return frame


def _parse_fast(text: str) -> np.ndarray | None:
    """The values of a well-formed file, or None if anything looks off."""
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=r"\s+",
            header=None,
            dtype=np.float64,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError):
        return None
    values = frame.to_numpy()
    # Blank lines inside the file are skipped by pandas: compare row counts.
    n_lines = text.rstrip().count("\n") + 1  # as data_lines() counts, without the list
    if values.shape != (n_lines, N_COLUMNS) or not np.isfinite(values).all():
        return None
    return values


def _parse_slow(path: Path, text: str) -> np.ndarray:
    """Parse token by token; raise at the first problem with its position."""
    lines = data_lines(text)
    complete_last_line = text.rstrip(" \t").endswith("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        tokens = list(TOKEN.finditer(line))
        if not tokens:
            raise DataFileError(
                path, f"blank line: expected {N_COLUMNS} numbers ({_LAYOUT})", line=number, column=1
            )
        if len(tokens) != N_COLUMNS:
            is_last = number == len(lines)
            _raise_column_count(path, number, line, tokens, is_last and not complete_last_line)
        rows.append([_number(path, number, match) for match in tokens])
    return np.array(rows, dtype=np.float64)


def _raise_column_count(
    path: Path, number: int, line: str, tokens: list[re.Match[str]], truncated: bool
) -> None:
    found = len(tokens)
    if truncated and found < N_COLUMNS:
        raise DataFileError(
            path,
            f"truncated last line: it has {found} of {N_COLUMNS} columns and no line ending; "
            "the file was cut short (copy it again)",
            line=number,
            column=len(line) + 1,
        )
    column = tokens[N_COLUMNS].start() + 1 if found > N_COLUMNS else len(line) + 1
    raise DataFileError(
        path,
        f"wrong number of columns: expected {N_COLUMNS} ({_LAYOUT}), found {found}",
        line=number,
        column=column,
    )


def _number(path: Path, line: int, match: re.Match[str]) -> float:
    token = match.group(0)
    field = len(TOKEN.findall(match.string[: match.start()]))
    name = COLUMNS[field] if field < N_COLUMNS else f"field {field + 1}"
    if _NUMBER.fullmatch(token):
        return float(token)
    if token.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        problem = f"{token!r} in column {name!r} is not a finite number"
    else:
        problem = f"{token!r} in column {name!r} is not a number"
    raise DataFileError(path, problem, line=line, column=match.start() + 1)


def _field_column(text: str, line: int, field: int) -> int:
    """1-based character column where ``field`` starts on ``line``."""
    tokens = list(TOKEN.finditer(data_lines(text)[line - 1]))
    return tokens[field].start() + 1


def _check_units_and_cycles(path: Path, text: str, values: np.ndarray) -> None:
    """Units are positive integers in one block each; cycles run 1, 2, 3, ..."""
    unit, cycle = values[:, 0], values[:, 1]
    problems: list[tuple[np.ndarray, int, str]] = [
        (unit != np.floor(unit), 0, "unit id {u:g} is not a whole number"),
        (unit < 1, 0, "unit id {u:g} is not positive: unit ids are 1, 2, 3, ..."),
        (cycle != np.floor(cycle), 1, "cycle {c:g} is not a whole number"),
    ]
    same_unit = np.r_[False, unit[1:] == unit[:-1]]
    step = np.r_[1.0, np.diff(cycle)]
    starts = np.flatnonzero(~same_unit)
    _, first_seen = np.unique(unit[starts], return_index=True)
    repeated = np.zeros(len(unit), dtype=bool)
    repeated[np.setdiff1d(starts, starts[first_seen])] = True
    problems += [
        (
            repeated,
            0,
            "unit {u:g} appears again after other units: each unit's rows must be one block",
        ),
        (~same_unit & (cycle != 1), 1, "unit {u:g} starts at cycle {c:g}; expected cycle 1"),
        (same_unit & (step == 0), 1, "duplicate cycle {c:g} of unit {u:g}: expected cycle {n:g}"),
        (
            same_unit & (step > 1),
            1,
            "skipped cycle: unit {u:g} goes from cycle {p:g} to {c:g}; expected cycle {n:g}",
        ),
        (
            same_unit & (step < 0),
            1,
            "cycle {c:g} of unit {u:g} goes backwards after cycle {p:g}; expected cycle {n:g}",
        ),
    ]
    first = [
        (int(np.argmax(mask)), order) for order, (mask, _, _) in enumerate(problems) if mask.any()
    ]
    if not first:
        return
    row, order = min(first)
    _, field, template = problems[order]
    previous = cycle[row - 1] if row else 0
    message = template.format(u=unit[row], c=cycle[row], p=previous, n=previous + 1)
    raise DataFileError(path, message, line=row + 1, column=_field_column(text, row + 1, field))


# --- RUL files ----------------------------------------------------------------


def read_rul_file(path: Path | str, *, expected_units: int | None = None) -> np.ndarray:
    """Read and validate a RUL file: one whole number >= 0 per line.

    Parameters
    ----------
    path : the file
    expected_units : number of units in the matching test file; checked if given

    Returns
    -------
    int64 array, one true RUL per test unit in unit order.
    """
    path = Path(path)
    text = _read_text(path)
    lines = data_lines(text)
    values = []
    for number, line in enumerate(lines, start=1):
        tokens = list(TOKEN.finditer(line))
        if len(tokens) != 1:
            column = tokens[1].start() + 1 if tokens else 1
            raise DataFileError(
                path,
                "expected one number per line (the true RUL of one test unit), "
                f"found {len(tokens)}",
                line=number,
                column=column,
            )
        match = tokens[0]
        value = _number(path, number, match)
        if value != int(value) or value < 0:
            raise DataFileError(
                path,
                f"RUL {match.group(0)!r} is not a whole number of cycles >= 0",
                line=number,
                column=match.start() + 1,
            )
        values.append(int(value))
    if expected_units is not None and len(values) != expected_units:
        raise DataFileError(
            path,
            f"has {len(values)} RUL values but the test file has {expected_units} units: "
            "expected one line per test unit, in unit order",
            line=len(values) + 1 if len(values) < expected_units else expected_units + 1,
        )
    return np.array(values, dtype=np.int64)


# --- several files ----------------------------------------------------------------

# Pooled files keep their engines apart: unit u of the k-th file becomes k * UNIT_OFFSET + u.
UNIT_OFFSET = 10_000


def pool_engines(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Rows of several engine files as one frame, unit ids made distinct per file."""
    if len(frames) == 1:
        return frames[0]
    parts = []
    for k, frame in enumerate(frames, start=1):
        part = frame.copy()
        part["unit"] = part["unit"] + k * UNIT_OFFSET
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# --- summaries ----------------------------------------------------------------


def engine_lengths(frame: pd.DataFrame) -> pd.Series:
    """Cycles recorded per unit (the run length of each engine)."""
    return frame.groupby("unit", sort=False)["cycle"].max()


def summarise_engines(frame: pd.DataFrame) -> dict[str, object]:
    """Aggregate-only description of an engine file: no row leaves this."""
    lengths = engine_lengths(frame)
    return {
        "kind": frame.attrs.get("kind", KIND_TRAIN),
        "rows": int(len(frame)),
        "units": int(len(lengths)),
        "cycles": {"min": int(lengths.min()), "max": int(lengths.max())},
    }


def summarise_rul(values: Sequence[int] | np.ndarray) -> dict[str, object]:
    array = np.asarray(values)
    return {
        "kind": KIND_RUL,
        "rows": int(len(array)),
        "units": int(len(array)),
        "rul": {"min": int(array.min()), "max": int(array.max())},
    }

"""Validation of whole files and folders, summarised as aggregate-only metadata."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from turbofan.data.files import (
    KIND_RUL,
    KIND_TEST,
    KIND_TRAIN,
    DataFileError,
    detect_kind,
    pool_engines,
    read_engine_file,
    read_rul_file,
    subset_of,
    summarise_engines,
    summarise_rul,
)

PATTERNS = ("train_*.txt", "test_*.txt", "RUL_*.txt")


def check_file(
    path: Path, kind: str | None = None, *, expected_units: int | None = None
) -> dict[str, object]:
    """Validate one file and summarise it (kind, rows, units, cycles or RUL range).

    Parameters
    ----------
    path : the file
    kind : ``train``, ``test`` or ``rul``; if None it comes from the file name
        (``train_*``, ``test_*``, ``RUL_*``) or, for a one-column file, is ``rul``
    expected_units : for a RUL file, the number of units of its test file

    Raises
    ------
    DataFileError
        if the file is malformed or its kind cannot be told.
    """
    path = Path(path)
    kind = kind or detect_kind(path) or _kind_from_content(path)
    if kind == KIND_RUL:
        summary = summarise_rul(read_rul_file(path, expected_units=expected_units))
    else:
        summary = summarise_engines(read_engine_file(path, kind))
    return {"path": str(path), "subset": subset_of(path), **summary}


def _kind_from_content(path: Path) -> str:
    try:
        read_rul_file(path)
    except DataFileError:
        pass
    else:
        return KIND_RUL
    read_engine_file(path)  # raises the precise error if it is no engine file either
    raise DataFileError(
        path,
        "cannot tell a training file from a test file by content: name it train_*.txt or "
        "test_*.txt, or give the kind (check_data --kind train|test)",
    )


def check_files(paths: list[Path], kind: str | None = None) -> list[dict[str, object]]:
    """Check several files; a RUL file given with its test file must match its unit count."""
    summaries = [check_file(path, kind) for path in paths]
    units_of_test = {
        s["subset"]: s["units"] for s in summaries if s["kind"] == KIND_TEST and s["subset"]
    }
    for path, summary in zip(paths, summaries, strict=True):
        if summary["kind"] == KIND_RUL and summary["subset"] in units_of_test:
            check_file(path, KIND_RUL, expected_units=units_of_test[summary["subset"]])  # type: ignore[arg-type]
    return summaries


def describe_folder(folder: Path) -> dict[str, object]:
    """Validate every C-MAPSS file of a site's data folder; totals and per-file summaries.

    What this returns is the only thing a site tells the coordinator about its
    data: counts and ranges, never a row.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(folder, "is not a folder")
    paths = sorted({p for pattern in PATTERNS for p in folder.glob(pattern)})
    if not any(detect_kind(p) == KIND_TRAIN for p in paths):
        raise DataFileError(
            folder, "holds no training file (train_FD00x.txt): a site needs run-to-failure data"
        )
    files = check_files(paths)
    for entry in files:
        entry["path"] = Path(str(entry["path"])).name  # the site's own layout stays private
    train = [f for f in files if f["kind"] == KIND_TRAIN]
    return {
        "files": files,
        "train_rows": sum(int(f["rows"]) for f in train),  # type: ignore[call-overload]
        "train_engines": sum(int(f["units"]) for f in train),  # type: ignore[call-overload]
        "subsets": sorted({str(f["subset"]) for f in train if f["subset"]}),
    }


def training_rows(folder: Path) -> pd.DataFrame:
    """Every training file of a site's folder as one frame (engines kept apart per file)."""
    paths = sorted(Path(folder).glob("train_*.txt"))
    if not paths:
        raise DataFileError(folder, "holds no training file (train_FD00x.txt)")
    return pool_engines([read_engine_file(path) for path in paths])

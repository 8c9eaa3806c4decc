"""Splitting C-MAPSS training engines between sites, seeded.

A partition gives each site a set of run-to-failure engines and keeps a
held-out set that no site gets (to replay maintenance strategies on engines no
model trained on). Written out, each site's folder holds ordinary C-MAPSS
files, so a site worker reads demo data exactly as it reads real data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from turbofan.data.files import KIND_TEST, KIND_TRAIN, TOKEN, data_lines, read_engine_file

SCHEMES = ("iid", "by-subset")
HOLDOUT = "holdout"
MANIFEST = "partition.json"


@dataclass(frozen=True)
class Share:
    """The engines (original unit ids, sorted) one holder gets of each subset."""

    name: str
    engines: dict[str, list[int]]

    @property
    def n_engines(self) -> int:
        return sum(len(units) for units in self.engines.values())


@dataclass(frozen=True)
class PartitionPlan:
    scheme: str
    seed: int
    sites: list[Share]
    holdout: Share

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _split_holdout(
    units: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``units``; the first ``fraction`` of them (at least one) is held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    shuffled = rng.permutation(units)
    n_held = max(1, round(fraction * len(units))) if fraction > 0 else 0
    return shuffled[n_held:], shuffled[:n_held]


def _sorted_list(units: np.ndarray) -> list[int]:
    return sorted(int(unit) for unit in units)


def plan_iid(
    subset: str, units: np.ndarray, n_sites: int, *, seed: int = 0, holdout: float = 0.1
) -> PartitionPlan:
    """Engines of one subset dealt at random into ``n_sites`` near-equal shares.

    Parameters
    ----------
    subset : e.g. ``"FD001"``
    units : unit ids of the subset's training file
    n_sites : number of sites
    seed : the same seed gives the same split
    holdout : fraction of engines (at least one) that no site gets
    """
    if n_sites < 1:
        raise ValueError(f"need at least one site, got {n_sites}")
    rng = np.random.default_rng(seed)
    pool, held = _split_holdout(np.unique(units), holdout, rng)
    if len(pool) < n_sites:
        raise ValueError(f"{len(pool)} engines of {subset} cannot be split between {n_sites} sites")
    sites = [
        Share(name=f"site-{i + 1}", engines={subset: _sorted_list(part)})
        for i, part in enumerate(np.array_split(pool, n_sites))
    ]
    holdout_share = Share(name=HOLDOUT, engines={subset: _sorted_list(held)})
    return PartitionPlan(scheme="iid", seed=seed, sites=sites, holdout=holdout_share)


def plan_by_subset(
    units_by_subset: Mapping[str, np.ndarray], *, seed: int = 0, holdout: float = 0.1
) -> PartitionPlan:
    """One site per subset: sites differ in operating conditions and fault modes (non-IID)."""
    rng = np.random.default_rng(seed)
    sites, held_out = [], {}
    for i, subset in enumerate(sorted(units_by_subset)):
        pool, held = _split_holdout(np.unique(units_by_subset[subset]), holdout, rng)
        sites.append(Share(name=f"site-{i + 1}", engines={subset: _sorted_list(pool)}))
        held_out[subset] = _sorted_list(held)
    holdout_share = Share(name=HOLDOUT, engines=held_out)
    return PartitionPlan(scheme="by-subset", seed=seed, sites=sites, holdout=holdout_share)


def write_partition(
    plan: PartitionPlan, source_dir: Path, out_dir: Path, *, overwrite: bool = False
) -> Path:
    """Write each share as C-MAPSS training files in ``out_dir/<name>/``.

    Units are renumbered 1..N in each file (as in any C-MAPSS file); every other
    byte of a row is copied from the source. ``out_dir/partition.json`` records
    the plan and, for each share, which source unit each new unit id is. The
    whole folder is built beside ``out_dir`` and moved into place at the end, so
    a failure leaves no half-written partition.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists: choose another folder or overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        subsets = sorted({s for share in [*plan.sites, plan.holdout] for s in share.engines})
        sources = {s: _source_rows(Path(source_dir) / f"train_{s}.txt") for s in subsets}
        for share in [*plan.sites, plan.holdout]:
            for subset, units in share.engines.items():
                if not units:  # an empty file is no valid C-MAPSS file: write none
                    continue
                target = staging / share.name / f"train_{subset}.txt"
                _write_units(sources[subset], units, target)
        manifest = plan.to_dict() | {"source_files": [f"train_{s}.txt" for s in subsets]}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def write_fleets(
    source_dir: Path, subset: str, site_dirs: list[Path], *, seed: int
) -> dict[str, list[int]]:
    """Give each site a share of the subset's test engines as its fleet in service: an
    ordinary ``test_<subset>.txt`` in its folder (runs that have not failed yet), engines
    dealt out at random (seeded), their unit ids kept (as in ``RUL_<subset>.txt``).

    Each file is written whole beside its target and moved into place. Returns the units
    each site got, by folder name.
    """
    source = Path(source_dir) / f"test_{subset}.txt"
    rows = _source_rows(source, KIND_TEST)
    units = np.array(sorted(rows))
    np.random.default_rng(seed).shuffle(units)
    dealt: dict[str, list[int]] = {}
    for i, folder in enumerate(site_dirs):
        mine = sorted(int(u) for u in units[i :: len(site_dirs)])
        target = Path(folder) / f"test_{subset}.txt"
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        with staging.open("w", encoding="ascii", newline="\n") as handle:
            for unit in mine:
                handle.writelines(f"{line}\n" for line in rows[unit])
        staging.replace(target)
        dealt[Path(folder).name] = mine
    return dealt


def _source_rows(path: Path, kind: str = KIND_TRAIN) -> dict[int, list[str]]:
    """Each unit's lines of a validated training (or test) file, keyed by unit id."""
    frame = read_engine_file(path, kind)
    lines = data_lines(path.read_text(encoding="ascii"))
    rows: dict[int, list[str]] = {}
    for unit, line in zip(frame["unit"].to_numpy(), lines, strict=True):
        rows.setdefault(int(unit), []).append(line)
    return rows


def _write_units(source: dict[int, list[str]], units: list[int], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="ascii", newline="\n") as handle:
        for new_id, unit in enumerate(units, start=1):
            if unit not in source:
                raise ValueError(f"unit {unit} is not in the source file")
            for line in source[unit]:
                first = TOKEN.search(line)
                assert first is not None  # validated rows are never blank
                handle.write(f"{new_id}{line[first.end() :]}\n")


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``; an old partition goes only once the new one is whole."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old)
    else:
        staging.rename(out_dir)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The plan a partition folder was written from."""
    manifest: dict[str, Any] = json.loads((Path(out_dir) / MANIFEST).read_text())
    return manifest

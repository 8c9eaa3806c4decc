from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from turbofan.data.files import data_lines, read_engine_file
from turbofan.data.partition import (
    HOLDOUT,
    MANIFEST,
    PartitionPlan,
    Share,
    plan_by_subset,
    plan_iid,
    read_manifest,
    write_partition,
)

UNITS = np.arange(1, 101)


def engines_of(plan: PartitionPlan, subset: str = "FD001") -> list[list[int]]:
    return [share.engines[subset] for share in plan.sites]


def tiny_row(unit: int, cycle: int, value: str) -> str:
    return " ".join([str(unit), str(cycle), *[value] * 24]) + "  "


# Unit 1 has two cycles, unit 2 one, unit 3 two; each row's readings tell it apart.
TINY_SOURCE = "".join(
    tiny_row(u, c, v) + "\n"
    for u, c, v in [(1, 1, "1.1"), (1, 2, "1.2"), (2, 1, "2.1"), (3, 1, "3.1"), (3, 2, "3.2")]
)


def tiny_plan(site_units: list[int], held: list[int]) -> PartitionPlan:
    return PartitionPlan(
        scheme="iid",
        seed=0,
        sites=[Share(name="site-1", engines={"FD001": site_units})],
        holdout=Share(name=HOLDOUT, engines={"FD001": held}),
    )


@pytest.fixture
def tiny_source(write):
    return write("train_FD001.txt", TINY_SOURCE).parent


# --- planning ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_plan_and_another_seed_another():
    first = plan_iid("FD001", UNITS, 4, seed=7)
    again = plan_iid("FD001", UNITS, 4, seed=7)
    other = plan_iid("FD001", UNITS, 4, seed=8)

    assert again == first
    assert engines_of(other) != engines_of(first)


def test_iid_sites_and_holdout_split_every_engine_exactly_once():
    plan = plan_iid("FD001", UNITS, 4, seed=7, holdout=0.1)

    shares = [*engines_of(plan), plan.holdout.engines["FD001"]]
    every = [unit for share in shares for unit in share]

    assert sorted(every) == UNITS.tolist()  # disjoint and covering
    assert len(plan.holdout.engines["FD001"]) == 10
    assert sorted(len(share) for share in engines_of(plan)) == [22, 22, 23, 23]
    assert [share.name for share in plan.sites] == ["site-1", "site-2", "site-3", "site-4"]


def test_a_units_column_with_repeats_plans_like_the_unit_ids():
    column = np.repeat(UNITS, 3)

    assert plan_iid("FD001", column, 3, seed=1) == plan_iid("FD001", UNITS, 3, seed=1)


def test_no_holdout_leaves_every_engine_to_the_sites():
    plan = plan_iid("FD001", UNITS, 3, seed=7, holdout=0)

    assert plan.holdout.engines == {"FD001": []}
    assert sorted(u for share in engines_of(plan) for u in share) == UNITS.tolist()


def test_more_sites_than_engines_left_after_the_holdout_is_refused():
    with pytest.raises(ValueError, match="4 engines of FD001 cannot be split between 5 sites"):
        plan_iid("FD001", np.arange(1, 6), 5, holdout=0.2)


def test_by_subset_gives_each_subset_its_own_site_and_holds_out_from_each():
    units = {"FD003": np.arange(1, 101), "FD001": np.arange(1, 51)}

    plan = plan_by_subset(units, seed=3, holdout=0.1)

    assert [(share.name, list(share.engines)) for share in plan.sites] == [
        ("site-1", ["FD001"]),
        ("site-2", ["FD003"]),
    ]
    held = plan.holdout.engines
    assert {subset: len(held[subset]) for subset in held} == {"FD001": 5, "FD003": 10}
    for site in plan.sites:
        ((subset, engines),) = site.engines.items()
        assert not set(engines) & set(held[subset])
        assert sorted(engines + held[subset]) == units[subset].tolist()
    assert plan_by_subset(units, seed=3, holdout=0.1) == plan


# --- writing, on a tiny hand-made source -----------------------------------------------------


def test_written_units_are_renumbered_and_every_other_byte_is_copied(tiny_source, tmp_path):
    out = write_partition(tiny_plan([1, 3], [2]), tiny_source, tmp_path / "parts")

    site = (out / "site-1" / "train_FD001.txt").read_bytes()
    held = (out / HOLDOUT / "train_FD001.txt").read_bytes()

    rows = [(1, 1, "1.1"), (1, 2, "1.2"), (2, 1, "3.1"), (2, 2, "3.2")]
    assert site.decode() == "".join(tiny_row(u, c, v) + "\n" for u, c, v in rows)
    assert held.decode() == tiny_row(1, 1, "2.1") + "\n"


def test_an_existing_folder_is_not_touched_without_overwrite(tiny_source, tmp_path):
    out = tmp_path / "parts"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")

    with pytest.raises(FileExistsError, match="exists"):
        write_partition(tiny_plan([1, 3], [2]), tiny_source, out)

    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"


def test_overwrite_replaces_an_existing_folder_whole(tiny_source, tmp_path):
    out = tmp_path / "parts"
    out.mkdir()
    (out / "stale.txt").write_text("old partition")

    write_partition(tiny_plan([1, 3], [2]), tiny_source, out, overwrite=True)

    assert sorted(p.name for p in out.iterdir()) == [HOLDOUT, MANIFEST, "site-1"]
    beside = {p.name for p in tiny_source.iterdir()}
    assert beside == {"train_FD001.txt", "parts"}  # no staging or old folder left there


def test_a_failure_half_way_leaves_no_output_and_no_temporary_folder(tiny_source, tmp_path):
    parent = tmp_path / "out"
    parent.mkdir()

    with pytest.raises(ValueError, match="unit 9 is not in the source file"):
        write_partition(tiny_plan([1, 9], [2]), tiny_source, parent / "parts")

    assert list(parent.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_partition(tiny_source, tmp_path):
    out = write_partition(tiny_plan([1, 3], [2]), tiny_source, tmp_path / "parts")
    before = (out / "site-1" / "train_FD001.txt").read_bytes()

    with pytest.raises(ValueError, match="unit 9"):
        write_partition(tiny_plan([9], [2]), tiny_source, out, overwrite=True)

    assert (out / "site-1" / "train_FD001.txt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "train_FD001.txt"]


def test_with_no_holdout_every_written_file_is_still_a_valid_engine_file(tiny_source, tmp_path):
    out = write_partition(tiny_plan([1, 2, 3], []), tiny_source, tmp_path / "parts")

    written = sorted(out.rglob("train_*.txt"))

    assert [p.relative_to(out).as_posix() for p in written] == ["site-1/train_FD001.txt"]
    for path in written:
        read_engine_file(path)
    assert read_manifest(out)["holdout"] == {"name": HOLDOUT, "engines": {"FD001": []}}


# --- writing the shared FD001 file ------------------------------------------------------------


@pytest.fixture(scope="module")
def fd001_source(cmapss_dir):
    """Each source unit's lines of train_FD001.txt, and its unit ids."""
    path = cmapss_dir / "train_FD001.txt"
    lines: dict[int, list[str]] = {}
    for line in data_lines(path.read_text(encoding="ascii")):
        lines.setdefault(int(line.split(" ", 1)[0]), []).append(line)
    return lines


@pytest.fixture(scope="module")
def fd001_partition(cmapss_dir, tmp_path_factory):
    plan = plan_iid("FD001", np.arange(1, 101), 3, seed=11)
    out = write_partition(plan, cmapss_dir, tmp_path_factory.mktemp("fd001") / "parts")
    return plan, out


def test_every_written_fd001_file_parses_with_units_renumbered_from_one(fd001_partition):
    plan, out = fd001_partition

    for share in [*plan.sites, plan.holdout]:
        frame = read_engine_file(out / share.name / "train_FD001.txt")

        n = len(share.engines["FD001"])
        assert frame["unit"].unique().tolist() == list(range(1, n + 1))


def test_each_written_row_is_its_source_row_with_only_the_unit_id_changed(
    fd001_partition, fd001_source
):
    plan, out = fd001_partition

    for share in [*plan.sites, plan.holdout]:
        written = (out / share.name / "train_FD001.txt").read_text(encoding="ascii")
        expected = "".join(
            f"{new_id} {line.split(' ', 1)[1]}\n"
            for new_id, unit in enumerate(share.engines["FD001"], start=1)
            for line in fd001_source[unit]
        )
        assert written == expected


def test_a_written_site_unit_maps_back_to_its_source_unit_through_the_manifest(
    fd001_partition, fd001_source
):
    _, out = fd001_partition
    manifest: dict[str, Any] = read_manifest(out)
    site = manifest["sites"][1]
    source_unit = site["engines"]["FD001"][4]  # new unit 5 of site-2

    lines = data_lines((out / site["name"] / "train_FD001.txt").read_text())
    unit_5 = [line for line in lines if line.split(" ", 1)[0] == "5"]

    assert site["name"] == "site-2"
    assert [line.split(" ", 1)[1] for line in unit_5] == [
        line.split(" ", 1)[1] for line in fd001_source[source_unit]
    ]


def test_the_manifest_records_scheme_seed_and_every_share(fd001_partition):
    plan, out = fd001_partition

    manifest = read_manifest(out)

    assert (manifest["scheme"], manifest["seed"]) == ("iid", 11)
    assert manifest["sites"] == [
        {"name": share.name, "engines": share.engines} for share in plan.sites
    ]
    assert manifest["holdout"] == {"name": HOLDOUT, "engines": plan.holdout.engines}
    assert manifest["source_files"] == ["train_FD001.txt"]

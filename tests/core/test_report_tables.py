"""The tables the benchmarks write into the README: between markers, sites in order."""

from __future__ import annotations

import pytest

from benchmarks.readme import write_between_markers


def test_a_table_replaces_what_stood_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- t:start -->\nold\nrows\n<!-- t:end -->\nafter\n")

    write_between_markers(readme, "t", "| new |\n")

    assert readme.read_text() == "before\n<!-- t:start -->\n| new |\n<!-- t:end -->\nafter\n"


def test_empty_markers_are_filled(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- t:start -->\n<!-- t:end -->\n")

    write_between_markers(readme, "t", "| new |")

    assert readme.read_text() == "<!-- t:start -->\n| new |\n<!-- t:end -->\n"


def test_missing_markers_say_which(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")

    with pytest.raises(SystemExit, match="t:start"):
        write_between_markers(readme, "t", "x")
    assert readme.read_text() == "no markers\n"


def test_the_per_site_table_lists_sites_in_number_order():
    from federation.core.report import personal_table

    def run(site: str) -> dict[str, object]:
        return {"subset": "FD001", "alone": 20.0, "global": 11.6, "chosen": 11.6, "choice": site}

    personal = {site: [run(site)] for site in ("site-10", "site-2", "site-1")}

    rows = [line for line in personal_table(personal) if line.startswith("| site-")]

    assert [row.split(" | ")[0] for row in rows] == ["| site-1", "| site-2", "| site-10"]
    assert rows[0].endswith("| 20.00 | 11.60 | 11.60 | site-1 |")

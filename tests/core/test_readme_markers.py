"""The benchmarks write their tables into the README between markers."""

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

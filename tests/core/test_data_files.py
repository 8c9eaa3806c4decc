from __future__ import annotations

import gzip

import numpy as np
import pytest

from turbofan.data.files import (
    COLUMNS,
    DataFileError,
    read_engine_file,
    read_rul_file,
    summarise_engines,
)

PUBLISHED = {
    ("train", "FD001"): (20631, 100),
    ("train", "FD002"): (53759, 260),
    ("train", "FD003"): (24720, 100),
    ("train", "FD004"): (61249, 249),
    ("test", "FD001"): (13096, 100),
    ("test", "FD002"): (33991, 259),
    ("test", "FD003"): (16596, 100),
    ("test", "FD004"): (41214, 248),
}


def row(unit: float | str, cycle: float | str, fill: str = "0.5") -> str:
    """A C-MAPSS row as the files have it, trailing spaces included."""
    return " ".join([str(unit), str(cycle), *[fill] * 24]) + "  "


def rows(*pairs: tuple[float | str, float | str]) -> str:
    return "".join(row(u, c) + "\n" for u, c in pairs)


def error_of(path, reader=read_engine_file, **kwargs) -> DataFileError:
    with pytest.raises(DataFileError) as caught:
        reader(path, **kwargs)
    return caught.value


# --- the shared files -------------------------------------------------------------


@pytest.mark.parametrize(("kind", "subset"), sorted(PUBLISHED))
def test_it_reads_every_shared_file_with_the_published_counts(cmapss_dir, kind, subset):
    frame = read_engine_file(cmapss_dir / f"{kind}_{subset}.txt", kind)

    assert (len(frame), frame["unit"].nunique()) == PUBLISHED[(kind, subset)]
    assert list(frame.columns) == COLUMNS
    assert frame["unit"].dtype == np.int64 and frame["cycle"].dtype == np.int64


@pytest.mark.parametrize("subset", ["FD001", "FD002", "FD003", "FD004"])
def test_it_reads_each_rul_file_with_one_value_per_test_unit(cmapss_dir, subset):
    units = PUBLISHED[("test", subset)][1]

    rul = read_rul_file(cmapss_dir / f"RUL_{subset}.txt", expected_units=units)

    assert len(rul) == units and rul.min() >= 0


def test_the_summary_gives_kind_rows_units_and_run_lengths(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "train_FD001.txt")

    assert summarise_engines(frame) == {
        "kind": "train",
        "rows": 20631,
        "units": 100,
        "cycles": {"min": 128, "max": 362},
    }


# --- accepted variations --------------------------------------------------------------


def test_it_accepts_crlf_endings_and_trailing_blank_lines(write):
    text = row(1, 1) + "\r\n" + row(1, 2) + "\r\n\n  \n"

    frame = read_engine_file(write("train_X.txt", text))

    assert frame["cycle"].tolist() == [1, 2]


def test_a_full_last_row_without_newline_is_not_truncated(write):
    frame = read_engine_file(write("train_X.txt", rows((1, 1)) + row(1, 2).rstrip()))

    assert len(frame) == 2


# --- each malformed file gets its own message ------------------------------------------


def test_an_empty_file_is_reported_as_empty(write):
    error = error_of(write("train_X.txt", ""))

    assert "the file is empty" in str(error)
    assert error.line == 1


def test_a_whitespace_only_file_is_empty_too(write):
    assert "the file is empty" in str(error_of(write("train_X.txt", "  \n\n")))


def test_a_binary_file_is_reported_with_the_offending_byte(write):
    error = error_of(write("train_X.txt", rows((1, 1)).encode() + b"1 2 \x00\x01garbage"))

    assert "binary data (byte 0x00)" in error.problem
    assert "not a text file" in error.problem
    assert (error.line, error.column) == (2, 5)


def test_a_gzip_file_says_to_extract_it_first(write):
    error = error_of(write("train_X.txt", gzip.compress(rows((1, 1)).encode())))

    assert "gzip archive: extract it first" in error.problem
    assert error.line == 1


def test_a_row_with_too_few_columns_names_line_and_count(write):
    short = " ".join(row(1, 2).split()[:25])
    error = error_of(write("train_X.txt", rows((1, 1)) + short + "\n" + rows((1, 3))))

    assert error.problem.startswith("wrong number of columns: expected 26")
    assert "found 25" in error.problem
    assert (error.line, error.column) == (2, len(short) + 1)


def test_a_row_with_too_many_columns_points_at_the_first_extra_one(write):
    long = row(1, 2).rstrip() + " 7.5"
    error = error_of(write("train_X.txt", rows((1, 1)) + long + "\n"))

    assert "found 27" in error.problem
    assert (error.line, error.column) == (2, long.index(" 7.5") + 2)


def test_a_non_numeric_token_is_named_with_its_column(write):
    bad = row(1, 2).replace("0.5", "abc", 1)  # the first setting
    error = error_of(write("train_X.txt", rows((1, 1)) + bad + "\n"))

    assert error.problem == "'abc' in column 'setting_1' is not a number"
    assert (error.line, error.column) == (2, bad.index("abc") + 1)


def test_nan_and_inf_are_rejected_as_not_finite(write):
    bad = " ".join([*row(1, 1).split()[:-1], "nan"])
    error = error_of(write("train_X.txt", bad + "\n"))

    assert error.problem == "'nan' in column 's_21' is not a finite number"
    assert (error.line, error.column) == (1, bad.index("nan") + 1)


def test_a_duplicate_cycle_says_which_unit_and_cycle(write):
    error = error_of(write("train_X.txt", rows((1, 1), (1, 2), (1, 2), (1, 3))))

    assert error.problem == "duplicate cycle 2 of unit 1: expected cycle 3"
    assert (error.line, error.column) == (3, 3)


def test_a_skipped_cycle_says_what_was_expected(write):
    error = error_of(write("train_X.txt", rows((1, 1), (1, 2), (1, 4))))

    assert error.problem == "skipped cycle: unit 1 goes from cycle 2 to 4; expected cycle 3"
    assert error.line == 3


def test_a_unit_must_start_at_cycle_one(write):
    error = error_of(write("train_X.txt", rows((1, 1), (2, 2))))

    assert error.problem == "unit 2 starts at cycle 2; expected cycle 1"
    assert (error.line, error.column) == (2, 3)


def test_cycles_going_backwards_are_reported(write):
    error = error_of(write("train_X.txt", rows((1, 1), (1, 2), (1, 3), (1, 1))))

    assert "goes backwards" in error.problem and error.line == 4


def test_unit_ids_must_be_positive_integers(write):
    assert "is not positive" in error_of(write("train_X.txt", rows((0, 1)))).problem
    fractional = error_of(write("train_Y.txt", rows((1.5, 1))))
    assert fractional.problem == "unit id 1.5 is not a whole number"
    assert (fractional.line, fractional.column) == (1, 1)


def test_a_unit_split_into_two_blocks_is_rejected(write):
    error = error_of(write("train_X.txt", rows((1, 1), (2, 1), (1, 2))))

    assert "unit 1 appears again after other units" in error.problem
    assert error.line == 3


def test_a_truncated_last_line_is_told_apart_from_a_short_row(write):
    cut = row(1, 3)[:40]
    error = error_of(write("train_X.txt", rows((1, 1), (1, 2)) + cut))

    assert error.problem.startswith("truncated last line")
    assert "no line ending" in error.problem
    assert (error.line, error.column) == (3, len(cut) + 1)


def test_a_blank_line_inside_the_file_is_an_error(write):
    error = error_of(write("train_X.txt", rows((1, 1)) + "\n" + rows((1, 2))))

    assert error.problem.startswith("blank line") and error.line == 2


def test_the_message_reads_file_line_column_problem(write):
    path = write("train_X.txt", rows((1, 1), (1, 3)))

    assert str(error_of(path)) == (
        f"{path}, line 2, column 3: skipped cycle: unit 1 goes from cycle 1 to 3; expected cycle 2"
    )


def test_a_missing_file_is_reported_by_name(tmp_path):
    error = error_of(tmp_path / "nope.txt")

    assert error.problem == "no such file"


# --- RUL files ----------------------------------------------------------------------------


def test_a_rul_file_with_two_numbers_on_a_line_is_rejected(write):
    error = error_of(write("RUL_X.txt", "112 \n98 7\n"), read_rul_file)

    assert "expected one number per line" in error.problem
    assert (error.line, error.column) == (2, 4)


def test_a_negative_or_fractional_rul_is_rejected(write):
    assert (
        "'-3' is not a whole number" in error_of(write("RUL_A.txt", "-3\n"), read_rul_file).problem
    )
    assert (
        "'2.5' is not a whole number"
        in error_of(write("RUL_B.txt", "2.5\n"), read_rul_file).problem
    )


def test_a_rul_file_must_have_one_line_per_test_unit(write):
    error = error_of(write("RUL_X.txt", "112 \n98 \n"), read_rul_file, expected_units=3)

    assert error.problem == (
        "has 2 RUL values but the test file has 3 units: expected one line per test unit, "
        "in unit order"
    )
    assert error.line == 3

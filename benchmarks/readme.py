"""Benchmarks write their tables into the README between markers, so that its figures
are what a script measured, never typed by hand."""

from __future__ import annotations

import re
from pathlib import Path


def write_between_markers(path: Path, marker: str, text: str) -> None:
    """Replace what stands between ``<!-- marker:start -->`` and ``<!-- marker:end -->``
    in ``path`` with ``text``; exits with the reason if the markers are missing."""
    content = path.read_text()
    pattern = re.compile(
        rf"(<!-- {re.escape(marker)}:start -->\n)(?:.*?\n)?(<!-- {re.escape(marker)}:end -->)",
        flags=re.DOTALL,
    )
    if not pattern.search(content):
        raise SystemExit(f"{path}: no '<!-- {marker}:start -->' ... ':end -->' markers")
    body = text.rstrip("\n") + "\n"
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), content))

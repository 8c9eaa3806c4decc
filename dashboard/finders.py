"""Serve plotly.js from the plotly package the app already depends on.

The pages must work without internet, so the browser gets plotly.js from the app's
own static files. The plotly Python package ships the bundle; this finder exposes
that one file as ``plotly/plotly.min.js`` (and nothing else of the package), so it
is neither copied into the repository nor fetched from a CDN.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import CheckMessage, Error
from django.core.files.storage import FileSystemStorage

BUNDLE = "plotly.min.js"
PREFIX = "plotly"


def bundle_dir() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "package_data"
    return folder if (folder / BUNDLE).is_file() else None


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list[CheckMessage]:
        if bundle_dir() is None:
            return [Error("plotly.js not found: install the plotly package (requirements.txt)")]
        return []

    @overload
    def find(self, path: str, find_all: Literal[False] = False) -> str | None: ...

    @overload
    def find(self, path: str, find_all: Literal[True]) -> list[str]: ...

    def find(self, path: str, find_all: bool = False) -> str | list[str] | None:
        folder = bundle_dir()
        if folder is None or path != f"{PREFIX}/{BUNDLE}":
            return [] if find_all else None
        found = str(folder / BUNDLE)
        return [found] if find_all else found

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        folder = bundle_dir()
        if folder is not None:
            storage = FileSystemStorage(location=str(folder))
            # collectstatic writes it under plotly/: Django reads a storage's ``prefix``,
            # which FileSystemStorage does not declare.
            storage.prefix = PREFIX  # type: ignore[attr-defined]
            yield BUNDLE, storage

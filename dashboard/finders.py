"""Serve plotly.js from the plotly package the app already depends on.

The pages must work without internet, so the browser gets plotly.js from the app's
own static files. The plotly Python package ships the bundle; this finder exposes
that one file as ``plotly/plotly.min.js`` (and nothing else of the package), so it
is neither copied into the repository nor fetched from a CDN.

The bundle is 4.8 MB. The finder serves it from a copy in ``<VAR_DIR>/static-cache/``
with a gzipped twin beside it (made once, again when the package changes), which
WhiteNoise sends to every browser that accepts gzip: under a third of the bytes, also
where the app runs without ``collectstatic``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import CheckMessage, Error
from django.core.files.storage import FileSystemStorage

BUNDLE = "plotly.min.js"
PREFIX = "plotly"


def package_dir() -> Path | None:
    """The plotly package's folder holding the bundle, if the package is installed."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "package_data"
    return folder if (folder / BUNDLE).is_file() else None


def bundle_dir() -> Path | None:
    """Where the bundle is served from: the cache with its gzipped twin, or the package
    itself where the cache cannot be written."""
    source = package_dir()
    if source is None:
        return None
    cache = Path(settings.VAR_DIR) / "static-cache" / PREFIX
    try:
        _prepare(source / BUNDLE, cache)
    except OSError:
        return source  # a read-only var/: served as it is, uncompressed
    return cache


def _prepare(source: Path, cache: Path) -> None:
    """Copy the bundle into ``cache`` with a gzipped twin, unless an up-to-date pair is
    there. Each file is written whole and then renamed: another process never reads half."""
    copy, twin = cache / BUNDLE, cache / f"{BUNDLE}.gz"
    stat = source.stat()
    fresh = copy.exists() and copy.stat().st_size == stat.st_size
    if fresh and twin.exists() and copy.stat().st_mtime >= stat.st_mtime:
        return
    cache.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    for target, content in ((copy, data), (twin, gzip.compress(data, 9, mtime=0))):
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(content)
        os.replace(partial, target)


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list[CheckMessage]:
        if package_dir() is None:
            return [Error("plotly.js not found: install the plotly package (requirements.txt)")]
        return []

    @overload
    def find(self, path: str, find_all: Literal[False] = False) -> str | None: ...

    @overload
    def find(self, path: str, find_all: Literal[True]) -> list[str]: ...

    def find(self, path: str, find_all: bool = False) -> str | list[str] | None:
        folder = bundle_dir()
        name = path.removeprefix(f"{PREFIX}/")
        if folder is None or name not in _served(folder):
            return [] if find_all else None
        found = str(folder / name)
        return [found] if find_all else found

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        folder = bundle_dir()
        if folder is not None:
            storage = FileSystemStorage(location=str(folder))
            # collectstatic writes it under plotly/: Django reads a storage's ``prefix``,
            # which FileSystemStorage does not declare.
            storage.prefix = PREFIX  # type: ignore[attr-defined]
            # The gzipped twin too: WhiteNoise serves a found file's twin only if it
            # was listed with it.
            for name in _served(folder):
                yield name, storage


def _served(folder: Path) -> list[str]:
    """The bundle, and its gzipped twin where WhiteNoise serves from the finders (a
    ``collectstatic`` for production compresses what it collects itself)."""
    names = (
        [BUNDLE, f"{BUNDLE}.gz"] if getattr(settings, "WHITENOISE_USE_FINDERS", False) else [BUNDLE]
    )
    return [name for name in names if (folder / name).is_file()]

"""Fixtures every test may use, and the layout's markers.

Tests are laid out like the code: ``core/`` tests the Django-free cores (no database;
``make test-fast``), ``app/`` the Django apps on the database, ``commands/`` the
management commands run as a user would, ``integration/`` real worker processes on the
configured broker (marker ``integration``), ``browser/`` pages in headless Chromium
(marker ``browser``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cast import Cast, make_cast
from turbofan.data.source import DataSourceError, find_data_dir

MARKED_FOLDERS = {"integration": "integration", "browser": "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in MARKED_FOLDERS:
            item.add_marker(MARKED_FOLDERS[folder])


@pytest.fixture(scope="session")
def cmapss_dir() -> Path:
    """The shared C-MAPSS files; in CI their absence is a failure, not a skip."""
    try:
        return find_data_dir(download=False)
    except DataSourceError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(f"C-MAPSS data not available: {error}")


@pytest.fixture
def write(tmp_path: Path):
    """Write text (or bytes) to a file under tmp_path and return its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return _write


@pytest.fixture(autouse=True)
def fresh_pages(settings):
    """Every page computed afresh: a test that changes something sees it at once, and
    nothing one test cached is seen by the next."""
    from django.core.cache import cache

    settings.PROGRESS_CACHE_SECONDS = 0
    cache.clear()


@pytest.fixture
def media_root(settings, tmp_path):
    """Stage messages, vectors and model files go to a folder of the test's own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def cast(db, media_root, settings) -> Cast:
    """The cast of tests/cast.py: ada's federation, olga's site asking to join, otto."""
    # A fast hash: the default costs a third of a second per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return make_cast()


@pytest.fixture
def scheduled(monkeypatch) -> list[tuple[str, tuple]]:
    """What the coordinator's worker was asked to do (task name, arguments), recorded when
    asked for instead of sent to the broker once the transaction commits."""
    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(
        "federation.scheduling._after_commit",
        lambda name, args, **options: calls.append((name, args)),
    )
    return calls

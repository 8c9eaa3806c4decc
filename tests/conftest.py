from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.secure_cast import cast, pipeline_dict, scheduled  # noqa: F401  (fixtures)
from turbofan.data.source import DataSourceError, find_data_dir


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
def media_root(settings, tmp_path):
    """Uploaded results and model files go to a folder of the test's own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT

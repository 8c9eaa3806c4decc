"""Tests for turbofan.data.source: finding, downloading and verifying C-MAPSS.

A local HTTP server on 127.0.0.1 serves zips built from the shared data files, so
the real download code runs end to end without touching the internet.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from turbofan.data import source
from turbofan.data.source import (
    CMAPSS_SHA256,
    DataSourceError,
    cache_dir,
    download_cmapss,
    find_data_dir,
    missing_files,
    project_data_dir,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPOSITORY_ROOT.parent / "shared" / "data" / "cmapss"

needs_shared_data = pytest.mark.skipif(
    bool(missing_files(SHARED_DATA)),
    reason=f"the shared C-MAPSS files are not in {SHARED_DATA}; the zips are built from them",
)


# --- helpers and fixtures --------------------------------------------------------


def build_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """Return the bytes of a zip holding the given member names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression, compresslevel=1) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_placeholder_files(folder: Path) -> Path:
    """Create the 12 data file names (empty) so the folder counts as complete."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CMAPSS_SHA256:
        (folder / name).touch()
    return folder


def closed_port_url() -> str:
    """Return a URL on a local port nobody listens on, for connection-refused cases."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/cmapss.zip"


@pytest.fixture(scope="module")
def data_files() -> dict[str, bytes]:
    if missing_files(SHARED_DATA):
        pytest.skip(f"the shared C-MAPSS files are not in {SHARED_DATA}")
    return {name: (SHARED_DATA / name).read_bytes() for name in CMAPSS_SHA256}


@pytest.fixture(scope="module")
def zips(data_files: dict[str, bytes]) -> dict[str, bytes]:
    """Build every zip the tests serve once, by URL path."""
    flat = build_zip(data_files)
    inner = build_zip({f"CMAPSSData/{n}": d for n, d in data_files.items()}, zipfile.ZIP_DEFLATED)
    nested = build_zip(
        {
            # macOS metadata first: it must be skipped, not opened as the data zip.
            "__MACOSX/6. Turbofan/._CMAPSSData.zip": b"not a zip at all",
            "6. Turbofan Engine Degradation Simulation Data Set/readme.txt": b"read me",
            "6. Turbofan Engine Degradation Simulation Data Set/CMAPSSData.zip": inner,
        }
    )
    altered = dict(data_files)
    altered["train_FD001.txt"] = b"9" + data_files["train_FD001.txt"][1:]
    corrupted = bytearray(flat)
    middle = len(corrupted) // 2
    corrupted[middle : middle + 16] = bytes(b ^ 0xFF for b in corrupted[middle : middle + 16])
    slip = {f"../../escaped/{n}": d for n, d in data_files.items()}
    slip["/tmp/absolute-escape.txt"] = b"should never be written"
    return {
        "/flat.zip": flat,
        "/nested.zip": nested,
        "/truncated.zip": flat[: len(flat) // 2],
        "/corrupted.zip": bytes(corrupted),
        "/altered.zip": build_zip(altered),
        "/incomplete.zip": build_zip({n: d for n, d in data_files.items() if "FD004" not in n}),
        "/zip-slip.zip": build_zip(slip),
        "/not-a-zip.zip": b"<html>Access denied</html>",
    }


@pytest.fixture(scope="module")
def server(zips: dict[str, bytes]) -> Iterator[str]:
    """Serve the test zips on 127.0.0.1 and yield the base URL."""

    class ZipHandler(BaseHTTPRequestHandler):
        """Serve a zip by path; "?no-length" omits Content-Length, "?cut" sends half."""

        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            path, _, mode = self.path.partition("?")
            body = zips.get(path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            if mode != "no-length":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on purpose (size limit); not a test failure

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ZipHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """A folder to download into, holding one file that must survive every failure."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "already-here.txt").write_text("keep me")
    return folder


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never let a test see the developer's variables or write to the real cache."""
    monkeypatch.delenv("CMAPSS_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("CMAPSS_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def assert_only_preexisting_files(parent: Path) -> None:
    assert sorted(os.listdir(parent)) == ["already-here.txt"]


def assert_verified_copy(folder: Path) -> None:
    assert missing_files(folder) == []
    for name, expected in CMAPSS_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == expected


# --- constants and paths ---------------------------------------------------------


def test_the_checksums_cover_the_twelve_data_files() -> None:
    # Execute
    names = set(CMAPSS_SHA256)

    # Assert
    expected = {f"{kind}_FD00{n}.txt" for kind in ("train", "test", "RUL") for n in range(1, 5)}
    assert names == expected
    assert all(len(digest) == 64 for digest in CMAPSS_SHA256.values())
    assert source.OFFICIAL_URL.startswith("https://phm-datasets.s3.amazonaws.com/NASA/")


@needs_shared_data
def test_the_checksums_match_the_shared_files() -> None:
    # Execute
    actual = {n: hashlib.sha256((SHARED_DATA / n).read_bytes()).hexdigest() for n in CMAPSS_SHA256}

    # Assert
    assert actual == CMAPSS_SHA256


def test_the_project_data_dir_is_shared_data_cmapss_beside_the_checkout() -> None:
    # Execute
    folder = project_data_dir()

    # Assert
    assert folder == REPOSITORY_ROOT.parent / "shared" / "data" / "cmapss"


def test_the_cache_dir_prefers_cmapss_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    monkeypatch.setenv("CMAPSS_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    # Execute / Assert
    assert cache_dir() == tmp_path / "mine"


def test_the_cache_dir_falls_back_to_xdg_cache_home_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    monkeypatch.delenv("CMAPSS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    # Execute
    with_xdg = cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    without_xdg = cache_dir()

    # Assert
    assert with_xdg == tmp_path / "xdg" / "turbofan" / "cmapss"
    assert without_xdg == tmp_path / "home" / ".cache" / "turbofan" / "cmapss"


def test_missing_files_lists_what_is_absent(tmp_path: Path) -> None:
    # Prepare
    folder = write_placeholder_files(tmp_path / "data")
    (folder / "RUL_FD003.txt").unlink()

    # Execute / Assert
    assert missing_files(folder) == ["RUL_FD003.txt"]
    assert missing_files(tmp_path / "nowhere") == list(CMAPSS_SHA256)


# --- downloading -----------------------------------------------------------------


def test_it_downloads_and_verifies_a_flat_zip(server: str, parent: Path) -> None:
    # Prepare
    dest = parent / "cmapss"

    # Execute
    result = download_cmapss(dest, url=f"{server}/flat.zip", progress=False)

    # Assert
    assert result == dest
    assert_verified_copy(dest)
    assert sorted(os.listdir(parent)) == ["already-here.txt", "cmapss"]


def test_it_finds_the_files_in_a_nested_zip_inside_a_folder(server: str, parent: Path) -> None:
    # Prepare
    dest = parent / "cmapss"

    # Execute
    download_cmapss(dest, url=f"{server}/nested.zip", progress=False)

    # Assert
    assert_verified_copy(dest)
    assert sorted(os.listdir(dest)) == sorted(CMAPSS_SHA256)
    assert sorted(os.listdir(parent)) == ["already-here.txt", "cmapss"]


def test_it_shows_a_byte_progress_bar_on_stderr(
    server: str, parent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    download_cmapss(parent / "cmapss", url=f"{server}/flat.zip", progress=True)

    # Assert
    assert "C-MAPSS download" in capsys.readouterr().err


def test_it_only_writes_the_known_base_names_from_a_zip_slip_archive(
    server: str, tmp_path: Path
) -> None:
    # Prepare
    dest = tmp_path / "a" / "b" / "cmapss"

    # Execute
    download_cmapss(dest, url=f"{server}/zip-slip.zip", progress=False)

    # Assert
    assert_verified_copy(dest)
    assert sorted(os.listdir(dest)) == sorted(CMAPSS_SHA256)
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "a" / "escaped").exists()
    assert sorted(os.listdir(dest.parent)) == ["cmapss"]


@pytest.mark.parametrize("path", ["/truncated.zip", "/corrupted.zip", "/not-a-zip.zip"])
def test_a_damaged_zip_gives_a_clear_error_and_leaves_nothing_behind(
    server: str, parent: Path, path: str
) -> None:
    # Prepare
    url = f"{server}{path}"

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=url, progress=False)

    # Assert
    message = str(error.value)
    assert url in message
    assert "not a readable zip archive" in message
    assert "CMAPSS_DIR" in message
    assert_only_preexisting_files(parent)


def test_an_altered_file_gives_a_sha256_mismatch_naming_the_file(
    server: str, parent: Path, data_files: dict[str, bytes]
) -> None:
    # Prepare
    altered = b"9" + data_files["train_FD001.txt"][1:]
    actual = hashlib.sha256(altered).hexdigest()

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=f"{server}/altered.zip", progress=False)

    # Assert
    message = str(error.value)
    assert "sha256 mismatch" in message
    assert "train_FD001.txt" in message
    assert CMAPSS_SHA256["train_FD001.txt"] in message
    assert actual in message
    assert "test_FD001.txt" not in message
    assert_only_preexisting_files(parent)


def test_a_zip_without_some_files_names_the_missing_ones(server: str, parent: Path) -> None:
    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=f"{server}/incomplete.zip", progress=False)

    # Assert
    message = str(error.value)
    assert "train_FD004.txt" in message
    assert "RUL_FD004.txt" in message
    assert "train_FD001.txt" not in message
    assert_only_preexisting_files(parent)


def test_a_404_gives_a_clear_error(server: str, parent: Path) -> None:
    # Prepare
    url = f"{server}/no-such-file.zip"

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=url, progress=False)

    # Assert
    message = str(error.value)
    assert url in message
    assert "HTTP 404" in message
    assert_only_preexisting_files(parent)


def test_a_refused_connection_gives_a_clear_error(parent: Path) -> None:
    # Prepare
    url = closed_port_url()

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=url, timeout=5, progress=False)

    # Assert
    message = str(error.value)
    assert f"Could not connect to {url}" in message
    assert "refused" in message.lower()
    assert_only_preexisting_files(parent)


def test_a_download_without_content_length_still_works(server: str, parent: Path) -> None:
    # Execute
    download_cmapss(parent / "cmapss", url=f"{server}/flat.zip?no-length", progress=True)

    # Assert
    assert_verified_copy(parent / "cmapss")


def test_a_download_that_ends_early_gives_a_clear_error(server: str, parent: Path) -> None:
    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=f"{server}/flat.zip?cut", progress=False)

    # Assert
    assert "ended after" in str(error.value)
    assert_only_preexisting_files(parent)


@pytest.mark.parametrize("query", ["", "?no-length"], ids=["announced", "streamed"])
def test_a_download_over_the_size_limit_is_refused(
    server: str, parent: Path, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    # Prepare
    monkeypatch.setattr(source, "MAX_DOWNLOAD_BYTES", 1000)

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(parent / "cmapss", url=f"{server}/flat.zip{query}", progress=False)

    # Assert
    assert "larger than 1000 bytes" in str(error.value)
    assert_only_preexisting_files(parent)


def test_an_existing_complete_dest_is_returned_without_downloading(tmp_path: Path) -> None:
    # Prepare
    dest = write_placeholder_files(tmp_path / "cmapss")

    # Execute: the URL is unreachable, so any download attempt would fail.
    result = download_cmapss(dest, url=closed_port_url(), progress=False)

    # Assert
    assert result == dest


def test_an_existing_incomplete_dest_is_not_overwritten(tmp_path: Path) -> None:
    # Prepare
    dest = tmp_path / "cmapss"
    dest.mkdir()
    (dest / "train_FD001.txt").write_text("user data")

    # Execute
    with pytest.raises(DataSourceError) as error:
        download_cmapss(dest, url=closed_port_url(), progress=False)

    # Assert
    assert str(dest) in str(error.value)
    assert "delete or move it" in str(error.value)
    assert (dest / "train_FD001.txt").read_text() == "user data"


def test_an_existing_empty_dest_is_filled(server: str, parent: Path) -> None:
    # Prepare
    dest = parent / "cmapss"
    dest.mkdir()

    # Execute
    download_cmapss(dest, url=f"{server}/flat.zip", progress=False)

    # Assert
    assert_verified_copy(dest)


# --- finding ---------------------------------------------------------------------


def test_find_data_dir_honours_cmapss_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Prepare
    chosen = write_placeholder_files(tmp_path / "chosen")
    monkeypatch.setenv("CMAPSS_DIR", str(chosen))
    write_placeholder_files(cache_dir())

    # Execute
    result = find_data_dir(download=False)

    # Assert
    assert result == chosen


def test_find_data_dir_reports_a_cmapss_dir_with_missing_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    chosen = write_placeholder_files(tmp_path / "chosen")
    (chosen / "test_FD002.txt").unlink()
    monkeypatch.setenv("CMAPSS_DIR", str(chosen))
    write_placeholder_files(cache_dir())

    # Execute
    with pytest.raises(DataSourceError) as error:
        find_data_dir(download=False)

    # Assert
    message = str(error.value)
    assert "CMAPSS_DIR" in message
    assert str(chosen) in message
    assert "test_FD002.txt" in message


@needs_shared_data
def test_find_data_dir_uses_the_project_copy_before_the_cache() -> None:
    # Prepare
    write_placeholder_files(cache_dir())

    # Execute
    result = find_data_dir(download=False)

    # Assert
    assert result == project_data_dir()


def test_find_data_dir_uses_the_cache_when_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    monkeypatch.setattr(source, "project_data_dir", lambda: tmp_path / "no-project-copy")
    cache = write_placeholder_files(tmp_path / "cache")
    monkeypatch.setenv("CMAPSS_CACHE_DIR", str(cache))

    # Execute
    result = find_data_dir(download=False)

    # Assert
    assert result == cache


def test_find_data_dir_downloads_into_the_cache_when_nothing_is_there(
    server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    monkeypatch.setattr(source, "project_data_dir", lambda: tmp_path / "no-project-copy")
    cache = tmp_path / "fresh" / "cache"
    monkeypatch.setenv("CMAPSS_CACHE_DIR", str(cache))

    # Execute
    result = find_data_dir(url=f"{server}/nested.zip", progress=False)

    # Assert
    assert result == cache
    assert_verified_copy(cache)


def test_find_data_dir_without_download_lists_the_places_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    project = tmp_path / "no-project-copy"
    monkeypatch.setattr(source, "project_data_dir", lambda: project)
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("CMAPSS_CACHE_DIR", str(cache))

    # Execute
    with pytest.raises(DataSourceError) as error:
        find_data_dir(download=False)

    # Assert
    message = str(error.value)
    assert "CMAPSS_DIR: not set" in message
    assert str(project) in message
    assert str(cache) in message
    assert "set CMAPSS_DIR" in message
    assert not cache.exists()

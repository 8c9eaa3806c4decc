"""Where the NASA C-MAPSS turbofan data comes from, and how to fetch it safely.

The 12 data files (``train_FD00x.txt``, ``test_FD00x.txt``, ``RUL_FD00x.txt``) are
looked for in this order:

1. the folder named by the ``CMAPSS_DIR`` environment variable, if it is set;
2. the project copy in ``shared/data/cmapss`` beside the repository checkout;
3. the download cache (``CMAPSS_CACHE_DIR``, else ``$XDG_CACHE_HOME/turbofan/cmapss``,
   else ``~/.cache/turbofan/cmapss``);
4. a fresh download of the official NASA zip into that cache.

A download is all or nothing: the files are unpacked into a temporary folder beside
the destination, checked against the published SHA-256 sums, and only then renamed
into place, so a half-finished or damaged download never looks like usable data.

This module is plain Python (standard library and tqdm) on purpose: it runs in
command-line tools and workers that do not load Django.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

from tqdm import tqdm

OFFICIAL_URL: str = (
    "https://phm-datasets.s3.amazonaws.com/NASA/"
    "6.+Turbofan+Engine+Degradation+Simulation+Data+Set.zip"
)

# Published sums of the original NASA files (see shared/data/cmapss/SOURCE.md).
# readme.txt is left out: nothing reads it, and requiring it would reject copies
# that only kept the data.
CMAPSS_SHA256: dict[str, str] = {
    "train_FD001.txt": "963b5e22825b34d8b21c69e1aeb4af3e647050eb672ee8834ba4b5d91d2de0f8",
    "test_FD001.txt": "3cda7109ce17bafb5443f2ac926cfcf88154b941b8c4cf95eb55d1ddd6f52851",
    "RUL_FD001.txt": "a19c8ec94931949d0485bdc35118206e9c81c4547b422efb9cf86f4ceddbceca",
    "train_FD002.txt": "dac6c4dbc4e7c1bdeb5747da3d313d05c395bb99801b44a002b26a2ba13d788f",
    "test_FD002.txt": "de7b5bf7e998a985c378488480528b7c02cff1406a46740def362dda8d9b4e02",
    "RUL_FD002.txt": "c851dd96a6ea6998d3c4a8f834d3c8013aa90e93a6ed950dc826ad0655b2906b",
    "train_FD003.txt": "2abbe9968cc5e8eb091980f51b20f62bb4127336d3482cb52071d53bf23329e2",
    "test_FD003.txt": "299babd63c8d987cef079c4a425429f33b3a34797d803bbe2ad48c29dbd0d790",
    "RUL_FD003.txt": "df1e0566306b174a2de41c67a3e7a51877889598b78643fc3e5685259091b7cb",
    "train_FD004.txt": "27ef6160b6a1dcb2613a88de9c239f763b223f02cdc41dc5cdedc5dc189b6218",
    "test_FD004.txt": "1dc675fff0624bac10786927c6715b37d1297657137400d2b1a3138d777a3ba5",
    "RUL_FD004.txt": "196b836b85a95ac7fdbbf29c5fdf1657382eafa445644d114ffaaf50dc2975e1",
}

# The official zip is about 12 MB; 500 MB leaves ample room while stopping a wrong
# URL or a hostile server from filling the disk.
MAX_DOWNLOAD_BYTES: int = 500 * 1024 * 1024
# The largest C-MAPSS file is about 10 MB. Anything far bigger cannot match its
# checksum, so stop unpacking it early instead of writing a zip bomb to disk.
MAX_MEMBER_BYTES: int = 64 * 1024 * 1024
# The official zip wraps the data in one inner zip; a few levels are plenty and the
# bound keeps a maliciously self-nesting archive from recursing forever.
MAX_ZIP_NESTING: int = 3

_CHUNK_BYTES = 1024 * 1024

_FIX_HINT = (
    "To use a copy you already have, unpack the 12 files (train_FD00x.txt, "
    "test_FD00x.txt, RUL_FD00x.txt) into a folder and set CMAPSS_DIR to that folder."
)

# What zipfile and zlib raise for truncated, corrupt or unsupported archives.
# OSError also covers a full disk while unpacking; its message says so.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


class DataSourceError(RuntimeError):
    """The C-MAPSS files could not be found or fetched; the message says how to fix it."""


def project_data_dir() -> Path:
    """Return the project copy of the data: ``shared/data/cmapss`` beside the checkout.

    Returns
    -------
    Path
        ``<repository root>/../shared/data/cmapss``; it may not exist.
    """
    # This file is <root>/turbofan/data/source.py, so parents[2] is the repository root.
    repository_root = Path(__file__).resolve().parents[2]
    return repository_root.parent / "shared" / "data" / "cmapss"


def cache_dir() -> Path:
    """Return the folder where downloads are cached.

    Returns
    -------
    Path
        ``$CMAPSS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/turbofan/cmapss``, else
        ``~/.cache/turbofan/cmapss``. The folder may not exist yet.
    """
    explicit = _env_path("CMAPSS_CACHE_DIR")
    if explicit is not None:
        return explicit
    xdg_cache = _env_path("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg_cache is not None and xdg_cache.is_absolute():
        return xdg_cache / "turbofan" / "cmapss"
    return Path.home() / ".cache" / "turbofan" / "cmapss"


def missing_files(folder: Path) -> list[str]:
    """List the C-MAPSS data file names that are not present in a folder.

    Parameters
    ----------
    folder : Path
        Folder to inspect; it need not exist.

    Returns
    -------
    list[str]
        The missing names, in the order of ``CMAPSS_SHA256``; empty when complete.
    """
    folder = Path(folder)
    return [name for name in CMAPSS_SHA256 if not (folder / name).is_file()]


def find_data_dir(*, download: bool = True, url: str = OFFICIAL_URL, progress: bool = True) -> Path:
    """Return a folder that holds all 12 C-MAPSS data files.

    Looks at ``CMAPSS_DIR``, then the project copy, then the cache, and finally
    downloads into the cache. The environment is read on every call.

    Parameters
    ----------
    download : bool
        Whether to download the data when no complete copy is found.
    url : str
        Where to download the zip from.
    progress : bool
        Whether to show a progress bar on stderr while downloading.

    Returns
    -------
    Path
        A folder in which none of the 12 files is missing.

    Raises
    ------
    DataSourceError
        If ``CMAPSS_DIR`` is set but incomplete, if nothing is found and ``download``
        is False, or if the download fails.
    """
    explicit = _env_path("CMAPSS_DIR")
    if explicit is not None:
        # An explicit choice that is wrong must be reported, not quietly replaced by
        # another copy: the user would otherwise train on data they did not pick.
        missing = missing_files(explicit)
        if missing:
            raise DataSourceError(
                f"CMAPSS_DIR is set to {explicit}, but that folder lacks "
                f"{_describe_missing(explicit, missing)}. Put the 12 C-MAPSS files "
                "there, point CMAPSS_DIR at a folder that has them, or unset CMAPSS_DIR "
                "to use the project copy, the cache or a download."
            )
        return explicit

    project = project_data_dir()
    if not missing_files(project):
        return project

    cache = cache_dir()
    if not missing_files(cache):
        return cache

    if not download:
        raise DataSourceError(_not_found_message(project, cache, url))
    return download_cmapss(cache, url=url, progress=progress)


def download_cmapss(
    dest: Path,
    *,
    url: str = OFFICIAL_URL,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download the C-MAPSS zip, verify the 12 data files and place them in ``dest``.

    The zip is streamed to a temporary file beside ``dest``; the data files are
    found by base name at any depth, also inside nested zips, unpacked into a
    temporary folder, checked against ``CMAPSS_SHA256`` and only then renamed into
    place. Only the 12 known base names are ever written, so member paths such as
    ``../x`` or ``/etc/x`` cannot escape.

    Parameters
    ----------
    dest : Path
        Folder to create with the 12 files. If it already holds them, nothing is
        downloaded.
    url : str
        Where to download the zip from.
    timeout : float
        Seconds to wait on the connection before giving up.
    progress : bool
        Whether to show a byte progress bar on stderr.

    Returns
    -------
    Path
        ``dest``, now holding all 12 verified files.

    Raises
    ------
    DataSourceError
        On any failure (HTTP error, unreachable server, timeout, corrupt or
        incomplete zip, checksum mismatch). Nothing is left behind: no ``dest`` and
        no temporary files.
    """
    dest = Path(dest)
    if not missing_files(dest):
        return dest
    _ensure_dest_is_free(dest)
    scratch_space = _make_scratch_space(dest)
    # Everything (the zip, nested zips, the unpacked files) lives in one temporary
    # folder, so a single cleanup removes it all whatever goes wrong.
    with scratch_space as scratch_name:
        scratch = Path(scratch_name)
        archive_path = scratch / "download.zip"
        _fetch(url, archive_path, timeout=timeout, progress=progress)
        unpacked = scratch / "cmapss"
        unpacked.mkdir()
        _unpack_archive(archive_path, unpacked, scratch, url=url)
        _verify_checksums(unpacked, url=url)
        _move_into_place(unpacked, dest)
    return dest


# --- finding ---------------------------------------------------------------------


def _env_path(name: str) -> Path | None:
    """Return the environment variable as a path, or None when unset or empty."""
    # An empty value is treated as unset: that is what `VAR=` in a shell or an
    # env file usually means.
    value = os.environ.get(name, "")
    return Path(value).expanduser() if value else None


def _describe_missing(folder: Path, missing: list[str]) -> str:
    """Say in words what is wrong with a folder that lacks some files."""
    if not folder.is_dir():
        return "everything (the folder does not exist)"
    return f"{len(missing)} of {len(CMAPSS_SHA256)} files: {', '.join(missing)}"


def _not_found_message(project: Path, cache: Path, url: str) -> str:
    """Explain every place that was searched and how to make the data available."""
    return (
        "The C-MAPSS data files were not found. Looked in:\n"
        "  1. CMAPSS_DIR: not set\n"
        f"  2. the project copy {project}: lacks "
        f"{_describe_missing(project, missing_files(project))}\n"
        f"  3. the download cache {cache}: lacks "
        f"{_describe_missing(cache, missing_files(cache))}\n"
        f"{_FIX_HINT} Or allow the download (download=True) to fetch {url} into the "
        "cache, or set CMAPSS_CACHE_DIR to a folder that already holds the files."
    )


# --- downloading -----------------------------------------------------------------


def _ensure_dest_is_free(dest: Path) -> None:
    """Refuse to overwrite a folder with user data that is not a complete copy."""
    if not dest.exists():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        return
    raise DataSourceError(
        f"{dest} already exists but lacks {_describe_missing(dest, missing_files(dest))}, "
        "so it is not a complete C-MAPSS copy. It was not made by a finished download; "
        f"delete or move it and try again. {_FIX_HINT}"
    )


def _make_scratch_space(dest: Path) -> tempfile.TemporaryDirectory[str]:
    """Create a temporary folder beside dest, on the same file system for the rename."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-download-")
    except OSError as exc:
        raise DataSourceError(
            f"Cannot write the C-MAPSS download beside {dest}: {exc}. Set "
            f"CMAPSS_CACHE_DIR to a writable folder. {_FIX_HINT}"
        ) from exc


def _fetch(url: str, target: Path, *, timeout: float, progress: bool) -> None:
    """Stream url into target, with a size limit and a progress bar."""
    response = _open_url(url, timeout)
    with response:
        total = _content_length(response)
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise DataSourceError(_too_large_message(url))
        try:
            with open(target, "wb") as out, _progress_bar(total, progress) as bar:
                received = _copy_stream(
                    response, out, limit=MAX_DOWNLOAD_BYTES, on_chunk=bar.update
                )
        except (OSError, http.client.HTTPException) as exc:
            raise DataSourceError(
                f"The download from {url} broke off: {exc}. Try again. {_FIX_HINT}"
            ) from exc
    if received > MAX_DOWNLOAD_BYTES:
        raise DataSourceError(_too_large_message(url))
    # http.client does not complain when the server closes early, so check here.
    if total is not None and received < total:
        raise DataSourceError(
            f"The download from {url} ended after {received} of {total} bytes. "
            f"Try again. {_FIX_HINT}"
        )


def _open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    """Open url, turning every network failure into a DataSourceError."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DataSourceError(
            f"Could not download the C-MAPSS data: {url} answered HTTP {exc.code} "
            f"{exc.reason}. Check the URL. {_FIX_HINT}"
        ) from exc
    except urllib.error.URLError as exc:
        raise DataSourceError(
            f"Could not connect to {url}: {exc.reason}. Check the network connection "
            f"and the URL. {_FIX_HINT}"
        ) from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # TimeoutError and friends can escape URLError; ValueError is a malformed URL.
        raise DataSourceError(f"Could not download {url}: {exc}. {_FIX_HINT}") from exc


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Return the announced size in bytes, or None if the server did not say."""
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _progress_bar(total: int | None, enabled: bool) -> tqdm:
    """Build a byte-based progress bar on stderr (looked up now, so it can be captured)."""
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="C-MAPSS download",
        file=sys.stderr,
        disable=not enabled,
    )


def _too_large_message(url: str) -> str:
    """Explain that the download is implausibly big for the C-MAPSS zip."""
    return (
        f"The download from {url} is larger than {MAX_DOWNLOAD_BYTES} bytes, far more "
        f"than the C-MAPSS zip (about 12 MB); stopped to protect the disk. Check the "
        f"URL. {_FIX_HINT}"
    )


def _copy_stream(
    source: IO[bytes],
    target: BinaryIO,
    *,
    limit: int,
    on_chunk: Callable[[int], object] | None = None,
) -> int:
    """Copy at most ``limit + 1`` bytes and return how many were copied.

    A result above ``limit`` means the source was too large; reading one byte past
    the limit is how that is told apart from a source of exactly ``limit`` bytes.
    """
    copied = 0
    while copied <= limit:
        chunk = source.read(min(_CHUNK_BYTES, limit + 1 - copied))
        if not chunk:
            break
        target.write(chunk)
        copied += len(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return copied


# --- unpacking -------------------------------------------------------------------


def _unpack_archive(archive_path: Path, out_dir: Path, scratch: Path, *, url: str) -> None:
    """Unpack the 12 data files from the zip (or a zip nested in it) into out_dir."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            seen = _unpack_level(archive, out_dir, scratch, depth=0)
    except DataSourceError:
        raise
    except _ZIP_ERRORS as exc:
        raise DataSourceError(
            f"The file downloaded from {url} is not a readable zip archive ({exc}). "
            "The download may be damaged, or the URL may not point at the C-MAPSS zip. "
            f"Try again. {_FIX_HINT}"
        ) from exc
    missing = missing_files(out_dir)
    if missing:
        # Name the files that appear nowhere; if each appears somewhere but never
        # all together, name them all.
        absent = [name for name in missing if name not in seen] or missing
        raise DataSourceError(
            f"The zip downloaded from {url} does not contain all C-MAPSS files in one "
            f"place (searched every folder and nested zips); missing: {', '.join(absent)}. "
            f"Check the URL. {_FIX_HINT}"
        )


def _unpack_level(
    archive: zipfile.ZipFile, out_dir: Path, scratch: Path, *, depth: int
) -> set[str]:
    """Unpack the data files from this archive or, failing that, its nested zips.

    Returns the data file names seen here and below, for the error message.
    """
    members = _data_members(archive)
    if len(members) == len(CMAPSS_SHA256):
        for name, info in members.items():
            _extract_member(archive, info, out_dir / name, limit=MAX_MEMBER_BYTES)
        return set(members)

    seen = set(members)
    if depth >= MAX_ZIP_NESTING:
        return seen
    for info in _nested_zip_members(archive):
        # One nested zip on disk per level at a time, deleted once searched, so a
        # zip full of zips cannot pile up on the disk.
        nested_path = scratch / f"nested-{depth + 1}.zip"
        try:
            _extract_member(archive, info, nested_path, limit=MAX_DOWNLOAD_BYTES)
            with zipfile.ZipFile(nested_path) as nested:
                seen |= _unpack_level(nested, out_dir, scratch, depth=depth + 1)
        finally:
            nested_path.unlink(missing_ok=True)
        if not missing_files(out_dir):
            break
    return seen


def _data_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Map each data file base name to the first member with that name, at any depth."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = _base_name(info.filename)
        if name in CMAPSS_SHA256 and not info.is_dir() and not _is_mac_metadata(info):
            found.setdefault(name, info)
    return found


def _nested_zip_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Return the members that look like zips themselves (e.g. CMAPSSData.zip)."""
    return [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and _base_name(info.filename).lower().endswith(".zip")
        and not _is_mac_metadata(info)
    ]


def _base_name(member_name: str) -> str:
    """Return the last path part; zips made on Windows sometimes use backslashes."""
    return member_name.replace("\\", "/").rsplit("/", 1)[-1]


def _is_mac_metadata(info: zipfile.ZipInfo) -> bool:
    """Tell macOS resource-fork entries (``__MACOSX/``, ``._name``) apart from data.

    Zips made on a Mac carry ``__MACOSX/._CMAPSSData.zip``, which is not a zip and
    would otherwise be mistaken for the nested data archive.
    """
    path = info.filename.replace("\\", "/")
    return path.startswith("__MACOSX/") or _base_name(path).startswith("._")


def _extract_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, *, limit: int
) -> None:
    """Write one member to target (a path we chose, never the member's own path)."""
    with archive.open(info) as source, open(target, "wb") as out:
        copied = _copy_stream(source, out, limit=limit)
    if copied > limit:
        raise DataSourceError(
            f"The zip member {info.filename!r} is larger than {limit} bytes, far more "
            f"than any C-MAPSS file; refusing to unpack it. Check the URL. {_FIX_HINT}"
        )


# --- verifying and placing -------------------------------------------------------


def _verify_checksums(folder: Path, *, url: str) -> None:
    """Check every unpacked file against its published SHA-256 sum."""
    problems = []
    for name, expected in CMAPSS_SHA256.items():
        actual = _sha256_of(folder / name)
        if actual != expected:
            problems.append(f"{name}: expected sha256 {expected}, got {actual}")
    if problems:
        raise DataSourceError(
            f"The files downloaded from {url} do not match the published C-MAPSS "
            "checksums (sha256 mismatch):\n  " + "\n  ".join(problems) + "\n"
            "The download is damaged or is not the original NASA data; nothing was "
            f"kept. Try again. {_FIX_HINT}"
        )


def _sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks to keep memory flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _move_into_place(unpacked: Path, dest: Path) -> None:
    """Rename the verified folder to dest in one step, so dest is never half-filled."""
    if dest.is_dir() and not any(dest.iterdir()):
        # An empty folder (made by hand or by a tool) would block the rename on some
        # systems; it holds nothing to lose.
        dest.rmdir()
    try:
        os.rename(unpacked, dest)
    except OSError as exc:
        if not missing_files(dest):
            # Another process (e.g. a second worker) finished the same download first;
            # its verified copy is as good as ours, which the caller's cleanup removes.
            return
        raise DataSourceError(
            f"Could not move the verified C-MAPSS files into {dest}: {exc}. "
            f"Check that the folder is writable, or delete it and try again. {_FIX_HINT}"
        ) from exc

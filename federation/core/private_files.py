"""Folders and files readable by their owner only: a site's keystore and state, the
coordinator's database, models and masked vectors. Nothing in them is for another user
of the machine."""

from __future__ import annotations

import os
from pathlib import Path


def _owned(path: Path) -> bool:
    return path.stat().st_uid == os.getuid()


def private_folder(path: Path) -> Path:
    """``path``, created if missing, with mode 0700 when this user owns it (a folder
    someone else owns, such as a mounted volume, is left as its owner set it)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _owned(path) and path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty if missing, with mode 0600 when this user owns it (for a
    file another program creates later, as SQLite does its database)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if _owned(path) and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600 in a 0700 folder: a crash leaves either
    the old or the new content, and no other user can read either."""
    private_folder(path.parent)
    partial = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)

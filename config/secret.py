"""The secret key of a local (non-production) installation."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def local_secret_key(path: Path) -> str:
    """Return the key stored at ``path``, creating it once if missing.

    Several processes (web server, workers) start at the same moment on a fresh
    checkout; the key is written to a temporary file and hard-linked into place,
    so exactly one of them creates it and the others read that one.
    """
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race; use its key
        finally:
            os.unlink(tmp)
    return path.read_text().strip()

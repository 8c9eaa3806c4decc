"""The site's keystore: its long-term identity, and its state of each open round (its
round keys, and what it sent, so that a post that failed is sent again unchanged).

Lives in the site's state folder, readable by the site's user only (files 0600 in 0700
folders), and never leaves the site. Every file is written atomically, so a crash leaves
either the old or the new content. A round's secrets go when the site's part of it is
over, or an hour after the deadline of the last stage it answered (a round the
coordinator never finished): nothing waits on disk for longer than that.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.core.private_files import private_folder, write_private
from federation.core.secagg.primitives import SigningKey

IDENTITY = "identity.key"
ROUNDS = "rounds"
# Secrets of a round nobody finished (the coordinator stopped, the site left) are removed
# this long after the deadline of the last stage the site answered: a coordinator that
# comes back within it may still finish the round.
GRACE_SECONDS = 3600
# Without a deadline (an older state file), this long after it was written.
STALE_SECONDS = 24 * 3600


class Keystore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "keystore"

    def public_identity(self) -> bytes | None:
        """The public half of the site's identity, None before it has one (never makes one)."""
        if not (self.folder / IDENTITY).exists():
            return None
        return self.identity().public

    def identity(self) -> SigningKey:
        """The site's Ed25519 identity, created on first use."""
        path = self.folder / IDENTITY
        if not path.exists():
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            self._write(path, pem)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        public = loaded.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return SigningKey(loaded, public)

    def load_round(self, round_id: str) -> dict[str, Any] | None:
        try:
            stored: dict[str, Any] = json.loads(self._round_path(round_id).read_text())
        except FileNotFoundError:
            return None
        state: dict[str, Any] = stored.get("state", stored)  # older files: the state alone
        return state

    def save_round(
        self, round_id: str, state: dict[str, Any], *, deadline: datetime | None = None
    ) -> None:
        """Keep the site's state of a round; ``deadline``: of the stage just answered."""
        stored = {"deadline": deadline.timestamp() if deadline else None, "state": state}
        self._write(self._round_path(round_id), json.dumps(stored).encode())
        self.prune()

    def forget_round(self, round_id: str) -> None:
        self._round_path(round_id).unlink(missing_ok=True)

    def prune(self, now: float | None = None) -> list[str]:
        """Remove the secrets of rounds past their grace; returns their ids."""
        now = time.time() if now is None else now
        removed = []
        for path in (self.folder / ROUNDS).glob("*.json"):
            try:
                deadline = json.loads(path.read_text()).get("deadline")
                expires = (
                    deadline + GRACE_SECONDS if deadline else path.stat().st_mtime + STALE_SECONDS
                )
            except (OSError, ValueError, AttributeError):
                continue  # being replaced, or not ours to judge: the next prune sees it
            if expires < now:
                path.unlink(missing_ok=True)
                removed.append(path.stem)
        return removed

    def _round_path(self, round_id: str) -> Path:
        if not round_id.isalnum():
            raise ValueError(f"not a round id: {round_id!r}")
        return self.folder / ROUNDS / f"{round_id}.json"

    def _write(self, path: Path, data: bytes) -> None:
        private_folder(self.folder)
        write_private(path, data)

"""The site's keystore: its long-term identity, and its state of each open round (its
round keys, and what it sent, so that a post that failed is sent again unchanged).

Lives in the site's state folder, readable by the site's user only (mode 0600), and
never leaves the site. Every file is written atomically, so a crash leaves either the
old or the new content.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.core.secagg.primitives import SigningKey

IDENTITY = "identity.key"
ROUNDS = "rounds"
# Secrets of a round nobody finished (the coordinator stopped, the site left) are
# removed after this long; no round lasts that long.
STALE_SECONDS = 7 * 24 * 3600


class Keystore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "keystore"

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
            state: dict[str, Any] = json.loads(self._round_path(round_id).read_text())
            return state
        except FileNotFoundError:
            return None

    def save_round(self, round_id: str, state: dict[str, Any]) -> None:
        self._write(self._round_path(round_id), json.dumps(state).encode())
        self._prune()

    def forget_round(self, round_id: str) -> None:
        self._round_path(round_id).unlink(missing_ok=True)

    def _round_path(self, round_id: str) -> Path:
        if not round_id.isalnum():
            raise ValueError(f"not a round id: {round_id!r}")
        return self.folder / ROUNDS / f"{round_id}.json"

    def _prune(self) -> None:
        cutoff = time.time() - STALE_SECONDS
        for path in (self.folder / ROUNDS).glob("*.json"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_suffix(path.suffix + ".tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)

"""Who a site talks to: the identity keys of the peers it ran each secure round with.

Every secure round's parameters name the identity key of each site in it, as the
coordinator registered it; each site signs its round keys with its own and checks the
others' signatures against these. A coordinator that swapped a peer's key for one of
its own could read what that peer's shares hide, so a site records, per round, the
fingerprint of its own key and of each peer's, and warns when a peer's key differs from
the last round it was in. Two owners compare fingerprints over the phone
(``site_log --peers``); nothing here is sent anywhere.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.core.private_files import private_folder
from federation.core.secagg.primitives import fingerprint

log = logging.getLogger(__name__)

PEERS = "peers.jsonl"  # in the site's state folder: one line per secure round


class PeerBook:
    """The site's record of the keys it met, one line per secure round."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / PEERS

    def entries(self) -> list[dict[str, Any]]:
        """Every round recorded, oldest first."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def record(
        self,
        *,
        round_id: str,
        federation: str,
        round_label: str,
        site: int,
        identities: dict[int, bytes],
    ) -> list[str]:
        """Note the keys of a secure round (once per round); returns a warning per peer
        whose key is not the one it had in the last round this site met it."""
        entries = self.entries()
        if any(e["round_id"] == round_id for e in entries):
            return []
        known: dict[str, str] = {}  # "federation/site" -> the latest fingerprint seen
        for entry in entries:
            for peer, print_ in entry["peers"].items():
                known[f"{entry['federation']}/{peer}"] = print_
        peers = {str(k): fingerprint(v) for k, v in sorted(identities.items()) if k != site}
        warnings = []
        for peer, print_ in peers.items():
            before = known.get(f"{federation}/{peer}")
            if before is not None and before != print_:
                warnings.append(
                    f"{federation}, {round_label}: site {peer}'s identity key changed from "
                    f"{before} to {print_}: confirm the new fingerprint with its owner before "
                    "trusting this round"
                )
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "round_id": round_id,
            "federation": federation,
            "round": round_label,
            "site": site,
            "own": fingerprint(identities[site]) if site in identities else None,
            "peers": peers,
            "changed": warnings,
        }
        private_folder(self.path.parent)
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        for warning in warnings:
            log.warning("%s", warning)
        return warnings

"""A site's own ledger of the privacy its data spent, as the site computes it.

The coordinator keeps the federation's budget, but a member need not trust it: it could
run more rounds than it announced. Each time this site sends an input that carries
differential-privacy noise (a training round or an analytics query), it notes the noise
multiplier here, and computes the epsilon spent with the same accountant as the
coordinator (:func:`federation.core.privacy.epsilon_spent`). It counts every such round
as a Gaussian mechanism on its data, without the amplification of being sampled: the
site knows it was in the round, so that is the bound that holds for it.

With a cap (``site_worker --epsilon-cap``), the site refuses, at a round's first stage,
a noisy round that would take it past the cap, and, because a training round without
noise is not covered at all, every training round without noise. (Rounds without noise
that only sum statistics or counts, such as the setup rounds, still run: the cap is about
what its model updates reveal.) Nothing here is sent anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.core.privacy import Spend, epsilon_spent
from federation.core.private_files import private_folder

LEDGER = "privacy.jsonl"  # in the site's state folder: one line per noisy input sent
DEFAULT_DELTA = 1e-5


class OverBudget(ValueError):
    """The round would take this site past its own privacy cap."""


@dataclass(frozen=True)
class SitePolicy:
    """The site owner's privacy cap: None for no cap of its own."""

    epsilon_cap: float | None = None
    delta: float = DEFAULT_DELTA


class PrivacyLedger:
    """The noisy inputs this site sent, and what they spent."""

    def __init__(self, state_dir: Path, policy: SitePolicy | None = None) -> None:
        self.path = Path(state_dir) / LEDGER
        self.policy = policy or SitePolicy()

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def spent(self, extra: float | None = None) -> float:
        """Epsilon at the policy's delta of every recorded input (and one more of noise
        multiplier ``extra``)."""
        multipliers = [float(e["noise_multiplier"]) for e in self.entries()]
        if extra is not None:
            multipliers.append(extra)
        return epsilon_spent([Spend(x) for x in multipliers], self.policy.delta)

    def running(self) -> list[dict[str, Any]]:
        """Every entry with the epsilon spent once it was sent (the ledger's last column)."""
        rows, spends = [], []
        for entry in self.entries():
            spends.append(Spend(float(entry["noise_multiplier"])))
            rows.append({**entry, "epsilon": epsilon_spent(spends, self.policy.delta)})
        return rows

    def check(self, privacy: dict[str, Any] | None, what: str, *, trains: bool) -> None:
        """Raise :class:`OverBudget` if this site's cap does not allow the round ``what``
        with round privacy ``privacy`` (None: no noise); ``trains``: a training round."""
        cap = self.policy.epsilon_cap
        if cap is None or (not privacy and not trains):
            return
        if not privacy:
            raise OverBudget(
                f"{what} trains without privacy noise, and this site's owner capped its privacy "
                f"spend at epsilon {cap:g} (site_worker --epsilon-cap)"
            )
        after = self.spent(float(privacy["noise_multiplier"]))
        if after > cap:
            raise OverBudget(
                f"{what} would take this site's privacy spend to epsilon {after:.2f}, past "
                f"its owner's cap of {cap:g} (site_worker --epsilon-cap); spent so far "
                f"{self.spent():.2f}"
            )

    def record(self, *, privacy: dict[str, Any], federation: str, round_label: str) -> None:
        """Note a noisy input this site sent."""
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "federation": federation,
            "round": round_label,
            "noise_multiplier": float(privacy["noise_multiplier"]),
            "clip": float(privacy.get("clip", 0.0)),
        }
        private_folder(self.path.parent)
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

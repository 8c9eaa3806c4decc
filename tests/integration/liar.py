"""A member that lies: a site worker modified by its owner, speaking the site API with a
real credential, as a hostile member of a federation would.

Honest in the setup rounds; in training round ``n`` it does what ``--plan`` says:

- ``poison``: sends a spoiled model (random values across the whole allowed range) and,
  when the round scores a candidate, says it is not worse;
- ``garble``: seals zeros to ``--victim`` instead of its shares (so that the victim
  cannot unmask it, or, before complaints existed, dropped out unnamed);
- ``unmask``: reveals a wrong share of each living neighbour's seed.

Run: ``python -m tests.integration.liar --coordinator URL --data-dir D --state-dir S
--victim ID --plan 1=poison,2=garble,3=unmask --seconds 600`` with ``SITE_CREDENTIAL``
set.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--victim", type=int, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    plan = dict(item.split("=") for item in args.plan.split(","))

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import numpy as np

    from federation.core import messages as m
    from turbofan.data.checks import training_rows
    from worker import site_runtime

    honest_input = site_runtime.site_input
    attack: dict[str, str] = {"now": ""}

    def spoiled_input(task: dict[str, Any], data: Any, parameters: Any, *rest: Any) -> Any:
        values, metadata = honest_input(task, data, parameters, *rest)
        if attack["now"] == "poison":
            rng = np.random.default_rng(0)
            values = rng.uniform(-parameters.value_range, parameters.value_range, len(values))
            if m.KEY_VOTE in metadata:
                metadata = {**metadata, m.KEY_VOTE: 0}
        return values, metadata

    site_runtime.site_input = spoiled_input  # type: ignore[assignment]  # the modification

    class Liar(site_runtime.SiteRuntime):
        def answer(self, work: dict[str, Any]) -> tuple[str, bool]:
            task = work.get("work", {})
            training = task.get(m.KEY_KIND) == "train"
            attack["now"] = plan.get(str(work["round"]["number"]), "") if training else ""
            outcome, sent = super().answer(work)
            print(f"{attack['now'] or 'honest'}: {outcome}", flush=True)
            return outcome, sent

        def request(
            self,
            method: str,
            path: str,
            body: dict[str, Any] | None = None,
            about: dict[str, Any] | None = None,
        ) -> tuple[int, dict[str, Any]]:
            if method == "POST" and body is not None:
                body = tamper(attack["now"], body, args.victim)
            return super().request(method, path, body, about)

    liar = Liar(args.coordinator, os.environ["SITE_CREDENTIAL"], args.data_dir, args.state_dir)
    frame = training_rows(args.data_dir)
    liar.request(
        "PUT",
        "/api/v1/site/data",
        {
            "train_rows": len(frame),
            "train_engines": int(frame["unit"].nunique()),
            "subsets": ["FD001"],
        },
    )
    liar.register_identity()
    print("ready", flush=True)
    print(liar.work_session(args.seconds), flush=True)


def tamper(attack: str, body: dict[str, Any], victim: int) -> dict[str, Any]:
    from federation.core import messages as m
    from federation.core.secagg import protocol as p

    stage = body.get(p.STAGE)
    if attack == "garble" and stage == p.SHARE_KEYS and str(victim) in body[p.SEALED]:
        body[p.SEALED][str(victim)] = m.b64(bytes(168))
    if attack == "unmask" and stage == p.UNMASK:
        for owner, share in body[p.SEED_SHARES].items():
            if owner != str(body[p.SITE]):
                x, y = share.split(":")
                body[p.SEED_SHARES][owner] = f"{x}:{int(y, 16) ^ 1:0{len(y)}x}"
    return body


if __name__ == "__main__":
    main()

"""Secure aggregation in process: time per site and on the server.

    python benchmarks/secagg.py [--n 10 50 100] [--d 100000] [--dropout 0 0.1]

For each number of sites n, vector length d and dropout rate, runs one secure sum
(SecAgg+ graph above 8 sites, threshold half the neighbourhood plus one), with the
given share of sites dropping out after sharing their keys (before sending their
masked input), and prints the mean client time per site, the server's time, and
the server's unmasking time alone. The comparison with Flower's SecAgg+ in the
same run is not in this script yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from federation.core.secagg import protocol as p  # noqa: E402
from federation.core.secagg.client import SecAggClient  # noqa: E402
from federation.core.secagg.primitives import Quantiser, SigningKey  # noqa: E402
from federation.core.secagg.server import SecAggServer  # noqa: E402


def one_round(n: int, d: int, dropout: float, seed: int = 0) -> dict[str, float]:
    sites = tuple(range(1, n + 1))
    keys = {s: SigningKey.generate() for s in sites}
    identities = {s: keys[s].public for s in sites}
    degree = p.secagg_plus_degree(n) if n > 8 else 0
    neighbourhood = (degree or n - 1) + 1
    settings = p.Settings("bench", sites, threshold=neighbourhood // 2 + 1, neighbours=degree)
    quantiser = Quantiser(clip=8.0, levels=2**20, n_sites=n)
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(sites, size=round(dropout * n), replace=False).tolist())
    values = rng.uniform(-1, 1, d)
    seconds = {"client": 0.0, "server": 0.0}

    def timed(side, work):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = work()
        seconds[side] += time.perf_counter() - started
        return out

    clients = timed(
        "client",
        lambda: {s: SecAggClient(settings, s, keys[s], identities, quantiser) for s in sites},
    )
    server = SecAggServer(settings, identities, quantiser)
    messages = timed("client", lambda: [c.advertise() for c in clients.values()])
    advertised = timed("server", lambda: server.collect_keys(messages))
    shares = timed("client", lambda: [c.share(advertised) for c in clients.values()])
    routed = timed("server", lambda: server.collect_shares(shares))
    live = [s for s in sites if s not in dropped]
    masked = timed("client", lambda: [clients[s].mask(values, routed.get(s, {})) for s in live])
    alive, gone = timed("server", lambda: server.collect_masked(masked))
    answers = timed("client", lambda: [clients[s].unmask(alive, gone) for s in sorted(alive)])
    started = time.perf_counter()
    total = server.finish(answers)
    unmask_time = time.perf_counter() - started
    seconds["server"] += unmask_time
    error = float(np.abs(total - len(alive) * values).max())
    return {
        "client_per_site": seconds["client"] / n,
        "server": seconds["server"],
        "unmask": unmask_time,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--d", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args()
    print(
        f"{'n':>5} {'d':>9} {'drop':>5} {'client/site s':>14} {'server s':>9} "
        f"{'unmask s':>9} {'max error':>10}"
    )
    for d in args.d:
        for n in args.n:
            for dropout in args.dropout:
                r = one_round(n, d, dropout)
                print(
                    f"{n:>5} {d:>9} {dropout:>5.0%} {r['client_per_site']:>14.3f} "
                    f"{r['server']:>9.3f} {r['unmask']:>9.3f} {r['error']:>10.2e}"
                )


if __name__ == "__main__":
    main()

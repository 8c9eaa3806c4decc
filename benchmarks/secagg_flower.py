"""Flower's SecAgg+ in one process, for ``benchmarks/secagg.py``: one round, timed.

Needs ``flwr`` (``requirements-bench.txt``), which only the benchmark environment has:

    make bench-secagg          # creates .venv-bench on first use, then runs secagg.py

What is Flower's code: every step of the protocol. The server side is Flower's
``SecAggPlusWorkflow`` (``flwr.server.workflow``), called as ``DefaultWorkflow`` calls
its fit workflow in a round; the sites are one Flower ``ClientApp`` with Flower's
``secaggplus_mod`` around a ``NumPyClient``, each with its own ``Context`` (where the
mod keeps its state between stages), as a SuperNode runs it. Key agreement, Shamir
sharing, encryption of shares, quantisation, masks and unmasking are Flower's.

What is the harness (this file):

- ``InProcessGrid``, a Flower ``Grid`` that hands each message straight to the
  addressee's ``ClientApp`` in this process (no network, no SuperLink, no Ray, no
  subprocess) and returns the replies. It gives each addressee its own copy of the
  message content, as a transport would: the workflow sends one ``RecordDict`` to all
  sites, and the mod pops the stage from it. Copying is timed apart and counted on
  neither side. A site that drops out answers the setup and share-keys messages,
  then never again: the grid returns without its reply, as after a timeout.
- the round's bookkeeping that ``DefaultWorkflow`` does before the fit workflow
  (round number, global parameters) and a ``SimpleClientManager`` with one Flower
  ``GridClientProxy`` per site, as Flower's node-registration thread would leave it;
- ``_Strategy``, a ``FedAvg`` that samples every site and whose ``aggregate_fit``
  keeps the workflow's securely aggregated parameters as they are instead of
  averaging n copies of them again (work outside secure aggregation, left out in
  Flower's favour);
- ``_Site.fit``, which returns the site's input vector (its making is timed apart).

The workflow outputs the weighted average of the survivors' inputs; every site
reports one example with ``max_weight=1`` so the weights are exactly 1, and the
caller multiplies by the number of survivors to compare with the plain sum.
"""

from __future__ import annotations

import copy
import logging
import random
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.server import ServerConfig, SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

try:
    from importlib.metadata import version

    FLWR_VERSION = version("flwr")
except Exception:  # pragma: no cover - only for the printed label
    FLWR_VERSION = "unknown"

RUN_ID = 1
# Site s is node NODE_BASE + s: Flower's node ids are its own (the SuperLink is node 1).
NODE_BASE = 1_000_000
# Messages a dropping site still answers: SecAgg+ setup (its public keys) and share keys.
ANSWERED_BEFORE_DROPPING = 2


class Deadline(BaseException):
    """The Flower round ran past its time limit (not an Exception: nothing swallows it)."""


@dataclass
class Clock:
    """Seconds spent in the sites' ``ClientApp`` calls, in copying messages, and in
    making the sites' inputs (inside the client calls, taken off their time)."""

    client: float = 0.0
    transport: float = 0.0
    inputs: float = 0.0


@dataclass(frozen=True)
class FlowerRound:
    """One timed round of Flower's SecAgg+.

    ``total`` is the survivors' summed input as Flower's server unmasked it (the
    workflow's average times the number of survivors), ``None`` if it halted.
    """

    client_seconds: float
    server_seconds: float
    total: np.ndarray | None
    survivors: int


class InProcessGrid(Grid):
    """A Flower ``Grid`` that runs each addressee's ``ClientApp`` at once, in process.

    Parameters
    ----------
    app : the sites' ``ClientApp``
    contexts : each node's ``Context``, kept across messages as a SuperNode keeps it
    dropped : nodes that stop answering after ``ANSWERED_BEFORE_DROPPING`` messages
    clock : where the client and transport seconds go
    """

    def __init__(
        self, app: ClientApp, contexts: dict[int, Context], dropped: set[int], clock: Clock
    ) -> None:
        self.app, self.contexts, self.dropped, self.clock = app, contexts, dropped, clock
        self.delivered = dict.fromkeys(contexts, 0)
        self.replies: dict[str, Message] = {}
        self._run = Run.create_empty(RUN_ID)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            started = time.perf_counter()
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as a SuperLink does
            node = message.metadata.dst_node_id
            self.delivered[node] += 1
            if node in self.dropped and self.delivered[node] > ANSWERED_BEFORE_DROPPING:
                self.clock.transport += time.perf_counter() - started
                continue  # the site is gone: no reply, ever
            delivered = Message(
                metadata=copy.deepcopy(message.metadata), content=copy.deepcopy(message.content)
            )
            self.clock.transport += time.perf_counter() - started
            started = time.perf_counter()
            reply = self.app(delivered, self.contexts[node])
            self.clock.client += time.perf_counter() - started
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class _Site(NumPyClient):
    def __init__(self, make_input: Callable[[], np.ndarray], clock: Clock) -> None:
        self.make_input, self.clock = make_input, clock

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        started = time.perf_counter()
        values = self.make_input()
        self.clock.inputs += time.perf_counter() - started
        return [values], 1, {}


class _Strategy(FedAvg):
    """FedAvg sampling every site; keeps the securely aggregated parameters as they are."""

    def __init__(self, n: int) -> None:
        super().__init__(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n
        )
        self.aggregate: Parameters | None = None

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        # SecAggPlusWorkflow set every result's parameters to the unmasked average.
        self.aggregate = results[0][1].parameters if results else None
        return self.aggregate, {}


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Deadline` in the main thread once ``seconds`` have passed."""

    def expire(signum: int, frame: Any) -> None:
        raise Deadline

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def flower_round(
    *,
    sites: tuple[int, ...],
    dropped: set[int],
    make_input: Callable[[int], np.ndarray],
    num_shares: int,
    threshold: int,
    clip: float,
    levels: int,
    modulus_bits: int,
    seed: int = 0,
) -> FlowerRound:
    """Run and time one round of Flower's SecAgg+ over ``sites``.

    Parameters
    ----------
    sites : node ids, one per site
    dropped : sites that send their keys and shares, then drop out
    make_input : a site's input vector, from its id
    num_shares : a site's neighbourhood (itself and its neighbours), Flower's ``num_shares``
    threshold : shares needed to rebuild a secret, Flower's ``reconstruction_threshold``
    clip, levels, modulus_bits : clipping range, quantisation levels, log2 of the modulus

    Returns
    -------
    FlowerRound
        Client seconds (all sites), server seconds and the unmasked sum.
    """
    logging.getLogger("flwr").setLevel(logging.WARNING)
    # What Flower's ServerApp runtime sets before a server-side workflow runs.
    TaskIdentity.task_id, TaskIdentity.run_id = 1, RUN_ID
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    random.seed(seed)  # the workflow shuffles the sites with `random` to build the graph
    clock = Clock()

    def client_fn(context: Context) -> Any:
        return _Site(lambda: make_input(context.node_id - NODE_BASE), clock).to_client()

    app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    nodes = [NODE_BASE + s for s in sites]
    contexts = {node: Context(RUN_ID, node, {}, RecordDict(), {}) for node in nodes}
    grid = InProcessGrid(app, contexts, {NODE_BASE + s for s in dropped}, clock)
    strategy = _Strategy(len(sites))
    manager = SimpleClientManager()
    for node in nodes:
        manager.register(GridClientProxy(node, grid, RUN_ID))
    server_context = LegacyContext(
        Context(RUN_ID, 0, {}, RecordDict(), {}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=manager,
    )
    server_context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()  # no global model
    server_context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1}
    )
    workflow = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        max_weight=1.0,
        clipping_range=clip,
        quantization_range=levels,
        modulus_range=2**modulus_bits,
    )
    started = time.perf_counter()
    workflow(grid, server_context)
    elapsed = time.perf_counter() - started
    client = clock.client - clock.inputs
    survivors = len(sites) - len(dropped)
    total = None
    if strategy.aggregate is not None:
        total = parameters_to_ndarrays(strategy.aggregate)[0] * survivors
    return FlowerRound(client, elapsed - clock.client - clock.transport, total, survivors)

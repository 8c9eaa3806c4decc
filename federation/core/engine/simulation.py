"""The in-process driver: a federation's sites and its coordinator in one process.

No HTTP and no Celery, the same everything else: each round is planned, its stages are
answered by each site with :func:`.site.site_step` and checked, kept and ended by the
coordinator's functions of :mod:`.coordinator`, exchanging the very messages a live
round exchanges (kept here in a :class:`MemoryStore` instead of database rows), and its
sum decoded into the outcome. The setup rounds fit the shared preprocessing from the
secure sum of the sites' statistics, as live federations do.

Under differential privacy (``FederatedTraining.privacy``) each round is admitted by
:func:`federation.core.privacy.admit` against the budget, which Poisson-samples the
sites as live rounds do; every sampled site adds its share of the noise inside the sum;
training stops before a round that would pass the target epsilon, and the last round's
model is kept.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from federation.core import messages as m
from federation.core.engine import admission
from federation.core.engine import coordinator as c
from federation.core.engine import state as fs
from federation.core.engine.rounds import (
    INPUT_STAGES,
    MIN_CONTRIBUTORS,
    Noise,
    Participant,
    RoundParameters,
    plan_round,
)
from federation.core.engine.site import Input, SiteData, site_input, site_step
from federation.core.engine.training import (
    HYBRID_FAMILY,
    NETWORK_FAMILY,
    TREES_FAMILY,
    FederatedTraining,
    PersonalChoice,
    initial_weights,
)
from federation.core.messages import Kind
from federation.core.privacy import PrivacyError, Spend, admit, epsilon_spent
from federation.core.secagg.primitives import Misbehaviour, SecAggError, SigningKey
from federation.core.strategies import Weights
from turbofan.data.features import FeaturePipeline
from turbofan.models.artefact import HYBRID, TREES, RulModel
from turbofan.models.fit import NetworkRecipe, new_network_model


class RoundFailed(Exception):
    """A simulated round ended as a live one would fail; the message says why."""


class MemoryStore:
    """The messages of one round, kept in memory (a live round keeps database rows)."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[int, c.StoredMessage]] = {}

    def add(self, stage: str, message: c.StoredMessage) -> None:
        kept = self._stages.setdefault(stage, {})
        if message.site in kept:
            raise SecAggError(f"site {message.site} answered the {stage} stage already")
        kept[message.site] = message

    def messages(self, stage: str) -> list[c.StoredMessage]:
        kept = self._stages.get(stage, {})
        return [kept[site] for site in sorted(kept)]

    def senders(self, stage: str) -> set[int]:
        return set(self._stages.get(stage, {}))


@dataclass(frozen=True)
class SentMessage:
    """One message a site sent: to compare a simulated round with a live one."""

    site: str
    stage: str
    kind: str
    bytes: int


@dataclass
class Member:
    """One party of a round run in process: its id, identity key and round secrets."""

    id: int
    name: str
    identity: SigningKey
    compute: Callable[[dict[str, Any], RoundParameters], Input]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # its keystore
    # A lying member: what it does to each message (stage, body) before sending it.
    tamper: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None


def run_stages(
    parameters: RoundParameters,
    members: Mapping[int, Member],
    work_for: Callable[[int, str, dict[str, Any]], dict[str, Any]],
    *,
    drop: Mapping[str, set[int]] | None = None,
    log: list[SentMessage] | None = None,
    kind: str = "",
    faults: list[tuple[int, str]] | None = None,
) -> tuple[np.ndarray, set[int], dict[int, int]]:
    """Every stage of one round, each member answering in turn; the round's sum, the sites
    whose inputs are in it, and their votes on the round's candidate model.

    ``work_for(site, stage, protocol_part)`` is the work message the site would pull;
    ``drop`` names, per stage, the sites that fall silent from that stage on (to test
    dropouts). A site whose message the coordinator refuses is silent in that stage, as
    live (a site's own refusal is raised: the simulation's sites are honest); ``faults``
    collects (site, what it was shown to do) for each site proved at fault. Raises
    :class:`RoundFailed` where a live round would fail.
    """
    store = MemoryStore()
    active = set(parameters.sites)
    noted = faults if faults is not None else []
    for stage in parameters.stages:
        for site in sorted(active - (drop or {}).get(stage, set())):
            member = members[site]
            work = work_for(site, stage, c.stage_part(parameters, stage, site, store))
            body, member.states[parameters.round_id] = site_step(
                work,
                site,
                member.identity,
                member.states.get(parameters.round_id),
                functools.partial(member.compute, work, parameters),
            )
            if member.tamper is not None:
                body = member.tamper(stage, body)
            try:
                checked = c.check_message(parameters, stage, site, body, store)
            except SecAggError:
                continue  # refused (a 400, live): the site is silent in this stage
            store.add(stage, c.StoredMessage(site, checked.body, checked.vector))
            noted.extend(checked.faults.items())
            if log is not None:
                log.append(SentMessage(member.name, stage, kind, c.message_bytes(stage, body)))
        answered = c.answered(stage, store)
        end = c.end_stage(
            parameters,
            stage,
            answered=len(answered),
            silent=len(active - answered),
        )
        if end.failure:
            raise RoundFailed(end.failure)
        if end.drop_silent:
            active = answered
    for member in members.values():  # the round is over: its secrets go
        member.states.pop(parameters.round_id, None)
    try:
        summed = c.round_sum(parameters, store)
        return summed, c.contributors(parameters, store), c.votes(parameters, store)
    except Misbehaviour as fault:
        noted.append((fault.culprit, str(fault)))
        raise RoundFailed(f"aggregation failed: {fault}") from None
    except SecAggError as error:  # a live round fails its aggregation alike
        raise RoundFailed(f"aggregation failed: {error}") from None


def secure_sum(
    inputs: Sequence[np.ndarray],
    *,
    drop: Mapping[str, set[int]] | None = None,
    minimum: int = 2,
    graph_seed: int | None = None,
) -> np.ndarray:
    """The sum of ``inputs`` through the whole secure protocol in this process (site ``i``
    has id ``i + 1``): the sum a live round over these vectors computes."""
    if len(inputs) < 2:
        raise SecAggError("a secure sum needs at least two sites")
    keys = {i + 1: SigningKey.generate() for i in range(len(inputs))}
    participants = [Participant(i, key.public, 1) for i, key in keys.items()]
    parameters = plan_round(
        kind=Kind.ANALYTICS,
        participants=participants,
        length=len(inputs[0]),
        secure=True,
        minimum=minimum,
        graph_seed=graph_seed,
    )
    members = {i: Member(i, f"site-{i}", keys[i], _given(inputs[i - 1])) for i in keys}
    summed, _, _ = run_stages(
        parameters,
        members,
        lambda site, stage, part: {m.KEY_KIND: Kind.ANALYTICS, m.KEY_PROTOCOL: part},
        drop=drop,
    )
    return summed


def _given(vector: np.ndarray) -> Callable[[dict[str, Any], RoundParameters], Input]:
    """A site's input that is the given vector, whatever the round."""

    def compute(work: dict[str, Any], parameters: RoundParameters) -> Input:
        return vector, {}

    return compute


def _from_rows(
    data: SiteData, rng: np.random.Generator
) -> Callable[[dict[str, Any], RoundParameters], Input]:
    """A site's input computed from its own rows, as a live site computes it."""

    def compute(work: dict[str, Any], parameters: RoundParameters) -> Input:
        return site_input(work, data, parameters, rng)

    return compute


class Simulation:
    """A federation of the sites in ``site_frames`` (ids 1, 2, ... in name order) and its
    coordinator, with the same rounds as a live federation."""

    def __init__(
        self,
        site_frames: dict[str, pd.DataFrame],
        *,
        template: FeaturePipeline,
        recipe: NetworkRecipe,
        training: FederatedTraining,
        minimum: int | None = None,
    ) -> None:
        self.template, self.recipe, self.training = template, recipe, training
        # As a live secure federation: no sum of fewer than MIN_CONTRIBUTORS sites' inputs
        # (a study of fewer sites, where no data is at stake, may set its own).
        self.minimum = minimum if minimum is not None else min(MIN_CONTRIBUTORS, len(site_frames))
        self.log: list[SentMessage] = []
        self.members: dict[int, Member] = {}
        self.data: dict[int, SiteData] = {}
        for site, name in enumerate(sorted(site_frames), start=1):
            data = SiteData(site_frames[name])
            # Seeded, so that a simulation under DP repeats; a live site draws its noise
            # from the operating system.
            rng = np.random.default_rng([training.seed, site])
            self.data[site] = data
            self.members[site] = Member(site, name, SigningKey.generate(), _from_rows(data, rng))

    def state(self) -> fs.FederationState:
        return fs.FederationState(
            template=self.template, recipe=self.recipe, training=self.training
        )

    def run_round(
        self,
        kind: Kind,
        number: int,
        state: fs.FederationState,
        *,
        sites: Sequence[int] | None = None,
        query: Any = None,
        noise: Noise | None = None,
        member: int = 0,
        drop: Mapping[str, set[int]] | None = None,
    ) -> fs.Outcome:
        """One round of ``kind`` over ``sites`` (all by default); its outcome."""
        chosen = sorted(sites) if sites is not None else sorted(self.members)
        refusal = admission.needs_secure_aggregation(
            kind, secure=self.training.secure, noise=noise
        ) or admission.too_few_sites(len(chosen), self.minimum)
        if refusal:
            raise RoundFailed(refusal)
        participants = [
            Participant(s, self.members[s].identity.public, self.data[s].rows) for s in chosen
        ]
        parameters = plan_round(
            kind=kind,
            participants=participants,
            length=fs.input_length(kind, state, query),
            secure=self.training.secure,
            minimum=self.minimum,
            noise=noise,
            reference_max=fs.reference_max(kind, state),
            announcement=fs.announcement(kind, state),
        )
        task = fs.task(kind, number, state, query, member=member)

        def work_for(site: int, stage: str, part: dict[str, Any]) -> dict[str, Any]:
            work = {m.KEY_KIND: kind, m.KEY_PROTOCOL: part}
            return {**work, **task} if stage in INPUT_STAGES else work

        summed, summed_sites, votes = run_stages(
            parameters,
            {s: self.members[s] for s in chosen},
            work_for,
            drop=drop,
            log=self.log,
            kind=kind,
        )
        return fs.decode(
            kind, summed, parameters, state, query, summed_sites=summed_sites, votes=votes
        )

    def setup(self) -> fs.FederationState:
        """The setup rounds: the regimes from the sites' operating points, then the shared
        pipeline (and the initial weights) from their per-regime sensor moments, then,
        with boosted trees, their bins from the sketch of the sites' window summaries."""
        state = self.state()
        kinds = [Kind.POINTS, Kind.MOMENTS]
        if self.training.boosting is not None:
            kinds.append(Kind.SKETCH)
        for kind in kinds:
            state = fs.advance(state, kind, self.run_round(kind, 0, state))
        return state


@dataclass
class SimulationResult:
    model: RulModel
    history: list[dict[str, float]]
    seconds: float
    # Under DP: the epsilon spent by all the rounds run (at the settings' delta).
    epsilon: float | None = None
    log: list[SentMessage] = field(default_factory=list)
    # With personalisation: what each site chose (by site name), and the counts the
    # coordinator decoded from the secure sum.
    choices: dict[str, PersonalChoice] = field(default_factory=dict)
    choice_counts: dict[str, int] | None = None


# Set to the number of processes the ensemble members of a simulation may train in
# (1: one after another, in this process); by default as many as there are cores.
PROCESSES_ENV = "SIMULATION_PROCESSES"


def member_processes(members: int, *, private: bool) -> int:
    """How many processes a simulation's ``members`` train in: the members are
    independent federations of the same sites, so they run side by side where there are
    cores (``SIMULATION_PROCESSES`` caps it), except under DP, where they spend one
    budget one after another, and inside a worker pool's child, which may not start
    processes."""
    if private or members < 2 or multiprocessing.current_process().daemon:
        return 1  # a daemonic process (a worker pool's child) may not start processes
    wanted = os.environ.get(PROCESSES_ENV)
    cores = int(wanted) if wanted else (os.cpu_count() or 1)
    return max(1, min(members, cores))


@dataclass
class MemberRun:
    """One ensemble member's federation: its final weights and round records, what the
    sites chose (member 0, with personalisation), and the messages its rounds sent."""

    weights: Weights
    records: list[dict[str, float]]
    choices: dict[str, PersonalChoice] = field(default_factory=dict)
    choice_counts: dict[str, int] | None = None
    log: list[SentMessage] = field(default_factory=list)
    trees: Weights | None = None  # boosted trees (a trees or hybrid federation)
    share: float | None = None  # a hybrid's weight of its trees


def run_simulation(
    site_frames: dict[str, pd.DataFrame],
    template: FeaturePipeline,
    recipe: NetworkRecipe,
    config: FederatedTraining,
    *,
    progress: bool = False,
    on_round: Callable[[dict[str, float]], None] | None = None,
) -> SimulationResult:
    """Fit the shared pipeline, then train ``recipe.ensemble`` global networks, each with
    ``config.rounds`` federated rounds, as many independent federations of these sites
    (side by side in processes of their own where there are cores, see
    :func:`member_processes`: each repeats the setup rounds, which give the same
    pipeline, and gives the same model as it would in this process).

    Each member keeps its last round's model, as a live federation does; with
    ``config.patience`` (and no DP) training stops after that many rounds without a
    better pooled validation RMSE and keeps the best model scored. Each history record
    holds the round, its learning rate and the validation RMSE of the model the round
    started from (the sites score it in the round, inside the sum); under DP also the
    sampled ``sites`` and the ``epsilon`` spent after it.
    """
    started = time.perf_counter()
    simulation = Simulation(site_frames, template=template, recipe=recipe, training=config)
    settings = config.privacy_settings()
    state = simulation.setup()
    assert state.pipeline is not None
    pipeline = FeaturePipeline.from_dict(state.pipeline)
    model = new_network_model(pipeline, recipe)
    if config.family != NETWORK_FAMILY:
        model.kind = TREES if config.family == TREES_FAMILY else HYBRID
    spent: list[Spend] = []
    history: list[dict[str, float]] = []
    log = list(simulation.log)
    processes = member_processes(recipe.ensemble, private=settings is not None)
    if processes > 1:
        job = functools.partial(_member_in_process, site_frames, template, recipe, config)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            runs = list(pool.map(job, range(recipe.ensemble)))
    else:
        runs = []
        for member in range(recipe.ensemble):
            setup_messages = len(simulation.log)
            run = _run_member(simulation, state, pipeline, member, spent, progress)
            run.log = simulation.log[setup_messages:]
            if not run.records:
                break  # the budget allows no more rounds: the ensemble has the members so far
            runs.append(run)
            del simulation.log[setup_messages:]
    choices: dict[str, PersonalChoice] = {}
    choice_counts: dict[str, int] | None = None
    for member, run in enumerate(runs):
        if config.family == TREES_FAMILY:
            assert run.trees is not None
            model.members.append(run.trees)
        else:
            model.members.append(run.weights)
        if config.family == HYBRID_FAMILY:
            assert run.trees is not None
            model.trees.append(run.trees)
        history += [{"member": member, **r} for r in run.records]
        log += run.log
        choices.update(run.choices)
        choice_counts = choice_counts if run.choice_counts is None else run.choice_counts
        if on_round is not None:
            for record in run.records:
                on_round(record)
    if config.family == HYBRID_FAMILY:  # an ensemble of hybrids blends at their mean share
        shares = [float(run.share) for run in runs if run.share is not None]
        model.share = float(np.mean(shares))
        model.meta["shares"] = shares
    model.meta.update(
        setup="federated",
        sites=sorted(site_frames),
        training=config.to_dict(),
        recipe=recipe.to_dict(),
    )
    if config.private_head:  # a body whose head is each site's own: not a model by itself
        model.meta["private_head"] = True
    epsilon = None
    if settings is not None:
        if not model.members:
            raise PrivacyError(
                f"the privacy budget (epsilon {settings.epsilon:g}) allows no round at noise "
                f"multiplier {settings.noise_multiplier:g}: raise the noise or the budget"
            )
        epsilon = epsilon_spent(spent, settings.delta)
        model.meta["privacy"] = {
            **settings.to_dict(),
            "rounds": len(spent),
            "epsilon_spent": epsilon,
        }
    return SimulationResult(
        model=model,
        history=history,
        seconds=time.perf_counter() - started,
        epsilon=epsilon,
        log=log,
        choices=choices,
        choice_counts=choice_counts,
    )


def _member_in_process(
    site_frames: dict[str, pd.DataFrame],
    template: FeaturePipeline,
    recipe: NetworkRecipe,
    config: FederatedTraining,
    member: int,
) -> MemberRun:
    """One member's federation in a process of its own: its own sites and coordinator,
    the same setup rounds, then :func:`_run_member`."""
    simulation = Simulation(site_frames, template=template, recipe=recipe, training=config)
    state = simulation.setup()
    assert state.pipeline is not None
    pipeline = FeaturePipeline.from_dict(state.pipeline)
    setup_messages = len(simulation.log)
    run = _run_member(simulation, state, pipeline, member, [], progress=False)
    run.log = simulation.log[setup_messages:]
    return run


def _run_member(
    simulation: Simulation,
    state: fs.FederationState,
    pipeline: FeaturePipeline,
    member: int,
    spent: list[Spend],
    progress: bool,
) -> MemberRun:
    """Member ``member``'s federation from the setup's ``state``: its training rounds and,
    for member 0 (what a live federation trains) with personalisation, the round in which
    each site chooses its model."""
    config, recipe = simulation.training, simulation.recipe
    member_state = replace(
        state,
        weights=initial_weights(pipeline, recipe, config.member_seed(member)),
        strategy_state=[],
    )
    description = f"federated {member + 1}/{recipe.ensemble}"
    records: list[dict[str, float]] = []
    final = member_state
    if config.family != TREES_FAMILY:
        # A hybrid's network is judged in its first boost round, not an evaluation.
        final, records = _train_member(
            simulation,
            final,
            member,
            spent,
            progress,
            description,
            evaluate=config.family == NETWORK_FAMILY,
        )
    if config.family != NETWORK_FAMILY:
        final, grown = _boost_member(simulation, final, member, progress, description)
        records += grown
    assert final.weights is not None
    run = MemberRun(final.weights, records, trees=final.trees, share=final.share)
    final = replace(final, accepted=None, accepted_trees=None, growing=None)
    if records and member == 0 and config.personal_epochs and not config.privacy:
        outcome = simulation.run_round(Kind.PERSONALISE, config.rounds, final)
        run.choice_counts = outcome.choices
        for site, member_ in simulation.members.items():
            chosen = simulation.data[site].choice
            if chosen is not None:
                run.choices[member_.name] = chosen
    return run


def _boost_member(
    simulation: Simulation,
    state: fs.FederationState,
    member: int,
    progress: bool,
    description: str,
) -> tuple[fs.FederationState, list[dict[str, float]]]:
    """Member ``member``'s boosted trees: boost rounds, one tree level each, until the
    sites' pooled validation RMSE has stalled or the most trees have grown, then a round
    that scores the model, as a live federation runs them. A record per tree:
    the round that finished it, the trees and the validation RMSE of the model before it."""
    config = simulation.training
    records: list[dict[str, float]] = []
    bar = tqdm(total=state.boosting().trees, desc=description, disable=not progress, leave=False)
    number = 0
    while not state.boosted and number < config.boost_rounds:
        number += 1
        starts_tree = state.growing is None
        outcome = simulation.run_round(Kind.BOOST, number, state, member=member)
        if starts_tree:
            record: dict[str, float] = {"round": number, "val_rmse": outcome.val_rmse}
            if outcome.verdict is not None:
                record["accepted"] = float(outcome.verdict == fs.ACCEPTED)
            record["trees"] = float(state.ensemble().trees)
            records.append(record)
            bar.set_postfix(val_rmse=round(outcome.val_rmse, 2))
        state = fs.advance(state, Kind.BOOST, outcome, number=number)
        if outcome.new_tree:
            bar.update(1)
    bar.close()
    # As a live federation: a last round scores the model (and its last candidate, if the
    # rounds ran out before a round could).
    outcome = simulation.run_round(Kind.EVALUATE, number, state, member=member)
    state = fs.advance(state, Kind.EVALUATE, outcome, number=number)
    assert state.trees is not None
    return state, records


def _train_member(
    simulation: Simulation,
    state: fs.FederationState,
    member: int,
    spent: list[Spend],
    progress: bool,
    description: str,
    *,
    evaluate: bool = True,
) -> tuple[fs.FederationState, list[dict[str, float]]]:
    config = simulation.training
    settings = config.privacy_settings()
    rng = np.random.default_rng([config.seed, config.member_seed(member)])
    best: tuple[float, list[np.ndarray] | None, int] = (math.inf, None, 0)
    records: list[dict[str, float]] = []
    bar = tqdm(range(1, config.rounds + 1), desc=description, disable=not progress, leave=False)
    for number in bar:
        record: dict[str, float] = {"round": number, "lr": config.round_lr(number)}
        sites, noise = None, None
        if settings is not None:
            noise = Noise(settings.noise_multiplier, settings.clip)
            admission = admit(
                settings=settings,
                spent=spent,
                site_spent={},
                caps={},
                sites=sorted(simulation.members),
                spend=Spend(settings.noise_multiplier, settings.sample_fraction),
                minimum=max(simulation.minimum, 2),
                what=f"training round {number}",
                rng=rng,
            )
            if admission.refusal:
                break  # the budget is spent
            sites = admission.sites
            spent.append(admission.spend)
            record.update(sites=len(sites), epsilon=admission.epsilon_after)
        incoming = state.weights
        outcome = simulation.run_round(
            Kind.TRAIN, number, state, sites=sites, noise=noise, member=member
        )
        state = fs.advance(state, Kind.TRAIN, outcome, number=number)
        record["val_rmse"] = outcome.val_rmse
        if outcome.verdict is not None:
            record["accepted"] = float(outcome.verdict == fs.ACCEPTED)
        records.append(record)
        bar.set_postfix(val_rmse=round(outcome.val_rmse, 2))
        if settings is not None or not config.patience:
            continue  # the last round's model is kept
        if outcome.val_rmse < best[0]:
            best = (outcome.val_rmse, incoming, number)
        elif number - best[2] >= config.patience:
            assert best[1] is not None
            return replace(state, weights=best[1], accepted=None), records
    if evaluate and records and state.accepted is not None and settings is None:
        # As a live federation: a last round scores the last candidate; a rejected one
        # leaves the last accepted model (not under DP, where validation errors stay home).
        outcome = simulation.run_round(Kind.EVALUATE, config.rounds, state)
        state = fs.advance(state, Kind.EVALUATE, outcome, number=config.rounds)
    return state, records

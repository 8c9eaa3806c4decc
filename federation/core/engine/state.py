"""The federation between rounds: its state, the task each round hands the sites, and
what a round's sum decodes into.

:class:`FederationState` is everything the coordinator knows between rounds, all of it
shared with the members; :func:`task` is what a site needs, beside the protocol, to
compute its input; :func:`decode` turns a round's sum into an :class:`Outcome` from
public numbers only, and :func:`advance` gives the state after it. Both drivers (the
coordinator's services and the simulation) call these, never their own versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from federation.core import analytics
from federation.core import messages as m
from federation.core.engine import boosting
from federation.core.engine.rounds import RoundParameters
from federation.core.engine.training import (
    CHOICES,
    HEAD_TENSORS,
    HYBRID_FAMILY,
    REJECT_MARGIN,
    TRAINING_EXTRAS,
    FederatedTraining,
    decode_choices,
    decode_scores,
    decode_training,
    initial_weights,
    training_length,
)
from federation.core.messages import Kind
from federation.core.strategies import Weights, make_strategy
from turbofan.data.features import FeaturePipeline, RegimeModel
from turbofan.models.fit import NetworkRecipe
from turbofan.models.trees import DEFAULT_SHARE, BoostingSettings, Ensemble, GrowingTree


@dataclass(frozen=True)
class FederationState:
    """What the coordinator knows between rounds, all of it shared with the members: the
    settings, the shared preprocessing fitted in the setup rounds, the global model.

    ``weights`` is the network the next round starts from: the newest not rejected.
    While that is a candidate (no round has scored it yet), ``accepted`` is the last
    accepted network (number ``accepted_version``), which the sites compare it with;
    None when ``weights`` is accepted.

    With boosted trees, ``trees`` is the model so far (an ensemble's arrays, from the
    sketch round on), ``growing`` the tree being grown (None between trees), and
    ``accepted_trees`` the last accepted trees while ``trees`` is a candidate;
    ``boost_best`` the best pooled validation RMSE of the trees so far and how many trees
    gave it, ``boost_rejections`` how often in a row the tree now grown was rejected, and
    ``boosted`` whether growing is over. ``version`` is then the trees'.
    """

    template: FeaturePipeline  # unfitted: the number of regimes, the window, ...
    recipe: NetworkRecipe
    training: FederatedTraining
    regimes: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    weights: Weights | None = None
    version: int = 0
    strategy_state: Weights = field(default_factory=list)
    accepted: Weights | None = None
    accepted_version: int = 0
    trees: Weights | None = None
    growing: Weights | None = None
    accepted_trees: Weights | None = None
    boost_best: tuple[float, int] | None = None
    boost_rejections: int = 0  # rejections of the tree now being grown, in a row
    # Network candidates rejected so far: each rejection starts the sites' optimisers
    # afresh, as the server's (their moments moved with the rejected model).
    network_rejections: int = 0
    boosted: bool = False
    share: float | None = None  # a hybrid's weight of its trees, once the sites chose it

    @property
    def n_regimes(self) -> int:
        return RegimeModel.from_dict(self.regimes).n_regimes if self.regimes else 1

    @property
    def channels(self) -> int:
        """Input channels per cycle of the shared pipeline."""
        assert self.pipeline is not None
        return FeaturePipeline.from_dict(self.pipeline).n_features

    @property
    def cap(self) -> float:
        """The RUL cap of the labels (it bounds the trees' gradients)."""
        assert self.pipeline is not None
        return float(self.pipeline.get("rul_cap") or 125)

    def boosting(self) -> BoostingSettings:
        settings = self.training.boosting_settings()
        if settings is None:
            raise ValueError("this federation grows no trees")
        return settings

    def ensemble(self) -> Ensemble:
        if self.trees is None:
            raise ValueError("the trees' bins are not known yet: the sketch round comes first")
        return Ensemble.from_arrays(self.trees)

    def growing_tree(self) -> GrowingTree | None:
        return (
            None if self.growing is None else GrowingTree.from_arrays(self.growing, self.boosting())
        )

    @property
    def grows_trees(self) -> bool:
        return self.training.boosting is not None


def input_length(kind: Kind, state: FederationState, query: analytics.Query | None = None) -> int:
    """How many values each site's input to a round of ``kind`` has."""
    if kind == Kind.POINTS:
        return analytics.points_length()
    if kind == Kind.MOMENTS:
        return analytics.moments_length(state.n_regimes)
    if kind == Kind.ANALYTICS:
        if query is None:
            raise ValueError("an analytics round needs its query")
        return analytics.query_length(query, state.n_regimes)
    if kind == Kind.SKETCH:
        return boosting.sketch_length(state.channels)
    if kind == Kind.BOOST:
        return boosting.boost_length(state.channels, state.boosting(), state.growing_tree())
    if state.weights is None:
        raise ValueError("a training round needs the global model")
    if kind == Kind.EVALUATE:  # the scores alone (and a hybrid's, at every share)
        return TRAINING_EXTRAS + (len(boosting.SHARES) if _blends(state) else 0)
    if kind == Kind.PERSONALISE:
        return len(CHOICES)  # one count per model a site may choose
    return training_length(state.weights)


def _judges_network(kind: Kind, state: FederationState) -> bool:
    """Whether the round's sites score the network candidate against the accepted one:
    a training round's, the first boost round's, or an evaluation's (under DP their
    validation errors stay home: no vote, and candidates are taken as they come)."""
    if kind not in (Kind.TRAIN, Kind.BOOST, Kind.EVALUATE) or state.training.privacy:
        return False
    return state.accepted is not None


def _blends(state: FederationState) -> bool:
    """Whether the federation blends a network with its trees (and so chooses a share)."""
    return state.training.family == HYBRID_FAMILY and state.trees is not None


def _judges_trees(kind: Kind, state: FederationState) -> bool:
    return kind in (Kind.BOOST, Kind.EVALUATE) and state.accepted_trees is not None


def _scores_trees(kind: Kind, state: FederationState) -> bool:
    """Whether the round's scores are the trees' (the network's otherwise)."""
    if kind == Kind.BOOST:
        return not _judges_network(kind, state)
    return kind == Kind.EVALUATE and state.trees is not None and not _judges_network(kind, state)


def announcement(kind: Kind, state: FederationState) -> dict[str, str] | None:
    """The digests of the models a round's task hands the sites (see :func:`task`), which
    the round's parameters announce and every site checks what it received against."""
    announced: dict[str, str] = {}
    if kind in (Kind.TRAIN, Kind.EVALUATE, Kind.PERSONALISE) and state.weights is not None:
        announced["model"] = m.weights_digest(state.weights)
    if _judges_network(kind, state):
        assert state.weights is not None and state.accepted is not None
        announced["model"] = m.weights_digest(state.weights)
        announced["accepted"] = m.weights_digest(state.accepted)
    if kind in (Kind.BOOST, Kind.EVALUATE, Kind.PERSONALISE) and state.trees is not None:
        announced["trees"] = m.weights_digest(state.trees)
    if kind == Kind.BOOST and state.growing is not None:
        announced["growing"] = m.weights_digest(state.growing)
    if _judges_trees(kind, state):
        assert state.accepted_trees is not None
        announced["accepted_trees"] = m.weights_digest(state.accepted_trees)
    return announced or None


def reference_max(kind: Kind, state: FederationState) -> float:
    """The largest absolute global weight (public): it bounds a DP training input."""
    if kind != Kind.TRAIN or not state.weights:
        return 0.0
    return float(max(np.abs(w).max() for w in state.weights))


def task(
    kind: Kind,
    number: int,
    state: FederationState,
    query: analytics.Query | None = None,
    *,
    member: int = 0,
) -> dict[str, Any]:
    """What a site needs, beside the protocol, to compute its input to the round."""
    if kind == Kind.MOMENTS:
        return {m.KEY_REGIMES: state.regimes}
    if kind == Kind.ANALYTICS:
        assert query is not None
        return {m.KEY_QUERY: query.to_dict(), m.KEY_REGIMES: state.regimes}
    if kind == Kind.POINTS:
        return {}
    assert state.weights is not None and state.pipeline is not None
    training = state.training
    work: dict[str, Any] = {
        m.KEY_PIPELINE: state.pipeline,
        m.KEY_MODEL_VERSION: state.version,
        m.KEY_VAL_FRACTION: training.val_fraction,
        m.KEY_SPLIT_SEED: training.seed,
    }
    if kind in (Kind.SKETCH, Kind.BOOST) or (state.trees is not None and kind != Kind.TRAIN):
        # Each line of models (a simulation's ensemble member) samples its rows apart, and a
        # tree grown again after a rejection samples anew.
        seed = training.member_seed(member) + RESAMPLE_SEED * state.boost_rejections
        work[m.KEY_BOOSTING] = {**state.boosting().to_dict(), "seed": seed}
        if state.trees is not None:
            work[m.KEY_TREES] = boosting.to_wire(state.trees)
        if kind == Kind.BOOST and state.growing is not None:
            work[m.KEY_GROWING] = boosting.to_wire(state.growing)
        if _judges_trees(kind, state):
            assert state.accepted_trees is not None
            work[m.KEY_ACCEPTED_TREES] = boosting.to_wire(state.accepted_trees)
    if kind in (Kind.BOOST, Kind.EVALUATE):
        work[m.KEY_SCORED] = m.SCORED_TREES if _scores_trees(kind, state) else m.SCORED_NETWORK
    if kind == Kind.EVALUATE and _blends(state):
        work[m.KEY_SCORED] = m.SCORED_BLEND
    if kind == Kind.PERSONALISE and _blends(state):
        work[m.KEY_SHARE] = state.share if state.share is not None else DEFAULT_SHARE
    if kind in (Kind.SKETCH, Kind.BOOST) and not _judges_network(kind, state):
        return work
    work.update({m.KEY_RECIPE: state.recipe.to_dict(), m.KEY_WEIGHTS: _wire(state.weights)})
    if training.private_head:
        work[m.KEY_PRIVATE_HEAD] = {
            "tensors": HEAD_TENSORS,
            "lineage": training.member_seed(member),
        }
    if training.ditto_mu:
        work[m.KEY_DITTO] = {"mu": training.ditto_mu, "lineage": training.member_seed(member)}
    if kind == Kind.PERSONALISE:
        work[m.KEY_PERSONAL] = training.personal_settings()
        work[m.KEY_FAMILY] = training.family
        return work
    if _judges_network(kind, state):
        assert state.accepted is not None
        work[m.KEY_ACCEPTED] = _wire(state.accepted)
    if kind == Kind.TRAIN:
        strategy = make_strategy(training.strategy, **training.strategy_settings)
        work[m.KEY_LOCAL] = training.local_config(number, member).to_dict()
        work[m.KEY_PROXIMAL_MU] = strategy.proximal_mu
        if training.site_optimiser:
            work[m.KEY_OPTIMISER] = {
                "lineage": training.member_seed(member),
                "restart": state.network_rejections,
            }
    return work


RESAMPLE_SEED = 7919  # how far a regrown tree's sampling seed moves (a prime, arbitrary)


def _wire(weights: Weights) -> str:
    return m.b64(m.weights_to_bytes(weights))


@dataclass(frozen=True)
class Outcome:
    """What a round's sum decodes into: the regimes (points), the shared pipeline and the
    initial weights (moments), the next candidate model with the incoming model's pooled
    validation RMSE and the strategy's state (training), the trees so far and the tree
    being grown (sketch, boost), the verdict on the incoming candidate (training, boost,
    evaluation), or a query's answer."""

    regimes: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    weights: Weights | None = None
    val_rmse: float = math.nan
    strategy_state: Weights = field(default_factory=list)
    answer: dict[str, Any] | None = None
    verdict: str | None = None  # ACCEPTED or REJECTED; None: no candidate was judged
    worse: int = 0  # the sites that found the candidate worse ...
    voters: int = 0  # ... of the sites in the sum that voted
    found_worse: frozenset[int] = frozenset()  # which sites found it worse
    reason: str = ""  # the verdict in words, for the admin
    choices: dict[str, int] | None = None  # personalisation: how many sites chose which
    trees: Weights | None = None  # the trees after the round (a finished tree included)
    growing: Weights | None = None  # the tree being grown; None when one was finished
    new_tree: bool = False  # a tree was finished: ``trees`` is a new candidate version
    boost_best: tuple[float, int] | None = None
    boosted: bool = False  # growing is over: ``trees`` cut back to their best number
    share: float | None = None  # a hybrid's evaluation: the share the sites' validation chose


ACCEPTED, REJECTED = "accepted", "rejected"
# A tree rejected this many times in a row ends growing (see _advance_boost).
MAX_TREE_REJECTIONS = 2


def verdict(
    state: FederationState, votes: dict[int, int], summed_sites: set[int], *, judged: bool = True
) -> Outcome:
    """The verdict on the incoming candidate from the votes of the sites in the sum: one
    vote each, rejected when more than half found it worse (no candidate: no verdict)."""
    if not judged:
        return Outcome()
    counted = [vote for site, vote in votes.items() if site in summed_sites]
    if not counted:
        return Outcome(
            verdict=ACCEPTED,
            reason="no site in the sum could score it (none has validation engines)",
        )
    worse = sum(counted)
    rejected = worse * 2 > len(counted)
    return Outcome(
        verdict=REJECTED if rejected else ACCEPTED,
        worse=worse,
        voters=len(counted),
        found_worse=frozenset(s for s, vote in votes.items() if vote and s in summed_sites),
        reason=f"{worse} of {len(counted)} sites found it worse than the accepted model on "
        f"their validation engines (RMSE more than {REJECT_MARGIN:.0%} above)",
    )


def decode(
    kind: Kind,
    summed: np.ndarray,
    parameters: RoundParameters,
    state: FederationState,
    query: analytics.Query | None = None,
    *,
    summed_sites: set[int] | None = None,
    votes: dict[int, int] | None = None,
) -> Outcome:
    """The outcome of a round from the sum of its sites' inputs and public numbers only
    (for a training, boost or evaluation round, ``summed_sites``: the sites whose inputs
    are in the sum, see :func:`contributors`; ``votes``: their votes on the incoming
    candidate, see :func:`votes`). A rejected candidate gives no new model: the next
    round starts from the last accepted one."""
    scale = parameters.weight_scale
    if kind == Kind.POINTS:  # the sites' operating points, counted on a public grid
        points, counts = analytics.decode_points(summed, scale=scale)
        regimes = RegimeModel.fit_points(
            points, counts, state.template.n_regimes, state.training.seed
        )
        return Outcome(regimes=regimes.to_dict())
    if kind == Kind.MOMENTS:
        regimes = RegimeModel.from_dict(state.regimes or {})
        moments = analytics.decode_moments(summed, n_regimes=regimes.n_regimes, scale=scale)
        pipeline = state.template.unfitted().fit_moments(regimes, moments)
        weights = initial_weights(pipeline, state.recipe, state.training.member_seed(0))
        return Outcome(pipeline=pipeline.to_dict(), weights=weights)
    if kind == Kind.ANALYTICS:
        assert query is not None
        privacy = parameters.privacy
        answer = analytics.decode_query(
            summed,
            query,
            scale=scale,
            n_regimes=state.n_regimes,
            privacy=analytics.QueryPrivacy.from_dict(privacy) if privacy else None,
        )
        return Outcome(answer=answer)
    if kind == Kind.PERSONALISE:
        return Outcome(choices=decode_choices(summed))
    if kind == Kind.SKETCH:
        model = boosting.decode_sketch(
            summed,
            scale=scale,
            channels=state.channels,
            settings=state.boosting(),
            cap=state.cap,
        )
        return Outcome(trees=model.to_arrays())
    assert state.weights is not None and summed_sites is not None
    judged = verdict(
        state,
        votes or {},
        summed_sites,
        judged=_judges_network(kind, state) or _judges_trees(kind, state),
    )
    if kind == Kind.BOOST:
        return _decode_boost(summed, parameters, state, judged)
    if kind == Kind.EVALUATE:
        scores = summed[:TRAINING_EXTRAS]
        if not _blends(state):
            return replace(judged, val_rmse=decode_scores(scores))
        share = boosting.decode_share(summed[TRAINING_EXTRAS:])
        if judged.verdict == REJECTED:  # the shares were scored with the rejected trees
            share = DEFAULT_SHARE
        return replace(judged, val_rmse=decode_scores(scores), share=share)
    mean, val_rmse = decode_training(summed, state.weights, parameters.weight_of(summed_sites))
    if judged.verdict == REJECTED:  # what was trained from it goes too
        return replace(judged, val_rmse=val_rmse)
    strategy = make_strategy(state.training.strategy, **state.training.strategy_settings)
    strategy.load_state(state.strategy_state)
    weights = strategy.step(state.weights, mean)
    return replace(judged, weights=weights, val_rmse=val_rmse, strategy_state=strategy.state())


def _decode_boost(
    summed: np.ndarray, parameters: RoundParameters, state: FederationState, judged: Outcome
) -> Outcome:
    """A boost round's outcome: the verdict on the incoming candidate, then the next level
    of the tree being grown (none from histograms of rejected trees), or, at the start of
    a tree, the end of growing once the trees' pooled validation RMSE has stalled."""
    settings, model = state.boosting(), state.ensemble()
    trees_rejected = _judges_trees(Kind.BOOST, state) and judged.verdict == REJECTED
    val_rmse = decode_scores(summed[-TRAINING_EXTRAS:])
    if trees_rejected:  # the histograms are of the rejected trees' errors: they go too
        return replace(judged, val_rmse=val_rmse, trees=state.accepted_trees)
    best = state.boost_best
    if state.growing is None and model.trees and _scores_trees(Kind.BOOST, state):
        best, stop = boosting.early_stop(best, val_rmse, model.trees, settings)
        if stop:
            keep = best[1] if best is not None else model.trees
            return replace(
                judged,
                val_rmse=val_rmse,
                trees=model.first(keep).to_arrays(),
                boost_best=best,
                boosted=True,
            )
    grown, growing, _ = boosting.decode_boost(
        summed,
        scale=parameters.weight_scale,
        settings=settings,
        channels=state.channels,
        model=model,
        growing=state.growing_tree(),
        cap=state.cap,
    )
    return replace(
        judged,
        val_rmse=val_rmse,
        trees=grown.to_arrays(),
        growing=None if growing is None else growing.to_arrays(),
        new_tree=growing is None,
        boost_best=best,
    )


def advance(
    state: FederationState, kind: Kind, outcome: Outcome, *, number: int = 0
) -> FederationState:
    """The federation's state after round ``number``'s outcome (a query changes nothing).

    A training round's new model is the next candidate, numbered as the round; a boost
    round's finished tree makes the trees the next candidate, numbered after the network's
    rounds by their count. A rejected candidate is dropped: the last accepted model is
    the one to start from again, and a server optimiser's state starts afresh (it had
    moved with the rejected step). Under DP the sites keep their validation errors home,
    so nobody scores a model: each is taken as it comes (each site's update is clipped
    and noised instead).
    """
    if kind == Kind.POINTS:
        return replace(state, regimes=outcome.regimes)
    if kind == Kind.MOMENTS:
        return replace(
            state, pipeline=outcome.pipeline, weights=outcome.weights, version=0, accepted=None
        )
    if kind == Kind.SKETCH:
        return replace(state, trees=outcome.trees, growing=None, accepted_trees=None)
    if kind == Kind.BOOST:
        return _advance_boost(state, outcome)
    if kind in (Kind.TRAIN, Kind.EVALUATE) and outcome.verdict == REJECTED:
        if kind == Kind.EVALUATE and _judges_trees(kind, state):
            rolled = replace(state, trees=state.accepted_trees, accepted_trees=None, growing=None)
            if outcome.share is None:
                return replace(rolled, version=state.accepted_version)
            return replace(rolled, share=outcome.share, version=state.version + 1)
        return replace(
            state,
            weights=state.accepted,
            version=state.accepted_version,
            accepted=None,
            strategy_state=[],
            network_rejections=state.network_rejections + 1,
        )
    if kind == Kind.TRAIN:
        return replace(
            state,
            weights=outcome.weights,
            version=number,
            strategy_state=outcome.strategy_state,
            accepted=None if state.training.privacy else state.weights,
            accepted_version=state.version,
        )
    if kind == Kind.EVALUATE and outcome.share is not None:  # a hybrid's blend: a version
        return replace(
            state,
            accepted=None,
            accepted_trees=None,
            growing=None,
            share=outcome.share,
            version=state.version + 1,
        )
    if kind == Kind.EVALUATE:
        return replace(state, accepted=None, accepted_trees=None, growing=None)
    return state


def _advance_boost(state: FederationState, outcome: Outcome) -> FederationState:
    if _judges_network(Kind.BOOST, state):  # the network's last candidate, judged here
        if outcome.verdict == REJECTED:
            state = replace(
                state, weights=state.accepted, version=state.accepted_version, strategy_state=[]
            )
        state = replace(state, accepted=None)
    elif _judges_trees(Kind.BOOST, state) and outcome.verdict == REJECTED:
        # The tree is grown again on rows sampled anew; a second rejection in a row ends
        # growing (the trees stop getting better, or a member keeps spoiling them, and is
        # then a suspect of both).
        rejections = state.boost_rejections + 1
        return replace(
            state,
            trees=state.accepted_trees,
            accepted_trees=None,
            growing=None,
            version=state.accepted_version,
            boost_rejections=rejections,
            boosted=rejections >= MAX_TREE_REJECTIONS,
        )
    elif _judges_trees(Kind.BOOST, state):
        state = replace(state, accepted_trees=None, boost_rejections=0)
    if outcome.boosted:  # cut back to the best trees: a version of its own, accepted
        assert outcome.trees is not None
        cut = Ensemble.from_arrays(outcome.trees).trees < state.ensemble().trees
        return replace(
            state,
            trees=outcome.trees,
            growing=None,
            version=state.version + 1 if cut else state.version,
            boost_best=outcome.boost_best,
            boosted=True,
        )
    assert outcome.trees is not None
    if outcome.new_tree:
        trees = Ensemble.from_arrays(outcome.trees).trees
        before = state.ensemble()
        if before.trees == 0:  # the first tree moved the start: it is judged with it
            before = replace(before, base=boosting.prior(state.cap))
        return replace(
            state,
            trees=outcome.trees,
            growing=None,
            accepted_trees=before.to_arrays(),
            accepted_version=state.version,
            version=tree_version(state.training, trees),
            boost_best=outcome.boost_best,
        )
    return replace(
        state, trees=outcome.trees, growing=outcome.growing, boost_best=outcome.boost_best
    )


def tree_version(training: FederatedTraining, trees: int) -> int:
    """The model version a boosted model of ``trees`` trees is: after the network's."""
    return training.rounds + trees

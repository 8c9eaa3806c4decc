"""The site's side of a round: its input for each kind of round, and its answer to each stage.

The same functions run in a site's worker (``worker.site_runtime``, which fetches the
work over HTTP and keeps the site's round secrets in its keystore) and in the simulation
(:mod:`.simulation`). Nothing here returns rows: a site's input is one vector of
counts, statistics or weighted model weights, summed with the other sites' inputs.

A live round spans one request per stage, and the site's worker may restart between them:
:func:`site_step` takes and returns the site's state of the round (its keys and what it
sent), and answers a stage it answered before with the same message, so that a post that
failed is sent again unchanged (new keys, or a second reveal, would be refused).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.core import analytics
from federation.core import messages as m
from federation.core.engine import boosting
from federation.core.engine.rounds import RoundParameters
from federation.core.engine.training import (
    HEAD_TENSORS,
    HYBRID_FAMILY,
    MAX_DITTO_MU,
    TREES_FAMILY,
    LocalData,
    LocalResult,
    PersonalChoice,
    ditto_update,
    encode_choice,
    encode_private_training,
    encode_scores,
    encode_training,
    ensemble_predictions,
    head_of,
    initial_weights,
    personalise_locally,
    prepare_local_data,
    train_locally,
    with_head,
)
from federation.core.messages import Kind
from federation.core.private_files import write_private
from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.client import SecAggClient
from federation.core.secagg.primitives import SecAggError, SigningKey
from federation.core.strategies import Weights
from turbofan.data.features import SETTING_COLUMNS, FeaturePipeline, RegimeModel
from turbofan.models.artefact import HYBRID, TREES, RulModel
from turbofan.models.fit import NetworkRecipe, new_network_model, split_engines
from turbofan.models.training import TrainConfig
from turbofan.models.trees import BoostingSettings, Ensemble, GrowingTree

# Keys of a site's state of one round (kept in its keystore, never sent).
SENT = "sent"  # what the site sent, by stage
PARAMETERS_DIGEST = "parameters_sha256"  # the parameters it first saw: they may not change

Input = tuple[np.ndarray, dict[str, Any]]
PRIVATE_FILE_PREFIX = "private-"  # what a site trains for itself, in its state folder


class SiteData:
    """A site's rows, and the windows it derives from them, kept across rounds: the
    federation's pipeline and the validation split stay the same from round to round."""

    def __init__(self, frame: pd.DataFrame, private_dir: Path | None = None) -> None:
        self.frame = frame
        self._local: dict[str, tuple[FeaturePipeline, LocalData]] = {}
        self.choice: PersonalChoice | None = None  # the model this site chose, if it did
        # What this site trains for itself (a FedPer head, a Ditto model, its optimiser's
        # moments) by kind and line of models; kept in ``private_dir`` when given, so that
        # a worker that restarts goes on with it.
        self._private: dict[tuple[str, str], Weights] = {}
        self.private_dir = private_dir
        self.trees = boosting.SiteTrees()  # its bins and the trees' predictions so far

    def _private_path(self, kind: str, key: str) -> Path | None:
        if self.private_dir is None:
            return None
        return self.private_dir / f"{PRIVATE_FILE_PREFIX}{kind}-{key}.npz"

    def private_weights(self, kind: str, key: str) -> Weights | None:
        """What this site keeps of ``kind`` ("head", "ditto", "optimiser") for the line
        ``key``."""
        path = self._private_path(kind, key)
        if (kind, key) not in self._private and path is not None and path.exists():
            with np.load(path) as arrays:
                self._private[kind, key] = [arrays[f"t{i}"] for i in range(len(arrays.files))]
        return self._private.get((kind, key))

    def keep_private(self, kind: str, key: str, weights: Weights) -> None:
        self._private[kind, key] = [np.array(tensor, copy=True) for tensor in weights]
        path = self._private_path(kind, key)
        if path is not None:
            buffer = io.BytesIO()
            arrays: dict[str, Any] = {f"t{i}": tensor for i, tensor in enumerate(weights)}
            np.savez(buffer, **arrays)
            write_private(path, buffer.getvalue())

    def forget_private(self, kind: str, key: str) -> None:
        """Drop what this site kept of ``kind`` for the line ``key``, file and all."""
        self._private.pop((kind, key), None)
        path = self._private_path(kind, key)
        if path is not None:
            path.unlink(missing_ok=True)

    @property
    def rows(self) -> int:
        return len(self.frame)

    def local(
        self, pipeline: dict[str, Any], val_fraction: float, seed: int
    ) -> tuple[FeaturePipeline, LocalData]:
        key = json.dumps([pipeline, val_fraction, seed], sort_keys=True)
        if key not in self._local:
            fitted = FeaturePipeline.from_dict(pipeline)
            self._local = {  # one pipeline at a time: a new one replaces the old
                key: (
                    fitted,
                    prepare_local_data(self.frame, fitted, val_fraction=val_fraction, seed=seed),
                )
            }
        return self._local[key]


def site_input(
    work: dict[str, Any],
    data: SiteData,
    parameters: RoundParameters,
    rng: np.random.Generator | None = None,
) -> Input:
    """This site's vector for a round of ``work``'s kind, and the plain metadata beside it
    (its number of examples, how long it trained). Training rounds train here.

    ``rng`` draws the DP noise (the simulation seeds it; a live site leaves it None and
    draws from the operating system).
    """
    kind = Kind(work[m.KEY_KIND])
    scale = parameters.weight_scale
    nothing: dict[str, Any] = {m.KEY_EXAMPLES: 0, m.KEY_METRICS: {}}
    frame = data.frame
    if kind == Kind.PERSONALISE:
        if work.get(m.KEY_FAMILY) == TREES_FAMILY:
            return _personal_trees_input(work, data, parameters)
        if work.get(m.KEY_FAMILY) == HYBRID_FAMILY:
            return _personal_hybrid_input(work, data, parameters)
        return _personal_input(work, data, parameters)
    if kind == Kind.SKETCH:
        _, local = data.local(
            work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
        )
        return boosting.encode_sketch(local, scale), nothing
    if kind == Kind.BOOST:
        return _boost_input(work, data, parameters)
    if kind == Kind.EVALUATE and work.get(m.KEY_SCORED) == m.SCORED_TREES:
        return _trees_scores(work, data, parameters)
    if kind == Kind.EVALUATE and work.get(m.KEY_SCORED) == m.SCORED_BLEND:
        return _blend_scores(work, data, parameters)
    if kind in (Kind.TRAIN, Kind.EVALUATE):
        return _training_input(work, data, parameters, rng)
    if kind == Kind.POINTS:
        return analytics.encode_points(frame[SETTING_COLUMNS].to_numpy(), scale=scale), nothing
    if kind == Kind.MOMENTS:
        regimes = RegimeModel.from_dict(work[m.KEY_REGIMES])
        return analytics.encode_moments(frame, regimes, scale=scale), nothing
    query = analytics.Query.from_dict(work[m.KEY_QUERY])
    regimes_dict = work.get(m.KEY_REGIMES)
    vector = analytics.encode_query(
        frame,
        query,
        scale=scale,
        regimes=RegimeModel.from_dict(regimes_dict) if query.per_regime and regimes_dict else None,
        privacy=analytics.QueryPrivacy.from_dict(parameters.privacy)
        if parameters.privacy
        else None,
        rng=rng,
    )
    return vector, nothing


def _personal_input(work: dict[str, Any], data: SiteData, parameters: RoundParameters) -> Input:
    """The federation's last model adapted here, a model trained alone, and the choice
    between them and the federation's model on this site's validation engines: the choice
    (kept in ``data.choice`` for the site) goes into the sum as a count, the rest stays."""
    recipe = NetworkRecipe.from_dict(work[m.KEY_RECIPE])
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    settings = work[m.KEY_PERSONAL]
    weights = _with_own_head(work, data, announced_model(work, parameters, m.KEY_WEIGHTS, "model"))
    start = initial_weights(pipeline, recipe, int(settings["seed"]))
    model = new_network_model(pipeline, recipe)
    ditto = _line_key(work, m.KEY_DITTO)
    data.choice = personalise_locally(
        model,
        weights,
        start,
        local,
        settings,
        ditto=data.private_weights("ditto", ditto) if ditto is not None else None,
    )
    return encode_choice(data.choice.choice), {
        m.KEY_EXAMPLES: 0,
        m.KEY_METRICS: {"seconds": data.choice.seconds},
    }


def _boost_task(
    work: dict[str, Any], parameters: RoundParameters, pipeline: FeaturePipeline
) -> boosting.BoostTask:
    """The trees a boost (or scoring) round hands this site, each checked against the
    digest the round announces, and checked to fit the federation's pipeline."""
    try:
        settings = BoostingSettings.from_dict(work[m.KEY_BOOSTING])
        model = Ensemble.from_arrays(announced_model(work, parameters, m.KEY_TREES, "trees"))
        growing = None
        if m.KEY_GROWING in work:
            arrays = announced_model(work, parameters, m.KEY_GROWING, "growing")
            growing = GrowingTree.from_arrays(arrays, settings)
        accepted = None
        if m.KEY_ACCEPTED_TREES in work:
            arrays = announced_model(work, parameters, m.KEY_ACCEPTED_TREES, "accepted_trees")
            accepted = Ensemble.from_arrays(arrays)
    except (ValueError, TypeError, KeyError) as error:
        raise SecAggError(f"the round's trees are unusable: {error}") from None
    expected = boosting.summary_count(pipeline.n_features)
    if model.edges.shape[0] != expected or model.feature.shape[1] != settings.nodes:
        raise SecAggError("the round's trees do not fit the federation's pipeline and settings")
    return boosting.BoostTask(settings, model, growing, accepted, float(pipeline.rul_cap or 125))


def _boost_input(work: dict[str, Any], data: SiteData, parameters: RoundParameters) -> Input:
    """This site's histograms of the tree being grown (and, in the round after the last
    network round, its scores of the network's last candidate)."""
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    site = work[m.KEY_PROTOCOL][m.SITE]
    judged = None
    if work.get(m.KEY_SCORED) == m.SCORED_NETWORK and m.KEY_ACCEPTED in work:
        model = new_network_model(pipeline, NetworkRecipe.from_dict(work[m.KEY_RECIPE]))
        judged = train_locally(
            model,
            announced_model(work, parameters, m.KEY_WEIGHTS, "model"),
            local,
            None,
            accepted=announced_model(work, parameters, m.KEY_ACCEPTED, "accepted"),
        )
    started = time.perf_counter()
    vector, result = boosting.boost_input(
        _boost_task(work, parameters, pipeline),
        local,
        data.trees,
        site=site,
        weight=parameters.weight_of((site,)),
        scale=parameters.weight_scale,
        judged=judged,
    )
    result = replace(result, seconds=round(time.perf_counter() - started, 3))
    return vector, beside_input(result)


def _trees_scores(work: dict[str, Any], data: SiteData, parameters: RoundParameters) -> Input:
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    task = _boost_task(work, parameters, pipeline)
    result = boosting.score_trees(task.model, task.accepted, local, data.trees)
    site = work[m.KEY_PROTOCOL][m.SITE]
    return encode_scores(result, parameters.weight_of((site,))), beside_input(result)


def _blend_scores(work: dict[str, Any], data: SiteData, parameters: RoundParameters) -> Input:
    """A hybrid's evaluation: its trees' scores (and vote, on a candidate), then the
    blend of its network and trees at every share."""
    vector, beside = _trees_scores(work, data, parameters)
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    task = _boost_task(work, parameters, pipeline)
    model = new_network_model(pipeline, NetworkRecipe.from_dict(work[m.KEY_RECIPE]))
    weights = announced_model(work, parameters, m.KEY_WEIGHTS, "model")
    network = ensemble_predictions(model, [weights], local)
    trees = data.trees.validation(local, task.model)
    site = work[m.KEY_PROTOCOL][m.SITE]
    weight = parameters.weight_of((site,))
    shares = boosting.encode_blend(network, trees, local, weight, task.cap)
    return np.concatenate([vector, shares]), beside


def _personal_hybrid_input(
    work: dict[str, Any], data: SiteData, parameters: RoundParameters
) -> Input:
    """A hybrid's personalisation: the network's candidates and the trees', each pair
    blended at the federation's share, and the choice between the blends."""
    recipe = NetworkRecipe.from_dict(work[m.KEY_RECIPE])
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    settings = work[m.KEY_PERSONAL]
    weights = announced_model(work, parameters, m.KEY_WEIGHTS, "model")
    model = new_network_model(pipeline, recipe)
    start = initial_weights(pipeline, recipe, int(settings["seed"]))
    network = personalise_locally(model, weights, start, local, settings)
    predictions = {
        name: ensemble_predictions(model, members, local)
        for name, members in network.candidates.items()
    }
    task = _boost_task(work, parameters, pipeline)
    trees = boosting.personalise_trees(task.model, local, task.settings, cap=task.cap)
    share = float(work[m.KEY_SHARE])
    if not 0 <= share <= 1:
        raise SecAggError("a hybrid's share of its trees is between 0 and 1")
    data.choice = boosting.personalise_hybrid(
        network, predictions, trees, local, share=share, cap=task.cap, seed=int(settings["seed"])
    )
    return encode_choice(data.choice.choice), {
        m.KEY_EXAMPLES: 0,
        m.KEY_METRICS: {"seconds": data.choice.seconds},
    }


def _personal_trees_input(
    work: dict[str, Any], data: SiteData, parameters: RoundParameters
) -> Input:
    """The trees' counterpart of :func:`_personal_input`."""
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    task = _boost_task(work, parameters, pipeline)
    data.choice = boosting.personalise_trees(task.model, local, task.settings, cap=task.cap)
    return encode_choice(data.choice.choice), {
        m.KEY_EXAMPLES: 0,
        m.KEY_METRICS: {"seconds": data.choice.seconds},
    }


def kept_models(work: dict[str, Any], data: SiteData) -> dict[str, RulModel]:
    """What a site keeps of a personalisation round (``work``), as model files its
    predictions can use: ``chosen`` (with its choice and validation figures in the
    metadata), ``local`` (the model it trained alone) and ``federation`` (the federation's
    model it started from). Empty if the site made no choice."""
    if data.choice is None:
        return {}
    recipe = NetworkRecipe.from_dict(work[m.KEY_RECIPE])
    pipeline, _ = data.local(work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED])
    trees = work.get(m.KEY_FAMILY) == TREES_FAMILY
    choice = data.choice
    models = {}
    roles = (("chosen", choice.choice), ("local", "alone"), ("federation", "global"))
    for role, name in roles:
        model = new_network_model(pipeline, recipe)
        if trees:
            model.kind = TREES
        if choice.share is not None:  # a hybrid: the network and the trees, blended
            model.kind, model.share = HYBRID, choice.share
            model.trees = choice.tree_candidates[name]
        model.members = choice.candidates[name]
        model.meta.update(setup=f"{role}: {name}", choice=name, val_rmse=data.choice.val_rmse)
        models[role] = model
    return models


def validation_units(work: dict[str, Any], data: SiteData) -> list[int]:
    """The site's engines (units of its pooled training rows) that ``work``'s split keeps
    back for validation: no model of the site trains on them."""
    _, val_rows = split_engines(data.frame, work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED])
    return sorted(int(u) for u in val_rows["unit"].unique())


def _training_input(
    work: dict[str, Any],
    data: SiteData,
    parameters: RoundParameters,
    rng: np.random.Generator | None,
) -> Input:
    recipe = NetworkRecipe.from_dict(work[m.KEY_RECIPE])
    pipeline, local = data.local(
        work[m.KEY_PIPELINE], work[m.KEY_VAL_FRACTION], work[m.KEY_SPLIT_SEED]
    )
    model = new_network_model(pipeline, recipe)
    weights = announced_model(work, parameters, m.KEY_WEIGHTS, "model")
    accepted = work.get(m.KEY_ACCEPTED)
    # The site's optimiser moments from its last round, when the federation keeps them.
    moments_key = _line_key(work, m.KEY_OPTIMISER) if m.KEY_LOCAL in work else None
    kept = data.private_weights("optimiser", moments_key) if moments_key else None
    result = train_locally(
        model,
        _with_own_head(work, data, weights),
        local,
        TrainConfig(**work[m.KEY_LOCAL]) if m.KEY_LOCAL in work else None,  # None: score only
        proximal_mu=work.get(m.KEY_PROXIMAL_MU, 0.0),
        accepted=_with_own_head(
            work, data, announced_model(work, parameters, m.KEY_ACCEPTED, "accepted")
        )
        if accepted
        else None,
        moments=kept,
    )
    if moments_key is not None and result.moments:
        data.keep_private("optimiser", moments_key, result.moments)
        if kept is None:  # the line's first round since it (re)started: the old start ends
            for stale in earlier_starts(work):
                data.forget_private("optimiser", stale)
    site = work[m.KEY_PROTOCOL][m.SITE]
    if Kind(work[m.KEY_KIND]) == Kind.EVALUATE:
        return encode_scores(result, parameters.weight_of((site,))), beside_input(result)
    key = _line_key(work, m.KEY_PRIVATE_HEAD)
    if key is not None:
        # FedPer: the head this site trained stays here; the sum gets back the head the
        # site was given, so that only the body is averaged.
        data.keep_private("head", key, head_of(result.weights))
        result = replace(result, weights=with_head(result.weights, head_of(weights)))
    ditto = _line_key(work, m.KEY_DITTO)
    if ditto is not None:
        # Ditto: the site's own model trains on from where it was, pulled toward the
        # round's global model; it stays here.
        personal = data.private_weights("ditto", ditto) or weights
        mu = float(work[m.KEY_DITTO]["mu"])
        if not 0 < mu <= MAX_DITTO_MU:
            raise SecAggError(f"a Ditto weight must be above 0 and at most {MAX_DITTO_MU}")
        config = TrainConfig(**work[m.KEY_LOCAL])
        data.keep_private(
            "ditto", ditto, ditto_update(model, personal, weights, local, config, mu=mu)
        )
    return training_input(result, weights, parameters, site, rng)


def _line_key(work: dict[str, Any], field: str) -> str | None:
    """Which of its own models a task with a private part (``field``: a FedPer head, a
    Ditto model, the optimiser's moments) uses: one per line of models (the federation's
    pipeline and its member seed); None when the task has no such part."""
    spec = work.get(field)
    if not spec:
        return None
    if field == m.KEY_PRIVATE_HEAD and int(spec.get("tensors", -1)) != HEAD_TENSORS:
        raise SecAggError(f"a private head is the last {HEAD_TENSORS} tensors of the network")
    parts = [work[m.KEY_PIPELINE], int(spec["lineage"])]
    if "restart" in spec:  # a new start of the same line (the optimiser after a rejection)
        parts.append(int(spec["restart"]))
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# How many earlier starts of an optimiser's line a site looks for to delete: a site that
# missed more rejections in a row than this keeps a stale file of moments, never uses it.
STALE_STARTS = 16


def earlier_starts(work: dict[str, Any]) -> list[str]:
    """The keys of the earlier starts of a training task's optimiser line (before the
    rejection that restarted it): moments the site will never use again."""
    spec = work.get(m.KEY_OPTIMISER)
    if not spec or "restart" not in spec:
        return []
    restart = int(spec["restart"])
    keys = (
        _line_key({**work, m.KEY_OPTIMISER: {**spec, "restart": earlier}}, m.KEY_OPTIMISER)
        for earlier in range(max(0, restart - STALE_STARTS), restart)
    )
    return [key for key in keys if key is not None]


def _with_own_head(work: dict[str, Any], data: SiteData, weights: Weights) -> Weights:
    """The federation's ``weights`` as this site uses them: with its own head under
    FedPer (once it has trained one), as they are otherwise."""
    key = _line_key(work, m.KEY_PRIVATE_HEAD)
    head = data.private_weights("head", key) if key is not None else None
    return weights if head is None else with_head(weights, head)


def announced_model(
    work: dict[str, Any], parameters: RoundParameters, key: str, name: str
) -> Weights:
    """The weights the task hands this site under ``key``, refused unless they are the
    ones the round's parameters announce (which every site signed with its keys, so all
    were told the same): a coordinator cannot train or score a site on a model of its
    own making for that site alone."""
    weights = m.weights_from_bytes(m.unb64(work[key]))
    announced = (parameters.announcement or {}).get(name)
    if announced is None:
        raise SecAggError(f"the round announces no {name} digest: its model is refused")
    if m.weights_digest(weights) != announced:
        raise SecAggError(
            f"the {name} weights the coordinator sent do not match the round's announced "
            "digest: refused"
        )
    return weights


def training_input(
    result: LocalResult,
    reference: Weights,
    parameters: RoundParameters,
    site: int,
    rng: np.random.Generator | None = None,
) -> Input:
    """Site ``site``'s vector in a training round from what its training gave
    (``reference``: the global weights it started from), with its public weight, and the
    metadata beside it."""
    weight = parameters.weight_of((site,))
    if parameters.privacy:
        vector = encode_private_training(result, reference, parameters.privacy, weight, rng)
        # Under DP its number of examples stays home, as its validation error does.
        return vector, {m.KEY_EXAMPLES: 0, m.KEY_METRICS: {"seconds": result.seconds}}
    return encode_training(result, weight), beside_input(result)


def beside_input(result: LocalResult) -> dict[str, Any]:
    """What a site says in the clear beside its input: its examples, how long it took, and
    its vote on the incoming candidate model, if it is one."""
    beside = {m.KEY_EXAMPLES: result.examples, m.KEY_METRICS: {"seconds": result.seconds}}
    vote = result.vote()
    return beside if vote is None else {**beside, m.KEY_VOTE: vote}


def parameters_digest(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()


def site_step(
    work: dict[str, Any],
    site: int,
    identity: SigningKey,
    state: dict[str, Any] | None,
    compute: Callable[[], Input],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This site's message for the stage ``work`` asks for, and its state afterwards.

    ``compute`` gives the vector to sum and the metadata beside it (see
    :func:`site_input`); it is called only in the stage that sends the input. Raises
    :class:`SecAggError` for anything forged, replayed or unsafe; the site then sends
    nothing.
    """
    part = work[m.KEY_PROTOCOL]
    stage = part[m.STAGE]
    parameters = RoundParameters.from_json(part[m.PARAMETERS])
    sent = (state or {}).get(SENT, {})
    if stage in sent:
        return sent[stage], state or {}
    digest = parameters_digest(part[m.PARAMETERS])
    if state is not None and state.get(PARAMETERS_DIGEST) not in (None, digest):
        raise SecAggError(
            f"the parameters of round {parameters.round_id} changed since this site first saw "
            "them: refused"
        )
    if site not in parameters.sites:
        raise SecAggError(f"site {site} is not part of round {parameters.round_id}")
    before = (
        parameters.stages[: parameters.stages.index(stage)] if stage in parameters.stages else ()
    )
    if state is not None and any(earlier not in sent for earlier in before):
        raise SecAggError(
            f"the {stage} stage of round {parameters.round_id} before this site answered the "
            "stages that come first: refused"
        )
    if stage == m.PLAIN_INPUT:
        body = _plain_input(parameters, site, identity, compute)
        return body, {PARAMETERS_DIGEST: digest, SENT: {**sent, stage: body}}
    body, secrets_ = _secure_step(work, stage, parameters, site, identity, state, compute)
    return body, {**secrets_, PARAMETERS_DIGEST: digest, SENT: {**sent, stage: body}}


def _checked_input(
    compute: Callable[[], Input], parameters: RoundParameters, site: int, identity: SigningKey
) -> Input:
    values, metadata = compute()
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (parameters.length,):
        raise SecAggError(
            f"the input has {values.size} values; round {parameters.round_id} sums "
            f"{parameters.length}"
        )
    if m.KEY_VOTE in metadata:  # the vote is the site's own: it signs it
        signed = p.signed_vote(parameters.round_id, site, int(metadata[m.KEY_VOTE]))
        metadata = {**metadata, m.KEY_VOTE_SIGNATURE: m.b64(identity.sign(signed))}
    return values, metadata


def _plain_input(
    parameters: RoundParameters, site: int, identity: SigningKey, compute: Callable[[], Input]
) -> dict[str, Any]:
    if parameters.secure is not None:
        raise SecAggError("a plain input was asked for in a secure round: refused")
    values, metadata = _checked_input(compute, parameters, site, identity)
    return {
        m.STAGE: m.PLAIN_INPUT,
        m.ROUND: parameters.round_id,
        m.SITE: site,
        m.VECTOR: m.vector_to_text(
            np.clip(values, -parameters.value_range, parameters.value_range)
        ),
        **metadata,
    }


def _secure_step(
    work: dict[str, Any],
    stage: str,
    parameters: RoundParameters,
    site: int,
    identity: SigningKey,
    state: dict[str, Any] | None,
    compute: Callable[[], Input],
) -> tuple[dict[str, Any], dict[str, Any]]:
    secure = parameters.secure
    if secure is None:
        raise SecAggError(f"a {stage!r} stage in a plain round: refused")
    if state is None and stage != p.ADVERTISE_KEYS:
        raise SecAggError(
            f"the keystore holds no keys of secure round {parameters.round_id}: this site "
            "cannot take part in it any more"
        )
    args = (secure.settings, site, identity, secure.identities, secure.quantiser)
    client = SecAggClient(*args) if state is None else SecAggClient.from_state(state, *args)
    part = work[m.KEY_PROTOCOL]
    round_id = parameters.round_id
    if stage == p.ADVERTISE_KEYS:
        body = wire.keys_to_json(client.advertise())
    elif stage == p.SHARE_KEYS:
        advertised = {
            int(peer): wire.keys_from_json(message, secure.settings)
            for peer, message in part[m.ADVERTISED].items()
        }
        body = wire.shares_to_json(client.share(advertised), round_id)
    elif stage == p.MASKED_INPUT:
        received = {
            int(sender): wire.sealed_from_json(text, sender)
            for sender, text in part[m.SEALED].items()
        }
        commitments = {
            int(sender): wire.commitment_from_json(text, sender)
            for sender, text in part.get(m.COMMITMENTS, {}).items()
        }
        values, metadata = _checked_input(compute, parameters, site, identity)
        masked = client.mask(values, received, commitments)
        body = {**metadata, **wire.masked_to_json(masked, round_id)}
    elif stage == p.UNMASK:
        alive = set(part[m.ALIVE])
        if len(alive) < parameters.min_contributors:
            raise SecAggError(
                f"only {len(alive)} sites' inputs are in the sum; round {round_id} publishes "
                f"none of fewer than {parameters.min_contributors}: refused"
            )
        body = wire.unmask_to_json(client.unmask(alive, set(part[m.DROPPED])), round_id)
    else:
        raise SecAggError(f"unknown secure-aggregation stage {stage!r}")
    return body, client.to_state()

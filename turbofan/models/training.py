"""Training a RUL network: one loop for centralised runs and for a site's local update.

A network's weights travel as a list of numpy arrays in ``state_dict`` order (the
form aggregation works on), see :func:`get_weights` and :func:`set_weights`.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

Weights = list[np.ndarray]


@dataclass
class TrainConfig:
    """How one network is trained.

    Parameters
    ----------
    epochs : passes over the training windows (the most, with early stopping)
    batch_size : windows per step
    lr : peak learning rate of Adam
    weight_decay : decoupled weight decay (AdamW)
    schedule : ``"onecycle"`` (warm-up then cosine decay over ``epochs``) or ``"constant"``
    patience : stop after this many epochs without a better validation RMSE
        (0 turns early stopping off; needs validation windows)
    prox_mu : FedProx: weight of ``mu/2 * ||w - w_global||^2`` in the local loss
    seed : seeds shuffling, dropout and (with :func:`seed_everything`) initialisation
    min_steps : at least this many optimizer steps, in whole epochs: a trainer with few
        windows makes more passes than ``epochs`` (0: ``epochs`` only)
    """

    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    patience: int = 10
    prox_mu: float = 0.0
    seed: int = 0
    min_steps: int = 0

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The most epochs to train, with ``steps_per_epoch`` steps each."""
        return max(self.epochs, math.ceil(self.min_steps / max(1, steps_per_epoch)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    weights: Weights
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    examples: int = 0
    # The optimiser's moments after the last step (see :func:`adam_moments`), for a
    # trainer that goes on later from where this one stopped.
    moments: Weights | None = None


def seed_everything(seed: int) -> None:
    """Same seed, same initial weights, batches and dropout masks."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def torch_threads() -> int:
    """Threads torch may use: ``TORCH_NUM_THREADS``, else 1.

    These networks are small: on a 2-core machine one thread per process is as
    fast as two when idle and several times faster when other processes (site
    workers, the web server) want the cores too, as threads then wait on each other.
    """
    return max(1, int(os.environ.get("TORCH_NUM_THREADS", "1")))


def get_weights(net: nn.Module) -> Weights:
    return [tensor.detach().cpu().numpy().copy() for tensor in net.state_dict().values()]


def set_weights(net: nn.Module, weights: Weights) -> None:
    state = net.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"got {len(weights)} arrays for a network with {len(state)} tensors")
    new_state = {}
    for (name, tensor), array in zip(state.items(), weights, strict=True):
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(f"{name}: shape {array.shape} does not fit {tuple(tensor.shape)}")
        new_state[name] = torch.as_tensor(np.asarray(array), dtype=tensor.dtype)
    net.load_state_dict(new_state)


def predict(net: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Network output for windows ``x`` (n, window, features), in cycles."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(net(torch.from_numpy(x[start : start + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_network(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    reference: Weights | None = None,
    progress: bool = False,
    description: str = "training",
    moments: Weights | None = None,
) -> TrainResult:
    """Train ``net`` in place on windows ``x`` and labels ``y``; return its best weights.

    With validation windows the weights of the epoch with the lowest validation
    RMSE are returned (and training stops after ``config.patience`` epochs
    without improvement); without, those of the last epoch. ``reference`` is the
    global model for FedProx's proximal term (``config.prox_mu > 0``). ``moments``
    (from an earlier result's ``moments``) start the optimiser where that training left
    it, at this config's learning rate; the result's are where this one leaves it.
    """
    started = time.perf_counter()
    torch.set_num_threads(torch_threads())
    generator = torch.Generator().manual_seed(config.seed)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    steps_per_epoch = max(1, math.ceil(len(x) / config.batch_size))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if moments is not None:
        load_adam_moments(optimiser, moments)
    epochs = config.epochs_for(steps_per_epoch)
    scheduler = _scheduler(optimiser, config, epochs * steps_per_epoch)
    anchors = _anchors(net, reference) if config.prox_mu > 0 and reference is not None else None
    loss_fn = nn.MSELoss()
    # The loss is taken in units of the network's output scale (the RUL cap), so the
    # proximal weight mu means what it means in the FedProx literature.
    scale = float(getattr(net, "output_scale", 1.0))
    validate = x_val is not None and y_val is not None and len(x_val) > 0
    best_rmse, best_weights, best_epoch, history = math.inf, get_weights(net), 0, []
    bar = tqdm(range(1, epochs + 1), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(net(x_all[batch]) / scale, y_all[batch] / scale)
            if anchors is not None:
                loss = loss + _proximal_term(net, anchors, config.prox_mu)
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(batch)
        record = {"epoch": epoch, "train_rmse": scale * math.sqrt(total / len(x))}
        if validate:
            record["val_rmse"] = float(np.sqrt(np.mean((predict(net, x_val) - y_val) ** 2)))  # type: ignore[arg-type]
            if record["val_rmse"] < best_rmse:
                best_rmse, best_weights, best_epoch = record["val_rmse"], get_weights(net), epoch
        history.append(record)
        bar.set_postfix({k: round(v, 2) for k, v in record.items() if k != "epoch"})
        if validate and config.patience and epoch - best_epoch >= config.patience:
            break
    if not validate:
        best_weights, best_epoch = get_weights(net), len(history)
    set_weights(net, best_weights)
    return TrainResult(
        weights=best_weights,
        history=history,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        examples=len(x),
        moments=adam_moments(optimiser),
    )


def adam_moments(optimiser: torch.optim.Optimizer) -> Weights:
    """Adam's state as arrays: its step count, then each parameter's running means of the
    gradient and of its square, in parameter order (empty before the first step)."""
    params = [p for group in optimiser.param_groups for p in group["params"]]
    if not params or any(not optimiser.state.get(p) for p in params):
        return []
    states = [optimiser.state[p] for p in params]
    arrays = [np.array([float(states[0]["step"])], dtype=np.float64)]
    for state in states:
        arrays += [state["exp_avg"].numpy().copy(), state["exp_avg_sq"].numpy().copy()]
    return arrays


def load_adam_moments(optimiser: torch.optim.Optimizer, moments: Weights) -> bool:
    """Start ``optimiser`` (a fresh Adam) from :func:`adam_moments`; its learning rate and
    other settings stay its own. Moments that do not fit its parameters (another network)
    or are not finite are left out: it starts fresh, and this says False."""
    params = [p for group in optimiser.param_groups for p in group["params"]]
    if len(moments) != 1 + 2 * len(params) or any(
        moments[1 + 2 * i + k].shape != tuple(p.shape) for i, p in enumerate(params) for k in (0, 1)
    ):
        return False
    if not all(np.isfinite(array).all() for array in moments) or moments[0][0] < 1:
        return False
    step = torch.tensor(float(moments[0][0]), dtype=torch.float32)
    for i, p in enumerate(params):
        optimiser.state[p] = {
            "step": step.clone(),
            "exp_avg": torch.as_tensor(np.array(moments[1 + 2 * i]), dtype=p.dtype),
            "exp_avg_sq": torch.as_tensor(np.array(moments[2 + 2 * i]), dtype=p.dtype),
        }
    return True


def _scheduler(
    optimiser: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "constant":
        return None
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=config.lr, total_steps=total_steps
        )
    raise ValueError(f"unknown schedule {config.schedule!r}: use 'onecycle' or 'constant'")


def _anchors(net: nn.Module, reference: Weights) -> list[torch.Tensor]:
    names = list(net.state_dict())
    by_name = dict(zip(names, reference, strict=True))
    return [torch.as_tensor(by_name[name]) for name, _ in net.named_parameters()]


def _proximal_term(net: nn.Module, anchors: list[torch.Tensor], mu: float) -> torch.Tensor:
    squared = [((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchors, strict=True)]
    return 0.5 * mu * torch.stack(squared).sum()

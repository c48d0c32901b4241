"""Early-exit inference: run stage by stage and stop computing for the samples that leave."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..online import BudgetController
from ._batches import as_inputs, check_batch_size, evaluating, n_rows, resolve_network, row_slice, synchronize
from ._model import take_rows


@dataclass(frozen=True)
class EarlyExitResult:
    """What :func:`early_exit_predict` returns.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,)
        Predicted class labels (from the policy's ``classes_``).
    exits : ndarray of shape (n_samples,)
        Exit (0-based) each sample left at.
    seconds : float
        Wall-clock time of the whole run (network, decisions, transfers).
    batch_size : int
        The batch size of the run.

    See Also
    --------
    early_exit_predict : Makes it.
    time_full_network : The full network's time over the same inputs, to compare ``seconds`` with.
    """

    labels: np.ndarray
    exits: np.ndarray
    seconds: float
    batch_size: int

    @property
    def ms_per_sample(self) -> float:
        """Mean wall-clock milliseconds per sample."""
        return 1000.0 * self.seconds / max(len(self.exits), 1)


def early_exit_predict(network, policy, X, *, batch_size: int = 256, device=None) -> EarlyExitResult:
    """Predict with real early exits: after each exit, only the samples that stay run on.

    The inputs go through in batches. In a batch, stage ``k`` and head ``k`` run on the
    samples still in it; the policy decides from their logits of exits ``0..k`` which
    of them leave at ``k``; those rows are dropped from the stage output before stage
    ``k + 1`` runs, so nothing is computed for a sample after it leaves. Decisions and
    labels equal ``policy.predict_exit`` / ``policy.predict`` on the full logits of the
    same inputs, since every policy here decides causally (with a controller, those of
    its ``predict_exit`` / ``predict`` fed the same batches).

    Parameters
    ----------
    network : MultiExitNetwork or fitted MultiExitClassifier
    policy : fitted exit policy or BudgetController
        Fitted on logits (``input_type="logits"``) of a network with the same exits.
        A :class:`~eenet_sklearn.online.BudgetController` decides each batch with its
        current thresholds and, once every sample of the batch has left, records the
        batch's exits and moves its thresholds for the next batch.
    X : tensor, ndarray or dict of them
        Inputs of the network's first stage (a dict goes as keyword tensors).
    batch_size : int, default=256
    device : str or torch.device, default=None
        Where the network runs; ``None`` for where its parameters are (the network
        is moved there if another device is given).

    Returns
    -------
    EarlyExitResult
        ``labels`` and ``exits`` of shape (n_samples,), ``seconds`` (wall clock, s).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``policy`` (or the controller's policy) is not fitted.
    ValueError
        If the policy was fitted on probabilities rather than logits, its number of
        exits differs from the network's, or ``batch_size`` is not a positive integer.
    TypeError
        If ``network`` is neither a ``MultiExitNetwork`` nor a fitted ``MultiExitClassifier``.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.decide_at_exit : The decision made after each exit.
    eenet_sklearn.online.BudgetController : Holds the mean cost on a drifting stream.
    time_full_network : The time of the network without early exits.
    measure_latency : The per-exit costs to fit the policy with.
    """
    # A controller decides (and learns from each batch); its policy is what is checked.
    controller = policy if isinstance(policy, BudgetController) else None
    decider = policy
    if controller is not None:
        policy = controller.policy
    check_is_fitted(policy)
    if getattr(policy, "input_type", "logits") != "logits":
        raise ValueError(
            f"policy must be fitted on logits (input_type='logits'), got input_type={policy.input_type!r}."
        )
    batch_size = check_batch_size(batch_size)
    module, device = resolve_network(network, device)
    if module.n_exits != policy.n_exits_:
        raise ValueError(
            f"network has {module.n_exits} exits but the policy was fitted on {policy.n_exits_}."
        )
    inputs = as_inputs(X)
    total = n_rows(inputs)
    exits = np.empty(total, dtype=np.int64)
    labels = np.empty(total, dtype=policy.classes_.dtype)
    synchronize(device)
    start = time.perf_counter()
    with evaluating(module):
        for first in range(0, total, batch_size):
            rows = np.arange(first, min(first + batch_size, total))
            batch = row_slice(inputs, slice(first, first + batch_size), device)
            state, seen = None, None  # seen: logits of exits 0..k of the rows still in the batch
            for k, head in enumerate(module.heads):
                state = module.run_stage(k, state, batch)
                logits = _to_numpy(head(state))
                if seen is None:
                    seen = np.empty((len(rows), module.n_exits, logits.shape[1]), dtype=logits.dtype)
                seen[:, k] = logits
                leaving, proba = decider.decide_at_exit(seen[:, : k + 1])
                if not leaving.any():
                    continue
                exits[rows[leaving]] = k
                labels[rows[leaving]] = policy.classes_[proba[leaving].argmax(axis=1)]
                if leaving.all():
                    break
                staying = ~leaving
                rows, seen = rows[staying], seen[staying]
                state = take_rows(state, torch.from_numpy(np.flatnonzero(staying)).to(device))
            if controller is not None:
                controller.update(exits[first : first + batch_size])
    synchronize(device)
    return EarlyExitResult(labels, exits, time.perf_counter() - start, batch_size)


def time_full_network(network, X, *, batch_size: int = 256, device=None) -> float:
    """Wall-clock seconds of the whole network, every exit computed, over ``X`` in batches.

    The reference that :func:`early_exit_predict`'s ``seconds`` is compared with: the
    same batching, device and synchronisation, no sample leaving early.

    Parameters
    ----------
    network : MultiExitNetwork or fitted MultiExitClassifier
    X : tensor, ndarray or dict of them
    batch_size : int, default=256
    device : str or torch.device, default=None

    Returns
    -------
    float
        Seconds of wall-clock time over all of ``X``.

    Raises
    ------
    ValueError
        If ``batch_size`` is not a positive integer.
    TypeError
        If ``network`` is neither a ``MultiExitNetwork`` nor a fitted ``MultiExitClassifier``.

    See Also
    --------
    early_exit_predict : The same run with early exits.
    """
    batch_size = check_batch_size(batch_size)
    module, device = resolve_network(network, device)
    inputs = as_inputs(X)
    total = n_rows(inputs)
    synchronize(device)
    start = time.perf_counter()
    with evaluating(module):
        for first in range(0, total, batch_size):
            batch = row_slice(inputs, slice(first, first + batch_size), device)
            module(**batch) if isinstance(batch, dict) else module(batch)
    synchronize(device)
    return time.perf_counter() - start


def _to_numpy(logits: torch.Tensor) -> np.ndarray:
    # The dtype that transform() gives for the same network, so the policy sees the same values.
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return logits.cpu().numpy()

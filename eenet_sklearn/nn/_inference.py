"""Early-exit inference: run stage by stage and stop computing for the samples that leave."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._validation import format_values
from ..online import BudgetController
from ._batches import as_inputs, check_batch_size, evaluating, n_rows, resolve_network, row_slice, synchronize
from ._model import MultiExitNetwork, first_stage_mismatch, take_rows


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
    samples still in it; the policy's :meth:`exit_decider
    <eenet_sklearn.base.BaseExitPolicy.exit_decider>` decides from their exit-``k``
    logits (and what it carried from the earlier exits) which of them leave at ``k``;
    those rows are dropped from the stage output before stage ``k + 1`` runs, so
    nothing is computed for a sample after it leaves.

    Decisions and labels equal ``policy.predict_exit`` / ``policy.predict`` on the
    logits the network produces in this run (a sample's logits up to the exit it leaves
    at, which are all its decision reads): the decider runs the same arithmetic, and no
    row's decision depends on the other rows (with a controller, those of its
    ``predict_exit`` / ``predict`` fed the same batches). The network's logits are
    another matter: its kernels may round a row differently with the number of rows
    they run on (``batch_size`` at the first stage, the rows still running after it),
    in the last bits of float32, so that they can differ from the logits of the same
    inputs computed in other batches (as
    :meth:`~eenet_sklearn.nn.MultiExitClassifier.transform` computes them); a sample
    whose score lies within that rounding of a threshold may then leave at another
    exit than ``predict_exit`` on those logits gives. With ``batch_size=1`` each
    sample's logits are the network's on that sample alone.

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
        exits differs from the network's, ``batch_size`` is not a positive integer, or
        the network's logits at an exit are not finite (NaN or infinite inputs), as
        ``policy.predict`` refuses them.
    TypeError
        If ``network`` is neither a ``MultiExitNetwork`` nor a fitted
        ``MultiExitClassifier``, or a tensor ``X`` is not floating point (uint8
        images, bools, integers) where the network's first layer expects floats.
        Float inputs of another precision (float64, float16) are converted to the
        network's dtype.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.exit_decider : The decision made after each exit.
    eenet_sklearn.online.BudgetController : Holds the mean cost on a drifting stream.
    time_full_network : The time of the network without early exits.
    measure_latency : The per-exit costs to fit the policy with.
    """
    # A controller decides (and learns from each batch); its policy is what is checked.
    controller = policy if isinstance(policy, BudgetController) else None
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
    dtype = _input_dtype(module, inputs)
    total = n_rows(inputs)
    exits = np.empty(total, dtype=np.int64)
    labels = np.empty(total, dtype=policy.classes_.dtype)
    decider = policy.exit_decider()
    synchronize(device)
    start = time.perf_counter()
    with evaluating(module):
        for first in range(0, total, batch_size):
            rows = np.arange(first, min(first + batch_size, total))
            batch = row_slice(inputs, slice(first, first + batch_size), device)
            if dtype is not None:
                batch = batch.to(dtype)
            if controller is not None:  # the thresholds the batches before this one taught it
                decider = controller.exit_decider()
            # state: the network's, of the rows still in the batch; carried: the decider's.
            state, carried = None, decider.initial_state(len(rows))
            for k, head in enumerate(module.heads):
                state = module.run_stage(k, state, batch)
                logits = _to_numpy(head(state))
                _check_finite(logits, k, rows)
                leaving, proba, carried = decider.decide(k, logits, carried)
                if not leaving.any():
                    continue
                exits[rows[leaving]] = k
                labels[rows[leaving]] = policy.classes_[proba[leaving].argmax(axis=1)]
                if leaving.all():
                    break
                staying = ~leaving
                rows, carried = rows[staying], decider.keep(carried, staying)
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


def _input_dtype(module: MultiExitNetwork, inputs) -> torch.dtype | None:
    """The float dtype to convert a tensor ``X`` to (the network's), or ``None`` to keep it.

    Float inputs of another precision (float64, float16) are converted to the dtype of
    the network's parameters. Non-float inputs (uint8 images, bools, integers) are
    refused with an error naming ``X``, its dtype and what the first layer expects,
    unless the first layer takes them (token ids for an embedding).

    Raises
    ------
    TypeError, ValueError
        If a non-float ``X`` does not fit the network's first layer.
    """
    if isinstance(inputs, dict):
        return None  # token tensors: ids and masks, as the encoder takes them
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    if first is None:
        return None
    if inputs.is_floating_point():
        return first.dtype if inputs.dtype != first.dtype else None
    given = f"a batch of shape {tuple(inputs.shape)} and dtype {inputs.dtype}"
    mismatch = first_stage_mismatch(module.stages[0], inputs[:1], given=given)
    if mismatch is not None:
        error, message = mismatch
        raise error(message)
    return None


def _check_finite(logits: np.ndarray, k: int, rows: np.ndarray) -> None:
    """Refuse non-finite logits at exit ``k``, as ``predict`` refuses them."""
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        bad = rows[~finite]
        raise ValueError(
            f"The network's logits at exit {k} contain NaN or infinity (samples "
            f"{format_values(bad)} of X); per-exit outputs must be finite, as the policy's "
            "predict requires. Check the inputs X (NaN or infinite values) and the network."
        )


def _to_numpy(logits: torch.Tensor) -> np.ndarray:
    # The dtype that transform() gives for the same network, so the policy sees the same values.
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return logits.cpu().numpy()

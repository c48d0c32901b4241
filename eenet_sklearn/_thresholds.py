"""Exit quotas and quota thresholds, on NumPy or (when a GPU is usable) CuPy.

A threshold rule sends a sample out at the first exit ``k`` whose score reaches
``thresholds[k]``; the last threshold is ``-inf`` so that every sample leaves by
the last exit. The thresholds are set on fitting data so that each exit takes a
given fraction of the samples (its quota).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
from scipy.optimize import brentq
from scipy.special import softmax


def gpu_available() -> bool:
    """Whether CuPy is installed and sees a usable CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a broken driver counts as no GPU
        return False


def array_module(use_gpu: bool) -> ModuleType:
    """CuPy when ``use_gpu`` is true, NumPy otherwise."""
    if use_gpu:
        import cupy

        return cupy
    return np


def quota_thresholds(
    scores: np.ndarray, fractions: np.ndarray, *, use_gpu: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds that give each exit its quota of the fitting samples.

    Exits are walked in order. At exit ``k`` the samples not yet assigned are
    ranked by their score at ``k``; enough of the best leave to bring the number
    assigned so far to ``round(n_samples * sum(fractions[:k + 1]))``, and the
    threshold is the lowest admitted score. Samples tied at the quota boundary
    cannot be split (the rule at inference is ``score >= threshold``): the whole
    tied block leaves, or none of it, whichever lands nearer the target (leaving
    on a draw). The difference is made up by the next exits, since targets are
    cumulative. An empty quota gives ``+inf``; a quota that takes every sample
    left, and the last exit, ``-inf``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_exits)
        Exit scores, larger meaning "leave here".
    fractions : ndarray of shape (n_exits,)
        Target fraction of samples per exit, summing to 1.
    use_gpu : bool
        Run the sorts on the GPU with CuPy; results are identical to NumPy's.

    Returns
    -------
    thresholds : ndarray of shape (n_exits,)
    exits : ndarray of shape (n_samples,)
        The exit each fitting sample is assigned to.
    """
    xp = array_module(use_gpu)
    scores_xp = xp.asarray(scores, dtype=xp.float64)
    n_samples, n_exits = scores_xp.shape
    targets = np.rint(n_samples * np.cumsum(fractions)).astype(np.int64)
    thresholds = np.full(n_exits, -np.inf)
    exits = xp.full(n_samples, n_exits - 1, dtype=xp.int64)
    remaining = xp.ones(n_samples, dtype=bool)
    n_assigned = 0
    for k in range(n_exits - 1):
        candidates = scores_xp[remaining, k]
        n_admit = min(int(targets[k]) - n_assigned, candidates.shape[0])
        if n_admit <= 0:
            thresholds[k] = np.inf
            continue
        if targets[k] >= n_samples:
            # The quota takes everybody left: every future sample leaves here too.
            thresholds[k] = -np.inf
        else:
            thresholds[k] = _nearest_quota_threshold(xp, candidates, n_admit)
        leaving = remaining & (scores_xp[:, k] >= thresholds[k])
        exits[leaving] = k
        remaining &= ~leaving
        n_assigned += int(leaving.sum())
    if xp is not np:
        exits = xp.asnumpy(exits)
    return thresholds, exits


def _nearest_quota_threshold(xp: ModuleType, candidates, n_admit: int) -> float:
    """Threshold admitting about ``n_admit`` of ``candidates``, never splitting a tie."""
    ranked = xp.sort(candidates)
    n_left = candidates.shape[0]
    boundary = ranked[n_left - n_admit]
    n_above = int((candidates > boundary).sum())
    n_at_or_above = int((candidates >= boundary).sum())
    if n_at_or_above - n_admit <= n_admit - n_above:
        return float(boundary)
    # Leaving the tied block out lands nearer the target: admit only the scores above it.
    return float(ranked[n_left - n_above]) if n_above else np.inf


def assign_exits(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """First exit whose score reaches its threshold, for every sample."""
    leaving = scores >= thresholds
    leaving[:, -1] = True
    return leaving.argmax(axis=1)


def exit_fractions(exits: np.ndarray, n_exits: int) -> np.ndarray:
    """Fraction of samples leaving at each exit."""
    return np.bincount(exits, minlength=n_exits) / max(len(exits), 1)


def tilt_to_budget(
    log_weights: np.ndarray,
    costs: np.ndarray,
    budget: float,
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Exit fractions ``softmax(log_weights + t * direction)`` whose expected cost is the budget.

    ``direction`` must increase with the exit index (default: ``costs / costs[-1]``);
    then the expected cost ``sum_k p_k c_k`` increases with ``t`` (its derivative is
    the covariance of direction and cost under ``p``), so the ``t`` that meets the
    budget is unique and found by root finding. Exits with weight ``-inf`` keep
    fraction zero, unless the other exits cannot meet the budget at all: then every
    sample goes to the first exit (budget too small for them) or the last (too large).
    A budget at or below ``costs[0]`` puts every sample at the first exit; at or above
    ``costs[-1]``, every sample at the last.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n_exits = len(costs)
    first, last = np.eye(n_exits)[0], np.eye(n_exits)[-1]
    if budget <= costs[0]:
        return first
    if budget >= costs[-1]:
        return last
    if direction is None:
        direction = costs / costs[-1]

    def excess(t: float) -> float:
        return float(softmax(log_weights + t * direction) @ costs) - budget

    low, high = -1.0, 1.0
    while excess(low) > 0:
        low *= 2.0
        if low < -1e9:
            return first
    while excess(high) < 0:
        high *= 2.0
        if high > 1e9:
            return last
    t = brentq(excess, low, high, xtol=1e-12, rtol=1e-12)
    return softmax(log_weights + t * direction)


def geometric_fractions(costs: np.ndarray, budget: float) -> np.ndarray:
    """MSDNet's budgeted quotas: ``p_k`` proportional to ``rho**k``, ``rho`` set by the budget."""
    n_exits = len(costs)
    # rho**k = exp(k * log(rho)): a tilt of uniform weights along the exit index.
    return tilt_to_budget(
        np.zeros(n_exits), costs, budget, direction=np.arange(n_exits, dtype=np.float64)
    )

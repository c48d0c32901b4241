"""Exit quotas and quota thresholds, on NumPy or (when a GPU is usable) CuPy.

A threshold rule sends a sample out at the first exit ``k`` whose score reaches
``thresholds[k]``; the last threshold is ``-inf`` so that every sample leaves by
the last exit. The thresholds are set on fitting data so that each exit takes a
given fraction of the samples (its quota), never spending more than the budget there.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
from scipy.optimize import brentq
from scipy.special import softmax

from ._validation import format_number


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


#: Relative slack when comparing a mean cost with the budget: float noise in the mean
#: of equal costs must not make a setting that spends exactly the budget infeasible.
BUDGET_RTOL = 1e-9


def within_budget(cost: float, budget: float) -> bool:
    """Whether a mean ``cost`` is at most ``budget``, up to :data:`BUDGET_RTOL` of float noise."""
    return cost <= budget * (1.0 + BUDGET_RTOL)


def quota_thresholds(
    scores: np.ndarray,
    fractions: np.ndarray,
    *,
    costs: np.ndarray | None = None,
    budget: float | None = None,
    use_gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds that give each exit its quota of the fitting samples, within the budget.

    The budgeted quota rule of MSDNet [1]_, as EENet [2]_ uses it too. Exits are walked
    in order. At exit ``k`` the samples not yet assigned are ranked by their score at
    ``k``; enough of the best leave to bring the number assigned so far to
    ``round(n_samples * sum(fractions[:k + 1]))``, and the threshold lies halfway between
    the lowest admitted score and the highest score not admitted, so that no fitting
    sample sits exactly on a threshold. Samples tied at the quota boundary cannot be split (the rule at
    inference is ``score >= threshold``): the whole tied block leaves, or none of it,
    whichever lands nearer the target (leaving on a draw). The difference is made up
    by the next exits, since targets are cumulative. An empty quota gives ``+inf``; a
    quota that takes every sample left, and the last exit, ``-inf``.

    With ``costs`` and ``budget`` the budget is a ceiling: the mean cost of the
    returned exits on ``scores`` is at most ``budget`` (up to a relative
    :data:`BUDGET_RTOL` of float noise), whatever the ties. Let ``S`` be the total cost
    of the samples assigned before exit ``k`` and ``R`` the number left. Admitting
    ``m`` of them at ``k`` is *feasible* when ``S + m * costs[k] + (R - m) *
    costs[k + 1] <= n_samples * budget``, that is when the budget still holds if every
    other sample left leaves at ``k + 1``. That bound decreases with ``m``, so the
    feasible counts are ``m >= m_min``; among the counts a tie-block boundary allows,
    the nearest to the target is taken if feasible, else the smallest feasible one (and
    ``-inf`` when only ``m = R`` is). Feasibility is kept from exit to exit: after
    admitting a feasible ``m``, sending everybody left to ``k + 1`` is feasible at
    ``k + 1``. It holds at the start when ``costs[0] <= budget`` (admitting everybody
    at exit 0), and at the end it is the mean cost of the last exit's samples plus
    the others', so the ceiling holds. Without ties the quotas of a budget-meeting
    ``fractions`` differ from the ceiling by rounding only; with a tied block the
    ceiling decides. Only the cost ratios matter: costs and budget are divided by
    ``costs[-1]`` first, so that scaling both changes nothing.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_exits)
        Exit scores, larger meaning "leave here".
    fractions : ndarray of shape (n_exits,)
        Target fraction of samples per exit, summing to 1.
    costs : ndarray of shape (n_exits,), default=None
        Cumulative cost of each exit, positive and strictly increasing (validated by
        the caller). With ``budget``, makes the budget a ceiling on ``scores``.
    budget : float, default=None
        Mean cost per sample allowed, in the unit of ``costs``, at least ``costs[0]``.
    use_gpu : bool, default=False
        Run the sorts on the GPU with CuPy; results are identical to NumPy's.

    Returns
    -------
    thresholds : ndarray of shape (n_exits,)
    exits : ndarray of shape (n_samples,)
        The exit each fitting sample is assigned to (the one
        ``assign_exits(scores, thresholds)`` gives).

    Raises
    ------
    ValueError
        If only one of ``costs`` and ``budget`` is given, or ``budget`` is below
        ``costs[0]`` (no threshold setting can meet it).

    References
    ----------
    .. [1] G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten and K. Q. Weinberger,
       "Multi-Scale Dense Networks for Resource Efficient Image Classification",
       ICLR 2018, arXiv:1703.09844 (budgeted batch classification).
    .. [2] F. Ilhan et al., "Adaptive Deep Neural Network Inference Optimization with
       EENet", arXiv:2301.07099, 2023.
    """
    if (costs is None) != (budget is None):
        raise ValueError(
            "costs and budget go together: pass both (a budget ceiling) or neither, got "
            f"costs={'None' if costs is None else 'an array'} and budget={budget!r}."
        )
    xp = array_module(use_gpu)
    scores_xp = xp.asarray(scores, dtype=xp.float64)
    n_samples, n_exits = scores_xp.shape
    unit_costs, unit_budget = None, 0.0
    if costs is not None and budget is not None:
        costs = np.asarray(costs, dtype=np.float64)
        unit_costs, unit_budget = costs / costs[-1], float(budget) / costs[-1]
        if not within_budget(unit_costs[0], unit_budget):
            raise ValueError(
                f"budget={format_number(budget)} is below costs[0]={format_number(costs[0])}: "
                "no threshold setting can meet it."
            )
    targets = np.rint(n_samples * np.cumsum(fractions)).astype(np.int64)
    thresholds = np.full(n_exits, -np.inf)
    exits = xp.full(n_samples, n_exits - 1, dtype=xp.int64)
    remaining = xp.ones(n_samples, dtype=bool)
    n_assigned, spent = 0, 0.0
    for k in range(n_exits - 1):
        candidates = scores_xp[remaining, k]
        n_left = candidates.shape[0]
        n_admit = max(min(int(targets[k]) - n_assigned, n_left), 0)
        n_least = (
            0
            if unit_costs is None
            else _fewest_within_budget(spent, n_left, unit_costs[k : k + 2], n_samples * unit_budget)
        )
        if n_left == 0 or (n_admit == 0 and n_least == 0):
            thresholds[k] = np.inf
            continue
        if n_least >= n_left or targets[k] >= n_samples:
            # Everybody left leaves (the quota or the budget says so): every future
            # sample leaves here too.
            thresholds[k] = -np.inf
        else:
            thresholds[k] = _quota_threshold(xp, candidates, n_admit, n_least)
        leaving = remaining & (scores_xp[:, k] >= thresholds[k])
        exits[leaving] = k
        remaining &= ~leaving
        n_leaving = int(leaving.sum())
        n_assigned += n_leaving
        if unit_costs is not None:
            spent += n_leaving * unit_costs[k]
    if xp is not np:
        exits = xp.asnumpy(exits)
    return thresholds, exits


def _fewest_within_budget(spent: float, n_left: int, pair_costs: np.ndarray, total: float) -> int:
    """Fewest of ``n_left`` samples to admit at an exit for the budget to stay reachable.

    The smallest ``m`` in ``[0, n_left]`` with ``spent + m * c + (n_left - m) * c_next``
    within ``total`` (``pair_costs = (c, c_next)``, ``c < c_next``), or ``n_left`` when
    none is (float noise only: the caller keeps ``m = n_left`` feasible).
    """
    here, after = float(pair_costs[0]), float(pair_costs[1])

    def feasible(m: int) -> bool:
        return within_budget(spent + m * here + (n_left - m) * after, total)

    if feasible(0):
        return 0
    # The bound falls by (after - here) per sample admitted: solve, then settle the
    # rounding of the division by checking the neighbours.
    m = math.ceil((spent + n_left * after - total) / (after - here))
    m = min(max(m, 1), n_left)
    while m > 1 and feasible(m - 1):
        m -= 1
    while m < n_left and not feasible(m):
        m += 1
    return m


def _quota_threshold(xp: ModuleType, candidates, n_admit: int, n_least: int) -> float:
    """Threshold admitting about ``n_admit`` and at least ``n_least`` of ``candidates``.

    A tied block is never split: of the two block boundaries around ``n_admit``, the
    nearer to it that admits at least ``n_least`` (the upper one on a draw); when
    neither does, the smallest boundary admitting at least ``n_least``. The threshold
    lies halfway between the lowest admitted score and the highest one not admitted
    (:func:`_between`), so that no fitting sample sits on it.
    """
    ranked = xp.sort(candidates)
    n_left = candidates.shape[0]
    if n_admit > 0:
        boundary = ranked[n_left - n_admit]
        n_above = int((candidates > boundary).sum())
        n_at_or_above = int((candidates >= boundary).sum())
        block_in_nearer = n_at_or_above - n_admit <= n_admit - n_above
        if n_above >= n_least and not block_in_nearer:
            # Leaving the tied block out lands nearer the target: admit only the scores above it.
            return _between(ranked, n_above) if n_above else np.inf
        if n_at_or_above >= n_least:
            return _between(ranked, n_at_or_above)
    # The budget needs more than the target: the n_least-th best score, with its block.
    lowest = ranked[n_left - n_least]
    return _between(ranked, int((candidates >= lowest).sum()))


def _between(ranked, n_admitted: int) -> float:
    """A threshold admitting exactly the ``n_admitted`` best of the sorted scores ``ranked``.

    Halfway (in float64) between the lowest admitted score and the highest score not
    admitted, where that lies strictly above the latter; the lowest admitted score
    itself otherwise (adjacent floats), or when every score is admitted. No fitting
    sample then sits exactly on a threshold, so a score that a different summation
    order or row layout rounds by an ulp is decided as it was in fitting.
    ``n_admitted`` must not split a block of equal scores.
    """
    n_left = ranked.shape[0]
    lowest = float(ranked[n_left - n_admitted])
    if n_admitted >= n_left:
        return lowest
    below = float(ranked[n_left - n_admitted - 1])
    middle = below / 2 + lowest / 2  # halved first: no overflow at the ends of the range
    return middle if below < middle <= lowest else lowest


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

    Only the cost ratios matter: costs and budget are divided by ``costs[-1]`` first, so
    that costs of any positive scale (``1e-45`` or ``1e40`` per exit) give the same
    fractions, and the root finder's tolerances mean the same at every scale.
    """
    costs = np.asarray(costs, dtype=np.float64)
    costs, budget = costs / costs[-1], float(budget) / costs[-1]
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

"""Exit quotas and quota thresholds, on NumPy or (when a GPU is usable) CuPy.

A threshold rule sends a sample out at the first exit ``k`` whose score reaches
``thresholds[k]``; the last threshold is ``-inf`` so that every sample leaves by
the last exit. The thresholds are set on fitting data so that each exit takes a
given fraction of the samples (its quota), never spending more than the budget there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

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
    quotas: Callable[[float], np.ndarray] | None = None,
    use_gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds that give each exit its quota of the fitting samples, within the budget.

    The budgeted quota rule of MSDNet [1]_, as EENet [2]_ uses it too. Exits are walked
    in order. At exit ``k`` the samples not yet assigned are ranked by their score at
    ``k``; enough of the best leave to bring the number assigned so far to
    ``round(n_samples * sum(fractions[:k + 1]))``, and the threshold lies halfway between
    the lowest admitted score and the highest score not admitted, so that no fitting
    sample sits exactly on a threshold. Samples tied at the quota boundary cannot be
    split (the rule at inference is ``score >= threshold``). Without a budget the whole
    tied block leaves, or none of it, whichever lands nearer the target (leaving on a
    draw), and the next exits make up the difference, since targets are cumulative. An
    empty quota gives ``+inf``; a quota that takes every sample left, and the last exit,
    ``-inf``.

    With ``costs`` and ``budget`` the budget is a ceiling, and the mean cost never falls
    as the budget rises. The *settings* are the exit assignments the inference rule can
    give: at each exit in turn, a count of the best scores left that splits no tied
    block. Each cumulative target is first lowered to the nearest count that splits no
    tied block at that exit among all samples: the *lower bounds* ``L``. The setting
    returned is the costliest one whose cumulative counts are at least ``L`` and whose
    mean cost on ``scores`` is at most ``budget`` (up to a relative
    :data:`BUDGET_RTOL` of float noise), found by a depth-first search over the tie-block
    boundaries with branch and bound. Without ties it is the targets themselves whenever
    they fit in the budget, exactly as without a budget. When the bounds ``L`` alone
    overspend (the rounding of the quotas, or a tied block left out) and the caller
    gives ``quotas``, its quotas as a function of the mean cost, the bounds are
    taken at the costliest mean cost ``b <= budget`` along that path whose bounds fit in
    the budget (found by bisection); without ``quotas``, the search itself keeps the
    budget. Either way a tied block is admitted only when the budget still holds.

    Why the cost is monotone: the callers' quotas tilt an exit distribution towards the
    later exits as the budget rises (:func:`tilt_to_budget`), so every cumulative
    target, hence every bound, only falls. The settings allowed at a larger budget then
    include those allowed at a smaller one, and the costliest of a larger set costs no
    less. Along the path, the chosen ``b`` only rises with the budget too. The earlier
    rule (the nearest block boundary, a block admitted only if the budget could still be
    met) was a ceiling but not monotone: on 600 samples of integer logits, 401 budgets,
    the cost of MaxProbPolicy fell 4 times, by up to 0.76% of the budget, as it rose.
    Without ties its thresholds are this rule's wherever the targets fit in the budget;
    where the rounding of the quotas overspends by a fraction of a sample, the two may
    differ by a sample or so at an exit. The search visits one partial setting per exit
    without ties and branches only at tied blocks; past :data:`_MAX_NODES` it keeps the
    best setting found, which still meets the budget. Only the cost ratios matter: costs
    and budget are divided by ``costs[-1]`` first, so that scaling both changes nothing.

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
    quotas : callable, default=None
        The caller's quotas as a function of the mean cost in units of ``costs[-1]``
        (so that costs of any scale trace the same path), with ``quotas(budget /
        costs[-1])`` equal to ``fractions``, every cumulative fraction non-increasing in
        the cost, and ``quotas(costs[0] / costs[-1])`` putting every sample at exit 0
        (as :func:`tilt_to_budget` and :func:`geometric_fractions` do on
        ``costs / costs[-1]``). Used only with a budget, when the rounded quotas alone
        would overspend it.
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
    n_samples = scores_xp.shape[0]
    targets = np.rint(n_samples * np.cumsum(fractions)).astype(np.int64)
    if costs is None or budget is None:
        thresholds, exits = _nearest_quotas(xp, scores_xp, targets)
    else:
        costs = np.asarray(costs, dtype=np.float64)
        unit_costs, unit_budget = costs / costs[-1], float(budget) / costs[-1]
        if not within_budget(unit_costs[0], unit_budget):
            raise ValueError(
                f"budget={format_number(budget)} is below costs[0]={format_number(costs[0])}: "
                "no threshold setting can meet it."
            )
        total = n_samples * unit_budget
        floors = _BlockFloors(xp, scores_xp)
        lower = floors(targets)
        if quotas is not None and not within_budget(_total_cost(unit_costs, lower), total):
            lower = _lower_bounds_on_the_path(floors, quotas, unit_costs, targets, total)
        search = _CostliestSearch(xp, scores_xp, targets, lower, unit_costs, total)
        thresholds, exits = search.run()
    if xp is not np:
        exits = xp.asnumpy(exits)
    return thresholds, exits


def _nearest_quotas(xp: ModuleType, scores_xp, targets: np.ndarray) -> tuple[np.ndarray, Any]:
    """Quota thresholds without a budget: each tied block at a boundary goes whichever way
    lands nearer the cumulative target (:func:`quota_thresholds`)."""
    n_samples, n_exits = scores_xp.shape
    thresholds = np.full(n_exits, -np.inf)
    exits = xp.full(n_samples, n_exits - 1, dtype=xp.int64)
    remaining = xp.ones(n_samples, dtype=bool)
    n_assigned = 0
    for k in range(n_exits - 1):
        candidates = scores_xp[remaining, k]
        n_left = candidates.shape[0]
        n_admit = max(min(int(targets[k]) - n_assigned, n_left), 0)
        if n_left == 0 or n_admit == 0:
            thresholds[k] = np.inf
            continue
        if targets[k] >= n_samples:
            thresholds[k] = -np.inf
        else:
            thresholds[k] = _quota_threshold(xp, candidates, n_admit, 0)
        leaving = remaining & (scores_xp[:, k] >= thresholds[k])
        exits[leaving] = k
        remaining &= ~leaving
        n_assigned += int(leaving.sum())
    return thresholds, exits


#: Most partial settings :class:`_CostliestSearch` visits. Without ties the search
#: follows one path; each tied block at a boundary can add a branch. Past this many the
#: best setting found is kept: still within the budget, but no longer sure to be the
#: costliest, so monotonicity in the budget is no longer guaranteed (never reached on
#: the shipped logits, nor in the tests).
_MAX_NODES = 1024


class _CostliestSearch:
    """The costliest admissible setting within the budget (:func:`quota_thresholds`).

    A depth-first search over exits ``0 .. n_exits - 2`` in order. At each exit the
    admitted counts are the tie-block boundaries of the scores still there, from the
    fewest the lower bound and the budget allow upwards. Branch and bound: a count is
    dropped, with every larger one, once the most the setting could then spend (each
    later exit admitting only its lower bound) is no more than the best setting found.
    Costs are in units of ``costs[-1]``; ``total`` is ``n_samples * budget`` in them.
    """

    def __init__(
        self,
        xp: ModuleType,
        scores,
        targets: np.ndarray,
        lower: np.ndarray,
        costs: np.ndarray,
        total: float,
    ):
        self.xp, self.scores, self.targets, self.lower = xp, scores, targets, lower
        self.costs, self.total = costs, total
        self.n_samples, self.n_exits = scores.shape
        self.best = -np.inf
        self.best_path: list[tuple[float, Any]] = []
        #: Partial settings visited (one per exit on the first path, more with ties).
        self.nodes = 0

    def run(self) -> tuple[np.ndarray, Any]:
        """Thresholds and fitting exits of the costliest admissible setting."""
        xp = self.xp
        if self.n_exits > 1:
            self._visit(0, xp.ones(self.n_samples, dtype=bool), 0, 0.0, [])
        thresholds = np.full(self.n_exits, -np.inf)
        exits = xp.full(self.n_samples, self.n_exits - 1, dtype=xp.int64)
        for k, (threshold, leaving) in enumerate(self.best_path):
            thresholds[k] = threshold
            exits[leaving] = k
        thresholds[len(self.best_path) : -1] = np.inf  # nobody was left for these exits
        return thresholds, exits

    def _most_spent(self, k: int, n_assigned: int, spent: float) -> float:
        """Total cost if, after exit ``k``, each exit admits only its lower bound."""
        for j in range(k + 1, self.n_exits - 1):
            admitted = max(int(self.lower[j]), n_assigned)
            spent += (admitted - n_assigned) * self.costs[j]
            n_assigned = admitted
        return spent + (self.n_samples - n_assigned) * self.costs[-1]

    def _visit(self, k: int, remaining, n_assigned: int, spent: float, path: list) -> None:
        """Try the admissible counts at exit ``k`` after the partial setting ``path``."""
        self.nodes += 1
        if self.nodes > _MAX_NODES and self.best_path:
            return  # a pathological case: keep the best setting found (see _MAX_NODES)
        n_left = self.n_samples - n_assigned
        if n_left == 0:  # everybody has left: the later exits admit nobody
            if spent > self.best:
                self.best, self.best_path = spent, path
            return
        least = _fewest_within_budget(spent, n_left, self.costs[k : k + 2], self.total)
        column = self.scores[:, k]
        candidates = column[remaining]
        n_admit, threshold = _block_boundary(self.xp, candidates, max(int(self.lower[k]) - n_assigned, least))
        while True:
            here = spent + n_admit * self.costs[k]
            if not self._most_spent(k, n_assigned + n_admit, here) > self.best:
                return  # admitting more here only spends less
            if n_admit == n_left and (self.targets[k] >= self.n_samples or least >= n_left):
                threshold = -np.inf  # the quota or the budget takes all comers
            leaving = remaining & (column >= threshold)
            if k == self.n_exits - 2:
                # The fewest admissible here leave the most to the last exit: the best.
                self.best = here + (n_left - n_admit) * self.costs[-1]
                self.best_path = [*path, (threshold, leaving)]
                return
            self._visit(
                k + 1, remaining & ~leaving, n_assigned + n_admit, here, [*path, (threshold, leaving)]
            )
            if n_admit == n_left:
                return
            n_admit, threshold = _block_boundary(self.xp, candidates, n_admit + 1)


class _BlockFloors:
    """Lower bounds on the cumulative counts: each target lowered to a tie-block boundary.

    ``floors(targets)[k]`` is the largest count of best scores at exit ``k`` (among all
    samples) that is at most ``targets[k]`` and splits no block of equal scores; the
    last exit's bound is every sample. A non-decreasing function of each target, the
    same whatever the budget: what makes the costliest setting monotone in the budget.
    """

    def __init__(self, xp: ModuleType, scores):
        self.xp, self.scores = xp, scores
        self.n_samples, self.n_exits = scores.shape
        self._cache: dict[tuple[int, int], int] = {}

    def __call__(self, targets: np.ndarray) -> np.ndarray:
        lower = [self._floor(k, int(targets[k])) for k in range(self.n_exits - 1)]
        return np.array([*lower, self.n_samples], dtype=np.int64)

    def _floor(self, k: int, target: int) -> int:
        n_samples = self.n_samples
        if target <= 0:
            return 0
        if target >= n_samples:
            return n_samples
        if (k, target) not in self._cache:
            column = self.scores[:, k]
            ranked = self.xp.partition(column, n_samples - target)  # ascending around it
            last_in = float(ranked[n_samples - target])
            if float(ranked[: n_samples - target].max()) < last_in:
                self._cache[k, target] = target
            else:
                self._cache[k, target] = int((column > last_in).sum())
        return self._cache[k, target]


def _total_cost(costs: np.ndarray, lower: np.ndarray) -> float:
    """Total cost of the cheapest setting whose cumulative counts are at least ``lower``."""
    counts = np.diff(np.maximum.accumulate(lower), prepend=0)
    return float(counts @ costs)


def _lower_bounds_on_the_path(
    floors: _BlockFloors,
    quotas: Callable[[float], np.ndarray],
    costs: np.ndarray,
    targets: np.ndarray,
    total: float,
) -> np.ndarray:
    """The lower bounds at the costliest mean cost ``b`` within the budget whose bounds fit.

    ``costs`` are unit costs and ``quotas(b)`` the quotas at the mean cost ``b`` in that
    unit. Along this path every cumulative target only falls as ``b`` rises, so the cost
    of the bounds only rises: the last ``b`` within the budget is found by bisection,
    stopping once the targets at the two ends differ by one sample at one exit (nothing
    lies between them).
    """
    n_samples = int(floors.n_samples)
    budget, first = total / n_samples, float(costs[0])

    def bounds_at(cost: float) -> tuple[np.ndarray, np.ndarray, bool]:
        at = np.rint(n_samples * np.cumsum(quotas(cost))).astype(np.int64)
        lower = floors(at)
        return at, lower, within_budget(_total_cost(costs, lower), total)

    # Bracket first: twice the overspend below the budget, then 4 times further each time.
    high, high_targets = budget, targets
    excess = max((_total_cost(costs, floors(targets)) - total) / n_samples, budget * 2.0**-52)
    while True:
        low = max(budget - 2.0 * excess, first)
        low_targets, low_lower, feasible = bounds_at(low)
        if feasible:
            break
        if low <= first:  # quotas that do not put everybody first at costs[0]
            return np.full_like(low_lower, n_samples)
        high, high_targets, excess = low, low_targets, 4.0 * excess
    while np.abs(low_targets - high_targets).sum() > 1:
        middle = low / 2 + high / 2
        if not low < middle < high:
            break
        at, lower, feasible = bounds_at(middle)
        if feasible:
            low, low_targets, low_lower = middle, at, lower
        else:
            high, high_targets = middle, at
    return low_lower


def _block_boundary(xp: ModuleType, candidates, n_least: int) -> tuple[int, float]:
    """The fewest best ``candidates`` admitted, at least ``n_least``, that split no tied
    block, and a threshold admitting exactly them.

    The threshold lies halfway (in float64) between the lowest admitted score and the
    highest left out (:func:`_midpoint`), so that no fitting sample sits on it; ``+inf``
    admits none, and admitting all gives the lowest score (the caller may open the exit
    to all comers with ``-inf`` instead).
    """
    n_left = candidates.shape[0]
    if n_least <= 0:
        return 0, np.inf
    if n_least >= n_left:
        return n_left, float(candidates.min())
    ranked = xp.partition(candidates, n_left - n_least)  # ascending around the n_least-th best
    lowest = float(ranked[n_left - n_least])
    below = float(ranked[: n_left - n_least].max())
    if below < lowest:
        return n_least, _midpoint(below, lowest)
    # The n_least-th best score is tied with the next: its whole block is admitted.
    n_admit = int((candidates >= lowest).sum())
    if n_admit >= n_left:
        return n_left, lowest
    return n_admit, _midpoint(float(candidates[candidates < lowest].max()), lowest)


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
    return _midpoint(float(ranked[n_left - n_admitted - 1]), lowest)


def _midpoint(below: float, lowest: float) -> float:
    """A threshold between a score left out, ``below``, and the lowest admitted one.

    Halfway in float64 where that lies strictly above ``below``; ``lowest`` itself
    otherwise (adjacent floats). Halved first: no overflow at the ends of the range.
    """
    middle = below / 2 + lowest / 2
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
    return tilt_to_budget(np.zeros(n_exits), costs, budget, direction=np.arange(n_exits, dtype=np.float64))

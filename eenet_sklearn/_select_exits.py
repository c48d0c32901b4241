"""Which exits to keep: the subset of candidate exits that is most accurate over a range of budgets.

Every exit head costs compute on every sample that passes it, so an exit whose predictions
add little can cost more than it saves. :func:`select_exits` fits a policy on one part of
the held-out outputs for each candidate subset and budget, scores it on the other part, and
keeps the subset with the highest mean accuracy; :func:`exit_subset_costs` gives the
cumulative costs of the exits that remain once the others' heads are removed.
"""

from __future__ import annotations

import warnings
from collections import Counter
from itertools import combinations
from math import comb
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.utils import Bunch
from sklearn.utils.parallel import Parallel, delayed

from ._baselines import MaxProbPolicy
from ._features import exit_predictions
from ._validation import (
    as_real_array,
    check_budgets,
    check_costs,
    check_exit_outputs,
    check_input_type,
    check_target,
    describe,
    encode_labels,
    format_number,
    format_values,
)
from .metrics import budget_at_position

__all__ = ["exit_subset_costs", "select_exits"]

_SEARCHES = ("auto", "exhaustive", "greedy")

#: ``search="auto"`` tries every subset when there are at most this many to try.
_MAX_EXHAUSTIVE = 128

#: The default budgets: ten positions evenly spaced strictly between the first and the last
#: exit's cost (those of the full set of candidates).
_DEFAULT_POSITIONS = np.arange(1, 11) / 11


def _check_head_costs(head_costs: object, costs: np.ndarray) -> np.ndarray:
    """Per-exit head costs: zeros for ``None``; a scalar or one value per exit, each
    non-negative and below the increment of cost that reaches its exit."""
    n_exits = len(costs)
    if head_costs is None:
        return np.zeros(n_exits)
    expected = "a non-negative number or an array of shape (n_exits,): the cost of each exit head"
    values = as_real_array(head_costs, "head_costs", expected, allow_bool=False).astype(np.float64)
    if values.ndim == 0:
        values = np.full(n_exits, float(values))
    if values.shape != (n_exits,):
        raise ValueError(
            f"head_costs must be a number or have one entry per exit ({n_exits}), got shape "
            f"{values.shape}: {format_values(values)}."
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"head_costs must be finite and non-negative, got {format_values(values)}.")
    increments = np.diff(costs, prepend=0.0)
    too_large = np.flatnonzero(values >= increments)
    if too_large.size:
        k = int(too_large[0])
        raise ValueError(
            f"head_costs[{k}]={format_number(values[k])} is not below the cost of reaching exit {k} "
            f"from the exit before it ({format_number(increments[k])} = costs[{k}]"
            + (f" - costs[{k - 1}]" if k else "")
            + "), which pays for stage and head together: a head must cost less."
        )
    return values


def _check_kept(kept: object, n_exits: int) -> np.ndarray:
    expected = "a sequence of exit indices (integers), strictly increasing"
    values = as_real_array(kept, "kept", expected, allow_bool=False)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iu":
        raise ValueError(f"kept must be {expected}, got {describe(kept)}.")
    indices = values.astype(np.intp)
    if indices[0] < 0 or indices[-1] >= n_exits or np.any(np.diff(indices) <= 0):
        raise ValueError(
            f"kept must be {expected}, each in [0, {n_exits - 1}], got {format_values(indices)}."
        )
    return indices


def exit_subset_costs(costs, kept, head_costs=None) -> np.ndarray:
    """Cumulative costs of the exits kept, once the heads of the others are removed.

    ``costs[j]`` is the cost of reaching exit ``j`` with every candidate head on the way
    evaluated. Dropping exit ``i`` removes its head, ``head_costs[i]`` per sample, from
    the cost of every later exit; the stages stay. So kept exit ``j`` costs
    ``costs[j] - sum(head_costs[i] for i < j if i not in kept)``.

    Parameters
    ----------
    costs : array-like of shape (n_exits,)
        Cumulative cost of each candidate exit, strictly increasing, including every
        candidate head before it (as :func:`~eenet_sklearn.nn.measure_latency` and
        :func:`~eenet_sklearn.nn.count_flops` measure them).
    kept : array-like of int, shape (n_kept,)
        Indices of the exits kept, strictly increasing.
    head_costs : float or array-like of shape (n_exits,), default=None
        Cost of each exit head alone, per sample, in the unit of ``costs``; a number
        gives every head that cost. ``None``: heads are free, the costs do not change.

    Returns
    -------
    ndarray of shape (n_kept,)
        Cumulative cost of each kept exit, strictly increasing: the ``costs`` a policy
        over those exits (``X[:, kept]``) takes.

    Raises
    ------
    ValueError
        If ``costs`` is not 1-D, finite, positive and strictly increasing; ``kept`` is
        empty, not strictly increasing or out of range; or ``head_costs`` has the wrong
        shape, is negative or not finite, or is not below the cost increment that
        reaches its exit (``costs[k] - costs[k - 1]``, ``costs[0]`` for exit 0).
    TypeError
        If ``costs``, ``kept`` or ``head_costs`` is not numeric.

    See Also
    --------
    select_exits : Chooses which exits to keep.

    Examples
    --------
    Three exits whose stages cost 1 each and whose heads cost 0.5 each: dropping the
    middle exit saves its head on every sample that reaches the last one.

    >>> from eenet_sklearn import exit_subset_costs
    >>> exit_subset_costs([1.5, 3.0, 4.5], [0, 2], head_costs=0.5)
    array([1.5, 4. ])
    >>> exit_subset_costs([1.5, 3.0, 4.5], [0, 2])  # free heads
    array([1.5, 4.5])
    """
    costs = check_costs(costs)
    heads = _check_head_costs(head_costs, costs)
    indices = _check_kept(kept, len(costs))
    return _subset_costs(costs, heads, indices)


def _subset_costs(costs: np.ndarray, heads: np.ndarray, kept: np.ndarray) -> np.ndarray:
    dropped = np.ones(len(costs), dtype=bool)
    dropped[kept] = False
    # Heads removed strictly before each exit.
    removed = np.concatenate(([0.0], np.cumsum(np.where(dropped, heads, 0.0))[:-1]))
    return costs[kept] - removed[kept]


def _check_budgets(budgets: object, costs: np.ndarray) -> np.ndarray:
    if budgets is None:
        return np.asarray(budget_at_position(costs, _DEFAULT_POSITIONS))
    values = np.array(check_budgets(budgets, costs))
    if values.size == 0:
        raise ValueError("budgets must hold at least one budget, got an empty sequence.")
    return values


def _check_policy(policy: object):
    if policy is None:
        return MaxProbPolicy()
    get_params = getattr(policy, "get_params", None)
    params = get_params(deep=False) if callable(get_params) else {}
    if not {"costs", "budget"} <= set(params) or not hasattr(policy, "fit"):
        raise TypeError(
            "policy must be an unfitted exit policy with costs and budget parameters (such as "
            f"MaxProbPolicy() or EarlyExitPolicy()), got {describe(policy)}."
        )
    return policy


def _check_cv(cv: object, y: np.ndarray, random_state):
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 (fit on one part, score on another), got {cv}.")
        return StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    if isinstance(cv, bool) or cv is None or isinstance(cv, (Real, str)):
        raise TypeError(f"cv must be an integer >= 2 or a cross-validation splitter, got {describe(cv)}.")
    return check_cv(cv, y, classifier=True)


def _check_n_exits(n_exits: object, total: int) -> int | None:
    if n_exits is None:
        return None
    if isinstance(n_exits, bool) or not isinstance(n_exits, Integral):
        raise TypeError(f"n_exits must be an integer or None, got {describe(n_exits)}.")
    value = int(n_exits)
    if not 1 <= value <= total:
        raise ValueError(f"n_exits must be in [1, {total}] (the number of candidate exits), got {value}.")
    return value


def _evaluate_subset(
    outputs: np.ndarray,
    y: np.ndarray,
    correct: np.ndarray,
    costs: np.ndarray,
    budgets: np.ndarray,
    policy,
    folds: list[tuple[np.ndarray, np.ndarray]],
    kept: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, int, list[tuple[type[Warning], str]]]:
    """Cross-fitted accuracy and mean cost at each budget of ``policy`` over exits ``kept``
    (whose cumulative costs are ``costs``), the number of fits, and the warnings they gave."""
    index = np.array(kept, dtype=np.intp)
    n_budgets = len(budgets)
    right, spent = np.zeros(n_budgets), np.zeros(n_budgets)
    feasible = budgets >= costs[0]
    n_scored, n_fits = 0, 0
    caught_all: list[tuple[type[Warning], str]] = []
    for fit_rows, eval_rows in folds:
        n_scored += len(eval_rows)
        if len(index) == 1:  # only the last exit: every sample leaves there, no policy to fit
            right[feasible] += correct[eval_rows, index[0]].sum()
            spent[feasible] += costs[0] * len(eval_rows)
            continue
        X_fit, y_fit = outputs[fit_rows][:, index], y[fit_rows]
        X_eval, y_eval = outputs[eval_rows][:, index], y[eval_rows]
        for b in np.flatnonzero(feasible):
            fitted = clone(policy).set_params(costs=costs, budget=budgets[b])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fitted.fit(X_fit, y_fit)
                exits = np.asarray(fitted.predict_exit(X_eval))
                labels = np.asarray(fitted.predict(X_eval))
            caught_all += [(warning.category, str(warning.message)) for warning in caught]
            n_fits += 1
            right[b] += np.count_nonzero(labels == y_eval)
            spent[b] += costs[exits].sum()
    accuracy = np.where(feasible, right / n_scored, 0.0)
    mean_cost = np.where(feasible, spent / n_scored, np.nan)
    return accuracy, mean_cost, n_fits, caught_all


class _Evaluator:
    """Held-out accuracy of a policy over subsets of exits, at each budget, cross-fitted and
    remembered; new subsets are evaluated in parallel over ``n_jobs`` (joblib)."""

    def __init__(
        self,
        outputs: np.ndarray,
        y: np.ndarray,
        columns: np.ndarray,
        costs: np.ndarray,
        heads: np.ndarray,
        budgets: np.ndarray,
        policy,
        folds: list[tuple[np.ndarray, np.ndarray]],
        input_type: str,
        n_jobs: int | None,
    ) -> None:
        self.outputs, self.y = outputs, y
        self.costs, self.heads, self.budgets = costs, heads, budgets
        self.policy, self.folds, self.n_jobs = policy, folds, n_jobs
        self.correct = exit_predictions(outputs, input_type) == columns[:, None]
        self.n_fits = 0
        self.warned: Counter[type[Warning]] = Counter()
        self.first_message: dict[type[Warning], str] = {}
        self.memo: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(self, subsets: list[tuple[int, ...]]) -> None:
        """Evaluate the subsets not met before, in the order given."""
        new = [subset for subset in dict.fromkeys(subsets) if subset not in self.memo]
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_evaluate_subset)(
                self.outputs,
                self.y,
                self.correct,
                _subset_costs(self.costs, self.heads, np.array(subset, dtype=np.intp)),
                self.budgets,
                self.policy,
                self.folds,
                subset,
            )
            for subset in new
        )
        for subset, (accuracy, mean_cost, n_fits, caught) in zip(new, results, strict=True):
            self.memo[subset] = accuracy, mean_cost
            self.n_fits += n_fits
            for category in {category for category, _ in caught}:
                self.warned[category] += 1
            for category, message in caught:
                self.first_message.setdefault(category, message)

    def best(self, subsets: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The best of ``subsets`` (evaluated first where needed), by :meth:`rank`."""
        self.evaluate(subsets)
        return min(subsets, key=self.rank)

    def score(self, subset: tuple[int, ...]) -> float:
        return float(self.memo[subset][0].mean())

    def rank(self, subset: tuple[int, ...]) -> tuple[float, int, tuple[int, ...]]:
        """Sort key, best first: highest mean accuracy (to 12 decimals), then fewer exits,
        then the earliest exits."""
        return (-round(self.score(subset), 12), len(subset), subset)


def _exhaustive(evaluator: _Evaluator, last: int, sizes: list[int]) -> None:
    evaluator.evaluate(
        [(*others, last) for size in sizes for others in combinations(range(last), size - 1)]
    )


def _greedy(evaluator: _Evaluator, last: int, target: int | None) -> None:
    """Backward elimination from every exit and forward selection from the last alone,
    each down (up) to ``target`` exits, or all the way when ``target`` is None."""
    low, high = (1, last + 1) if target is None else (target, target)
    current: tuple[int, ...] = tuple(range(last + 1))
    evaluator.evaluate([current])
    while len(current) > low:
        current = evaluator.best([tuple(e for e in current if e != drop) for drop in current[:-1]])
    current = (last,)
    evaluator.evaluate([current])
    while len(current) < high:
        current = evaluator.best(
            [tuple(sorted((*current, add))) for add in range(last) if add not in current]
        )


def select_exits(
    X,
    y,
    costs,
    head_costs=None,
    n_exits=None,
    budgets=None,
    *,
    policy=None,
    search="auto",
    tol=0.0,
    cv=2,
    random_state=0,
    n_jobs=None,
) -> Bunch:
    """Choose which exits of a multi-exit network to keep, for accuracy over a range of budgets.

    Each exit head costs compute on every sample that passes it. Removing exit ``j``
    takes ``head_costs[j]`` off the cumulative cost of every later exit (see
    :func:`exit_subset_costs`), so fewer exits can be more accurate at a budget even
    though the policy has fewer places to stop. For each candidate subset (the last exit,
    the full network, is always kept) and each budget, a clone of ``policy`` is fitted
    on part of ``(X, y)`` with the subset's costs and scored on the rest (stratified
    cross-fitting over ``cv`` folds: every sample is scored once, by a policy that did not
    see it); the subset with the highest held-out accuracy averaged over the budgets wins.

    A subset whose first exit costs more than a budget cannot meet it and scores 0 there:
    the mean over budgets is then the area under the subset's budget-accuracy curve,
    counting a budget it cannot meet as a loss. A subset of the last exit alone needs no
    policy: every sample leaves there.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
        Per-exit outputs (logits, or probabilities with a policy of
        ``input_type="proba"``) of held-out data with every candidate exit, as a policy
        is fitted on.
    y : array-like of shape (n_samples,)
        True labels.
    costs : array-like of shape (n_exits,)
        Cumulative cost of reaching each candidate exit with every candidate head on
        the way evaluated (what :func:`~eenet_sklearn.nn.measure_latency` and
        :func:`~eenet_sklearn.nn.count_flops` return); strictly increasing.
    head_costs : float or array-like of shape (n_exits,), default=None
        Cost of each exit head alone, per sample, in the unit of ``costs`` (a number:
        every head costs that). ``None`` treats heads as free: then removing an exit
        saves nothing and only loses places to stop, so more exits are never worse
        except through the noise of fitting. Measure a head as the time (or FLOPs) of
        running it alone on its stage's output (a ``MultiExitNetwork``'s ``heads[k]`` on
        the output of ``run_stage(k, ...)``), at the batch size and threads you serve
        with. The last entry is never used (the last exit is always kept).
    n_exits : int, default=None
        Number of exits to keep, the last included; ``None``: the best number.
    budgets : array-like of shape (n_budgets,), default=None
        Average costs per sample to average the accuracy over, in the unit of
        ``costs``, each at least ``costs[0]``. ``None``: ten budgets evenly spaced
        strictly between ``costs[0]`` and ``costs[-1]`` (positions ``1/11 .. 10/11`` of
        :func:`~eenet_sklearn.metrics.budget_at_position`).
    policy : estimator, default=None
        The unfitted policy to fit for each subset and budget (cloned, never changed;
        ``costs`` and ``budget`` are set on the clones). ``None``:
        :class:`~eenet_sklearn.MaxProbPolicy`, fast to fit. An
        :class:`~eenet_sklearn.EarlyExitPolicy` chooses exits for EENet itself, at the
        price of training its scorer for every fit (see ``n_fits``).
    search : {"auto", "exhaustive", "greedy"}, default="auto"
        ``"exhaustive"`` tries every subset that holds the last exit: ``2**(n_exits - 1)``
        of them (``comb(n_exits - 1, n - 1)`` with ``n_exits=n``). ``"greedy"`` runs
        backward elimination (from every exit, drop the exit whose removal scores best,
        down to one exit or to ``n_exits``) and forward selection (from the last exit
        alone, add the exit that scores best, up to every exit or to ``n_exits``), and
        keeps the best subset either met: at most ``K * (K - 1)`` subsets for ``K``
        candidates. ``"auto"``: exhaustive when that is at most 128 subsets (``K <= 8``),
        greedy otherwise.
    tol : float, default=0.0
        Keep the subset with the fewest exits whose mean accuracy is within ``tol``
        (an accuracy, 0.001 = 0.1 point) of the best subset tried: differences smaller
        than the noise of the held-out estimate (about ``sqrt(a (1 - a) / n_samples)`` for
        an accuracy ``a``) are not worth a head. 0: the best subset.
    cv : int or cross-validation splitter, default=2
        Cross-fitting folds: an integer for that many stratified, shuffled folds
        (seeded by ``random_state``), or a splitter (``StratifiedKFold(5)``, ...). The
        policy of each fold is fitted on the other folds and scored on this one.
    random_state : int, RandomState instance or None, default=0
        Seed of the folds' shuffle when ``cv`` is an integer.
    n_jobs : int, default=None
        Subsets evaluated in parallel (joblib; ``None``: one at a time unless in a
        ``joblib.parallel_backend`` context, ``-1``: every CPU). Greedy search evaluates
        the candidates of each step in parallel.

    Returns
    -------
    Bunch
        - ``kept``: ndarray of int, shape (n_kept,): the exits to keep, in order; the
          last is ``n_exits - 1``.
        - ``costs``: ndarray of shape (n_kept,): their cumulative costs without the
          removed heads, the ``costs`` for a policy on ``X[:, kept]``.
        - ``budgets``: ndarray of shape (n_budgets,): the budgets used.
        - ``accuracy``: ndarray of shape (n_budgets,): held-out accuracy of the kept
          subset at each budget (0 where its first exit costs more than the budget).
        - ``mean_accuracy``: float, the mean of ``accuracy``: what the choice maximises.
        - ``subsets``: list of tuples of int, every subset tried, in the order tried.
        - ``subset_accuracy``: ndarray of shape (n_tried, n_budgets): held-out accuracy
          of each subset tried at each budget; ``subset_mean_accuracy``: ndarray of
          shape (n_tried,), its mean over the budgets.
        - ``subset_mean_cost``: ndarray of shape (n_tried, n_budgets): held-out mean
          cost per sample (NaN where the budget is below the subset's first exit).
        - ``best_by_size``: dict of int to tuple, the best subset tried with each number
          of exits (the answer to "how many exits?").
        - ``search``: ``"exhaustive"`` or ``"greedy"``; ``n_fits``: int, policies fitted.

        Ties in mean accuracy (to 12 decimals) go to fewer exits, then to earlier ones;
        with ``tol``, the fewest exits within ``tol`` of the best win (the most accurate
        among those).

    Raises
    ------
    ValueError
        If ``X`` or ``y`` are invalid as for a policy's ``fit``; ``costs`` is not 1-D,
        finite, positive and strictly increasing with one entry per exit of ``X``;
        ``head_costs`` is negative, not finite, of the wrong shape or not below the cost
        increment that reaches its exit; ``n_exits`` is not in ``[1, n_exits of X]``; a
        budget is below ``costs[0]`` or ``budgets`` is empty; ``search`` is not one of
        its values; ``tol`` is not a number in ``[0, 1)``; ``cv`` is an integer below 2;
        and whatever ``policy.fit`` raises.
    TypeError
        If ``X``, ``costs``, ``head_costs`` or a budget is not numeric, ``n_exits`` is
        not an integer, ``policy`` has no ``costs`` and ``budget`` parameters, or ``cv``
        is neither an integer nor a splitter.

    Warns
    -----
    Warning
        Once per category of warning the policy's fits gave (for instance
        :class:`~eenet_sklearn.base.SmallFittingSetWarning` on small folds), in that
        category, with how many fits gave one and the first message.

    See Also
    --------
    exit_subset_costs : The costs of a subset of exits.
    eenet_sklearn.metrics.budget_curve : Accuracy of policies over budgets on a test split.
    eenet_sklearn.nn.measure_latency : Measured cumulative costs of a network's exits.

    Notes
    -----
    Each subset tried costs ``n_budgets * n_folds`` policy fits (fewer where budgets are
    out of its reach). The selection is made on ``X`` itself; measure the chosen subset
    on data that took no part in it (a test split) before reporting its accuracy.

    References
    ----------
    .. [1] F. Ilhan, K.-H. Chow, S. Hu, T. Huang, S. Tekin, W. Wei, Y. Wu, M. Lee,
       R. Kompella, H. Latapie, G. Liu and L. Liu, "Adaptive Deep Neural Network Inference
       Optimization with EENet", WACV 2024, arXiv:2301.07099: how many exits to place and
       where is the paper's second open question.
    .. [2] S. Laskaridis, S. I. Venieris, H. Kim and N. D. Lane, "HAPI: Hardware-Aware
       Progressive Inference", ICCAD 2020, arXiv:2008.03997: exit placement searched
       jointly with the exit policy under latency budgets.
    .. [3] M. Streeter, "Approximation Algorithms for Cascading Prediction Models",
       ICML 2018, arXiv:1802.07697: a greedy choice of the stages of a cascade.

    Examples
    --------
    >>> from eenet_sklearn import select_exits
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> d = load_exit_logits("mnist_mlp3")
    >>> result = select_exits(d.val_logits, d.val_labels, d.costs, head_costs=0.002)
    >>> result.kept, result.costs.round(4)
    (array([0, 1, 2]), array([0.0194, 0.034 , 0.0488]))
    >>> result.search, len(result.subsets)
    ('exhaustive', 4)
    >>> result.best_by_size  # the best subset with 1, 2 and 3 exits
    {1: (2,), 2: (0, 2), 3: (0, 1, 2)}
    """
    input_type = check_input_type(getattr(policy, "input_type", "logits"))
    policy = _check_policy(policy)
    y = check_target(y, "select_exits")
    costs = check_costs(costs)
    outputs = check_exit_outputs(X, len(costs), input_type=input_type, name="X")
    if len(y) != len(outputs):
        raise ValueError(f"y has {len(y)} labels but X has {len(outputs)} samples.")
    heads = _check_head_costs(head_costs, costs)
    total = len(costs)
    target = _check_n_exits(n_exits, total)
    budget_values = _check_budgets(budgets, costs)
    if search not in _SEARCHES:
        raise ValueError(f"search must be one of {_SEARCHES}, got {search!r}.")
    tolerance = float(tol) if isinstance(tol, Real) and not isinstance(tol, bool) else np.nan
    if not 0.0 <= tolerance < 1.0:  # NaN too
        raise ValueError(f"tol must be a number in [0, 1) (an accuracy), got {describe(tol)}.")
    splitter = _check_cv(cv, y, random_state)
    classes = policy.get_params(deep=False).get("classes")
    _, columns = encode_labels(y, len(outputs), outputs.shape[2], classes)
    folds = list(splitter.split(np.zeros(len(y)), y))

    last = total - 1
    sizes = list(range(1, total + 1)) if target is None else [target]
    n_subsets = sum(comb(last, size - 1) for size in sizes)
    method = search if search != "auto" else ("exhaustive" if n_subsets <= _MAX_EXHAUSTIVE else "greedy")
    evaluator = _Evaluator(
        outputs, y, columns, costs, heads, budget_values, policy, folds, input_type, n_jobs
    )
    if method == "exhaustive":
        _exhaustive(evaluator, last, sizes)
    else:
        _greedy(evaluator, last, target)
    for category, count in evaluator.warned.items():
        warnings.warn(
            f"{count} of the {evaluator.n_fits} policy fits in select_exits gave a "
            f"{category.__name__}; the first: {evaluator.first_message[category]}",
            category,
            stacklevel=2,
        )

    subsets = list(evaluator.memo)
    eligible = [subset for subset in subsets if target is None or len(subset) == target]
    top = max(evaluator.score(subset) for subset in eligible)
    near = [subset for subset in eligible if evaluator.score(subset) >= top - tolerance - 1e-12]
    best = min(near, key=lambda subset: (len(subset), evaluator.rank(subset)))
    best_by_size: dict[int, tuple[int, ...]] = {}
    for subset in sorted(subsets, key=evaluator.rank):
        best_by_size.setdefault(len(subset), subset)
    kept = np.array(best, dtype=np.intp)
    return Bunch(
        kept=kept,
        costs=_subset_costs(costs, heads, kept),
        budgets=budget_values,
        accuracy=evaluator.memo[best][0],
        mean_accuracy=evaluator.score(best),
        subsets=subsets,
        subset_accuracy=np.array([evaluator.memo[subset][0] for subset in subsets]),
        subset_mean_accuracy=np.array([evaluator.score(subset) for subset in subsets]),
        subset_mean_cost=np.array([evaluator.memo[subset][1] for subset in subsets]),
        best_by_size=dict(sorted(best_by_size.items())),
        search=method,
        n_fits=evaluator.n_fits,
    )

"""Budget-aware evaluation: the oracle bound, budget curves and model-selection helpers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Literal, overload

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_scalar
from tqdm.auto import tqdm

from ._anytime import _check_weight_matrix, anytime_logits
from ._features import exit_log_proba, exit_predictions
from ._thresholds import exit_fractions
from ._validation import (
    check_budget,
    check_budgets,
    check_costs,
    check_exit_outputs,
    check_input_type,
    check_positions,
    check_target,
    encode_labels,
)

__all__ = [
    "budget_at_position",
    "budget_curve",
    "make_cost_aware_scorer",
    "oracle_accuracy",
    "smallest_budget_within",
]


@overload
def oracle_accuracy(
    X, y, costs, budget: float, *, input_type: str = ..., classes=..., return_exits: Literal[False] = ...,
    weights=...,
) -> float: ...


@overload
def oracle_accuracy(
    X, y, costs, budget: float, *, input_type: str = ..., classes=..., return_exits: Literal[True],
    weights=...,
) -> tuple[float, np.ndarray]: ...


def oracle_accuracy(
    X,
    y,
    costs,
    budget: float,
    *,
    input_type: str = "logits",
    classes=None,
    return_exits: bool = False,
    weights=None,
) -> float | tuple[float, np.ndarray]:
    """Accuracy of the best possible exit assignment of ``X`` within an average budget.

    Not a policy (it reads the labels and every exit), but the exact upper bound of
    any policy on ``X``, causal or not: a sample some exit gets right is worth one
    correct answer at the cost of its cheapest correct exit, and a sample no exit
    gets right is best sent to exit 0, the cheapest. Every sample costs at least
    ``costs[0]``, so the budget left to share is ``n_samples * (budget - costs[0])``;
    correct samples are admitted in order of increasing extra cost (cheapest correct
    exit's cost minus ``costs[0]``) while it lasts, which maximises their number
    (with unit values, the cheapest items first is an optimal knapsack). The samples
    not admitted leave at exit 0.

    The bound is for the predictions a policy can make: each exit's own (the default),
    or, with ``weights``, those of an anytime ensemble
    (:class:`~eenet_sklearn.AnytimeEnsemble`), whose exit ``k`` predicts from exits
    ``0..k``. Neither bound is above the other in general: report each with the
    policies whose predictions it bounds.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
        Per-exit logits (or probabilities with ``input_type="proba"``).
    y : array-like of shape (n_samples,)
        True labels.
    costs : array-like of shape (n_exits,)
        Cumulative cost of each exit, strictly increasing.
    budget : float
        Average cost per sample allowed, at least ``costs[0]``.
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each column (default: the sorted distinct labels of ``y``).
    return_exits : bool, default=False
        Also return the exit of every sample.
    weights : array-like of shape (n_exits, n_exits), default=None
        Anytime-ensemble weights (an :class:`~eenet_sklearn.AnytimeEnsemble`'s
        ``weights_``): exit ``k`` then predicts from the ensembled logits
        ``sum_{j <= k} weights[k, j] * log_softmax(X[:, j])``, and the bound is that of
        the ensemble's predictions. ``None``: each exit's own predictions.

    Returns
    -------
    accuracy : float
        The largest accuracy any exit assignment with mean cost ``<= budget`` reaches.
    exits : ndarray of shape (n_samples,)
        Only with ``return_exits=True``: the oracle's exit per sample; its mean
        cost, ``costs[exits].mean()``, is at most the budget.

    Raises
    ------
    ValueError
        If ``X`` is not 3-D (or flattened) with one block of outputs per exit,
        ``y`` does not have one label per sample, ``costs`` is not strictly
        increasing and positive, ``budget`` is below ``costs[0]``, ``input_type``
        is not ``"logits"`` or ``"proba"``, ``y`` holds a label missing from
        ``classes``, or ``weights`` is not a nonnegative lower-triangular
        ``(n_exits, n_exits)`` array with a positive entry in each row.

    See Also
    --------
    budget_curve : Policies' accuracy at several budgets, with this bound.
    eenet_sklearn.plotting.BudgetCurveDisplay : Draws the bound as a dashed line.

    Examples
    --------
    >>> import numpy as np
    >>> from eenet_sklearn.metrics import oracle_accuracy
    >>> X = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    >>> oracle_accuracy(X, [1, 0], costs=[1.0, 3.0], budget=1.0)  # only sample 2 fits
    0.5
    >>> oracle_accuracy(X, [1, 0], costs=[1.0, 3.0], budget=2.0)
    1.0

    With exit 1 predicting from the mean log-probabilities of exits 0 and 1, sample 1
    is never right (a tie, the first class wins) and sample 2 always is:

    >>> oracle_accuracy(X, [1, 0], costs=[1.0, 3.0], budget=2.0, weights=[[1, 0], [0.5, 0.5]])
    0.5
    """
    check_input_type(input_type)
    y = check_target(y, "oracle_accuracy")
    costs = check_costs(costs)
    budget = check_budget(budget, costs)
    outputs = check_exit_outputs(X, len(costs), input_type=input_type)
    _, columns = encode_labels(y, outputs.shape[0], outputs.shape[2], classes)
    # Predictions as the policies make them (the same function as their fit uses).
    if weights is None:
        correct = exit_predictions(outputs, input_type) == columns[:, None]
    else:
        matrix = _check_weight_matrix(weights, outputs.shape[1])
        ensembled = anytime_logits(exit_log_proba(outputs, input_type), matrix)
        correct = exit_predictions(ensembled) == columns[:, None]
    n_samples = correct.shape[0]

    solvable = correct.any(axis=1)
    cheapest = correct.argmax(axis=1)  # first correct exit (exit 0 when none is right)
    extra = costs[cheapest] - costs[0]
    candidates = np.flatnonzero(solvable)
    order = candidates[np.argsort(extra[candidates], kind="stable")]
    spent = np.cumsum(extra[order])
    allowance = n_samples * (budget - costs[0])
    # Relative slack: a cumulative sum of equal costs may exceed N * cost by float noise.
    admitted = order[spent <= allowance * (1.0 + 1e-12)]

    exits = np.zeros(n_samples, dtype=np.int64)
    exits[admitted] = cheapest[admitted]
    accuracy = len(admitted) / n_samples
    return (accuracy, exits) if return_exits else accuracy


def budget_at_position(costs, position):
    """The budget at a position between the first and the last exit's cost.

    ``costs[0] + position * (costs[-1] - costs[0])``: position 0 is the first exit's
    cost (the least any policy can spend), position 1 the last exit's cost (every
    sample may reach the last exit, so a budget there does not bind). A position
    names a budget independently of the unit and scale of the costs.

    Parameters
    ----------
    costs : array-like of shape (n_exits,)
        Cumulative cost of each exit, strictly increasing, in any unit.
    position : float or array-like of shape (n_positions,)
        Position(s) in ``[0, 1]``.

    Returns
    -------
    float or ndarray of shape (n_positions,)
        The budget(s), in the unit of ``costs``: a float for a scalar ``position``.

    Raises
    ------
    TypeError
        If ``costs`` or ``position`` is not numeric (strings, booleans and complex
        numbers are refused).
    ValueError
        If ``costs`` is not 1-D, finite, positive and strictly increasing with at
        least 2 entries, or a position is NaN or outside ``[0, 1]``, or ``position``
        is empty or more than 1-D.

    See Also
    --------
    budget_curve : Fit and measure policies at several budgets.

    Examples
    --------
    >>> from eenet_sklearn.metrics import budget_at_position
    >>> budget_at_position([1.0, 2.0, 5.0], 0.25)
    2.0
    >>> budget_at_position([1.0, 2.0, 5.0], [0.0, 0.5, 1.0])
    array([1., 3., 5.])
    """
    costs = check_costs(costs)
    positions = check_positions(position)
    budgets = costs[0] + positions * (costs[-1] - costs[0])
    return float(budgets) if budgets.ndim == 0 else budgets


def _shared_param(policies: Mapping[str, BaseEstimator], name: str, value: object, default: object):
    """``value`` if given; else the policies' common value of parameter ``name``, or ``default``."""
    if value is not None or not policies:
        return default if value is None else value
    values = {key: policy.get_params()[name] for key, policy in policies.items()}
    first = np.asarray(next(iter(values.values())), dtype=object)
    if not all(np.array_equal(np.asarray(v, dtype=object), first) for v in values.values()):
        raise ValueError(
            f"the policies disagree on {name} ({values}); pass {name}=... to budget_curve "
            "to set it on all of them and on the oracle."
        )
    return next(iter(values.values()))


def budget_curve(
    policies: Mapping[str, BaseEstimator],
    X_fit,
    y_fit,
    X_eval,
    y_eval,
    costs,
    budgets: Sequence[float] | np.ndarray,
    *,
    include_oracle: bool = True,
    input_type: str | None = None,
    classes=None,
    as_frame: bool | str = "auto",
    return_estimators: bool = False,
    verbose: int = 0,
):
    """Fit policies at several budgets on one split; measure them on another.

    Each policy is cloned, given ``costs`` and the budget with ``set_params``, fitted
    on ``(X_fit, y_fit)`` and evaluated on ``(X_eval, y_eval)``. Fits run budget by
    budget, the policies in the given order within each budget.

    Parameters
    ----------
    policies : dict of str to estimator
        Name to unfitted policy (any estimator with ``costs`` and ``budget``
        parameters, ``predict_exit`` and ``score``); left untouched.
    X_fit, y_fit : array-like
        Per-exit outputs and labels the policies are fitted on.
    X_eval, y_eval : array-like
        Per-exit outputs and labels they are measured on.
    costs : array-like of shape (n_exits,)
        Cumulative cost of each exit.
    budgets : sequence of float
        Average budgets per sample, each at least ``costs[0]``.
    include_oracle : bool, default=True
        Add the rows of :func:`oracle_accuracy` on the evaluation split, named ``"oracle"``.
    input_type : {"logits", "proba"}, default=None
        Set on every policy and used by the oracle; ``None``: the policies' common
        ``input_type`` (``"logits"`` without policies).
    classes : array-like of shape (n_classes,), default=None
        Set on every policy and used by the oracle; ``None``: the policies' common
        ``classes``.
    as_frame : bool or "auto", default="auto"
        Return a pandas ``DataFrame`` (``True``; needs pandas), a list of dicts
        (``False``), or a ``DataFrame`` when pandas is importable (``"auto"``).
    return_estimators : bool, default=False
        Add a column ``estimator`` holding each row's fitted clone (``None`` in
        the oracle's rows), as ``cross_validate(..., return_estimator=True)`` does.
    verbose : int, default=0
        When positive, show a progress bar over the fits (``tqdm``, on stderr).

    Returns
    -------
    DataFrame or list of dict
        One row per policy and budget (policies in the given order, then the
        oracle, for each budget in turn), with columns ``policy``, ``budget``,
        ``accuracy`` and ``mean_cost`` on the evaluation split, and
        ``exit_fractions`` (ndarray of shape (n_exits,)): the fraction of
        evaluation samples leaving at each exit; with ``return_estimators=True``,
        also ``estimator``.

    Raises
    ------
    ValueError
        If ``as_frame`` is not ``True``, ``False`` or ``"auto"``, the costs or a
        budget are invalid (a budget below ``costs[0]``), or the policies disagree
        on ``input_type`` or ``classes`` and none is given; and whatever a
        policy's ``fit`` raises on the data.
    ImportError
        If ``as_frame=True`` and pandas is not installed.

    See Also
    --------
    budget_at_position : Budgets named by their position between the exit costs.
    oracle_accuracy : The bound no policy can pass.
    eenet_sklearn.plotting.BudgetCurveDisplay : Draws the rows.

    References
    ----------
    .. [1] Huang, G., Chen, D., Li, T., Wu, F., van der Maaten, L., and Weinberger, K. Q.
       "Multi-Scale Dense Networks for Resource Efficient Image Classification." ICLR 2018;
       arXiv:1703.09844. Budgeted batch classification: accuracy against the mean cost
       per sample, the protocol measured here.
    .. [2] Ilhan, F. et al. "Adaptive Deep Neural Network Inference Optimization with
       EENet." WACV 2024; arXiv:2301.07099.

    Examples
    --------
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.metrics import budget_curve
    >>> d = load_exit_logits("mnist_mlp3")
    >>> rows = budget_curve({"msdnet": MaxProbPolicy()}, d.val_logits, d.val_labels,
    ...                     d.test_logits, d.test_labels, d.costs, [0.03, 0.05], as_frame=False)
    >>> [row["policy"] for row in rows]
    ['msdnet', 'oracle', 'msdnet', 'oracle']
    """
    if as_frame not in (True, False, "auto"):
        raise ValueError(f'as_frame must be True, False or "auto", got {as_frame!r}.')
    costs = check_costs(costs)
    budgets = check_budgets(budgets, costs)
    input_type = _shared_param(policies, "input_type", input_type, "logits")
    classes = _shared_param(policies, "classes", classes, None)
    # Checked here too, so that errors name the argument (X_eval, not the X of a fit).
    check_input_type(input_type)
    for X_name, X, y_name, y in (("X_fit", X_fit, "y_fit", y_fit), ("X_eval", X_eval, "y_eval", y_eval)):
        check_target(y, "budget_curve", name=y_name)
        n_samples = len(check_exit_outputs(X, len(costs), input_type=input_type, name=X_name))
        if len(y) != n_samples:
            raise ValueError(f"{y_name} has {len(y)} labels but {X_name} has {n_samples} samples.")
    rows = []
    progress = tqdm(
        total=len(budgets) * len(policies), desc="fits", unit="fit", disable=not verbose, file=sys.stderr
    )
    for budget in budgets:
        for name, policy in policies.items():
            fitted = clone(policy).set_params(
                costs=costs, budget=budget, input_type=input_type, classes=classes
            )
            fitted.fit(X_fit, y_fit)
            exits = fitted.predict_exit(X_eval)
            rows.append(
                {
                    "policy": name,
                    "budget": budget,
                    "accuracy": float(fitted.score(X_eval, y_eval)),
                    "mean_cost": float(costs[exits].mean()),
                    "exit_fractions": exit_fractions(exits, len(costs)),
                    **({"estimator": fitted} if return_estimators else {}),
                }
            )
            progress.update()
        if include_oracle:
            accuracy, exits = oracle_accuracy(
                X_eval, y_eval, costs, budget,
                input_type=input_type, classes=classes, return_exits=True,
            )
            rows.append(
                {
                    "policy": "oracle",
                    "budget": budget,
                    "accuracy": accuracy,
                    "mean_cost": float(costs[exits].mean()),
                    "exit_fractions": exit_fractions(exits, len(costs)),
                    **({"estimator": None} if return_estimators else {}),
                }
            )
    progress.close()
    if as_frame is False:
        return rows
    try:
        import pandas as pd
    except ImportError:
        if as_frame is True:
            raise ImportError(
                "budget_curve(as_frame=True) needs pandas; install it or pass as_frame=False."
            ) from None
        return rows
    columns = ["policy", "budget", "accuracy", "mean_cost", "exit_fractions"]
    return pd.DataFrame(rows, columns=[*columns, "estimator"] if return_estimators else columns)


def _final_policy(estimator, X):
    """The policy that decides, and ``X`` as it sees it.

    A policy is returned as is with ``X``; a ``Pipeline`` ending in a policy gives its
    last step and ``X`` transformed by the steps before it (nested pipelines too).
    """
    while hasattr(estimator, "steps"):
        for _, step in estimator.steps[:-1]:
            if step is not None and step != "passthrough":
                X = step.transform(X)
        estimator = estimator.steps[-1][1]
    if not hasattr(estimator, "predict_exit"):
        raise TypeError(
            "make_cost_aware_scorer scores an exit policy (with predict_exit, costs_ and "
            f"budget_) or a Pipeline ending in one, got {type(estimator).__name__}."
        )
    return estimator, X


class _CostAwareScorer:
    """``accuracy - penalty * max(0, mean_cost / budget_ - 1 - tolerance)`` of a fitted policy."""

    def __init__(self, penalty: float, tolerance: float):
        self.penalty = penalty
        self.tolerance = tolerance

    def __call__(self, estimator, X, y) -> float:
        policy, X = _final_policy(estimator, X)
        exits = policy.predict_exit(X)
        mean_cost = float(policy.costs_[exits].mean())
        accuracy = float(policy.score(X, y))
        overspend = mean_cost / policy.budget_ - 1.0 - self.tolerance
        # Skip the product when within budget, so that penalty=inf gives accuracy, not NaN.
        return accuracy - self.penalty * overspend if overspend > 0 else accuracy

    def __repr__(self) -> str:
        return f"make_cost_aware_scorer(penalty={self.penalty!r}, tolerance={self.tolerance!r})"


def make_cost_aware_scorer(*, penalty: float = 1.0, tolerance: float = 0.0) -> Callable:
    """A scorer for model selection that charges a policy for overspending its budget.

    The score of a fitted policy on ``(X, y)`` is its accuracy when its mean cost
    on ``X`` is within ``(1 + tolerance) * budget_``, and otherwise its accuracy
    minus ``penalty`` times the relative overspend beyond that allowance::

        accuracy - penalty * max(0, mean_cost / budget_ - 1 - tolerance)

    So with ``penalty=1`` spending 10 % over budget costs 0.1 of accuracy; with
    ``penalty=np.inf`` any overspend scores ``-inf``. Underspending is never
    penalised (nor rewarded): accuracy already pays for it.

    Parameters
    ----------
    penalty : float >= 0, default=1.0
        Accuracy lost per unit of relative overspend.
    tolerance : float >= 0, default=0.0
        Relative overspend allowed free of charge (0.02: 2 % above the budget).

    Returns
    -------
    callable
        ``scorer(estimator, X, y) -> float``, usable as ``scoring=`` in
        ``GridSearchCV`` and ``cross_val_score``. The estimator is a fitted
        policy (it reads ``costs_``, ``budget_`` and ``predict_exit``) or a
        ``Pipeline`` whose last step is one: ``X`` then goes through the steps
        before it, and the last step is scored.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.metrics import make_cost_aware_scorer
    >>> d = load_exit_logits("mnist_mlp3")
    >>> scores = cross_val_score(MaxProbPolicy(costs=d.costs, budget=0.03), d.val_logits,
    ...                          d.val_labels, scoring=make_cost_aware_scorer(penalty=2.0))
    """
    check_scalar(penalty, "penalty", Real, min_val=0)
    check_scalar(tolerance, "tolerance", Real, min_val=0)
    if np.isnan(penalty) or not np.isfinite(tolerance):
        raise ValueError(
            f"penalty must not be NaN and tolerance must be finite, got {penalty!r}, {tolerance!r}."
        )
    return _CostAwareScorer(float(penalty), float(tolerance))


class _SmallestBudgetWithin:
    """Refit callable: the smallest budget scoring within ``tolerance`` of the best."""

    def __init__(self, tolerance: float, param: str, metric: str):
        self.tolerance = tolerance
        self.param = param
        self.metric = metric

    def __call__(self, cv_results: Mapping[str, object]) -> int:
        param_key, score_key = f"param_{self.param}", f"mean_test_{self.metric}"
        for key in (param_key, score_key):
            if key not in cv_results:
                # A budget searched in a Pipeline step is "<step>__budget".
                nested = sorted(k[len("param_"):] for k in cv_results if k.startswith("param_")
                                and k.endswith(f"__{self.param}"))
                hint = f" (the search has {', '.join(map(repr, nested))}: pass param=...)" if (
                    key == param_key and nested) else ""
                raise ValueError(
                    f"cv_results has no {key!r}: search over {self.param!r} with the "
                    f"{self.metric!r} metric, or name them with param=... and metric=...{hint}"
                )
        budgets: np.ma.MaskedArray = np.ma.asarray(cv_results[param_key], dtype=object)
        scores = np.asarray(cv_results[score_key], dtype=np.float64)
        budget_set = ~np.ma.getmaskarray(budgets) & np.array(
            [isinstance(b, Real) for b in budgets.data], dtype=bool
        )
        usable = budget_set & ~np.isnan(scores)
        if not usable.any():
            raise ValueError(
                f"no candidate in cv_results has both a numeric {param_key!r} and a "
                f"{score_key!r} that is not NaN (NaN scores are failed fits or scorings: "
                "search with error_score='raise' to see the error)."
            )
        best = scores[usable].max()
        # Slack for float noise in mean scores: a drop of exactly `tolerance` is within it.
        near = np.flatnonzero(usable & (scores >= best - self.tolerance - 1e-12))
        values = np.array([float(b) for b in budgets.data[near]])
        smallest = near[values == values.min()]
        # Several candidates at that budget (other parameters searched too): the best of them.
        return int(smallest[np.argmax(scores[smallest])])

    def __repr__(self) -> str:
        return (
            f"smallest_budget_within({self.tolerance!r}, param={self.param!r}, "
            f"metric={self.metric!r})"
        )


def smallest_budget_within(
    tolerance: float, *, param: str = "budget", metric: str = "score"
) -> Callable[[Mapping[str, object]], int]:
    """A ``refit`` callable for ``GridSearchCV``: the cheapest budget that is nearly the best.

    Among the candidates whose mean cross-validated score is at least the best
    mean score minus ``tolerance``, it picks the one with the smallest budget (and,
    among several with that budget, the highest score; then the first). Candidates
    without a numeric budget or with a NaN score (failed fits) are ignored.

    Parameters
    ----------
    tolerance : float >= 0
        Largest drop from the best mean score accepted, in the score's unit
        (0.005: half a point of accuracy).
    param : str, default="budget"
        The searched budget parameter, as named in ``param_grid``
        (``"policy__budget"`` for a policy in a ``Pipeline`` step ``"policy"``).
    metric : str, default="score"
        Which ``mean_test_<metric>`` to read: ``"score"`` for a single metric, or
        the name of one metric under multi-metric scoring.

    Returns
    -------
    callable
        ``refit(cv_results) -> int``, the index of the chosen candidate.

    Examples
    --------
    >>> from eenet_sklearn.metrics import smallest_budget_within
    >>> refit = smallest_budget_within(0.01)
    >>> refit({"param_budget": [1.0, 2.0, 3.0], "mean_test_score": [0.80, 0.895, 0.90]})
    1
    """
    check_scalar(tolerance, "tolerance", Real, min_val=0)
    if not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be finite, got {tolerance!r}.")
    return _SmallestBudgetWithin(float(tolerance), param, metric)

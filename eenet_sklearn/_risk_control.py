"""Risk-controlled early exit: the cheapest operating point whose accuracy loss is certified.

:class:`RiskControlledPolicy` wraps a threshold policy and picks, on held-out calibration
data, the cheapest operating point on a fixed path of thresholds whose risk (the accuracy
lost against the last exit, or the rate of disagreeing with it) is certified to be at most
``max_risk`` with probability ``confidence_level`` over the draw of the calibration data:
Learn-then-Test [1]_ with fixed-sequence testing from the most conservative point, as in
"Fast yet Safe" [2]_, or conformal risk control [3]_ for a bound on the expected risk.

The p-values are binomial tails from :mod:`scipy.stats`. MAPIE's ``mapie.risk_control``
(1.6, BSD-3) was weighed: its ``control_fwer(..., "fixed_sequence")`` is the loop in
:func:`_fixed_sequence`, and its ``compute_hoeffding_bentkus_p_value`` takes mean risks and
rounds ``ceil(n * r_hat)`` in floating point, which for 590 of the (count, n) pairs with
``n < 200`` (e.g. 7 of 25) counts one loss too many; it also moved modules between 0.x and
1.x. A dependency for two short, tested functions did not pay.

References
----------
.. [1] A. N. Angelopoulos, S. Bates, E. J. Candès, M. I. Jordan and L. Lei, "Learn then
   Test: Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052, 2021.
.. [2] M. Jazbec, A. Timans, T. Hadži Veljković, K. Sakmann, D. Zhang, C. A. Naesseth
   and E. Nalisnick, "Fast yet Safe: Early-Exiting with Risk Control", NeurIPS 2024,
   arXiv:2405.20915.
.. [3] A. N. Angelopoulos, S. Bates, A. Fisch, L. Lei and T. Schuster, "Conformal Risk
   Control", ICLR 2024, arXiv:2208.02814.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.stats import binom
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ._features import exit_predictions
from ._thresholds import assign_exits, quota_thresholds, within_budget
from ._validation import (
    check_budget,
    check_exit_outputs,
    check_target,
    describe,
    encode_labels,
    format_number,
)
from .base import BaseExitPolicy, SmallFittingSetWarning

__all__ = [
    "RiskControlledPolicy",
    "RiskNotCertifiedWarning",
    "binomial_p_values",
    "hoeffding_bentkus_p_values",
]

_RISKS = ("accuracy_gap", "disagreement")
_METHODS = ("binomial", "hoeffding_bentkus", "crc")
_PATHS = ("quotas", "shared")
_ON_FAILURE = ("warn", "raise")


class RiskNotCertifiedWarning(UserWarning):
    """No operating point within the budget certifies the risk; everything goes to the last exit.

    :class:`RiskControlledPolicy` falls back to the most conservative point (every
    sample at the last exit, risk 0 by definition), which spends ``costs_[-1]`` per
    sample, above the ``budget`` ceiling. Raise the budget, allow a larger
    ``max_risk``, a lower ``confidence_level``, or calibrate on more samples; pass
    ``on_failure="raise"`` to get an error instead.

    See Also
    --------
    RiskControlledPolicy : Where the warning is given.
    """


def binomial_p_values(n_losses, n_samples: int, max_risk: float) -> np.ndarray:
    """Exact binomial p-values of ``H0: risk > max_risk`` for a 0/1 loss.

    Under ``H0`` the number of losses among ``n_samples`` exchangeable samples is
    stochastically at least ``Binomial(n_samples, max_risk)``, so
    ``P(Binomial(n_samples, max_risk) <= n_losses)`` is a valid p-value (the
    Bentkus p-value of Learn-then-Test for binary losses, without its factor ``e``).

    Parameters
    ----------
    n_losses : array-like of int
        Number of samples with loss 1, one count per operating point.
    n_samples : int
        Number of calibration samples behind each count.
    max_risk : float
        The risk level ``epsilon`` tested, in ``(0, 1)``.

    Returns
    -------
    p_values : ndarray of float, the shape of ``n_losses``
        ``scipy.stats.binom.cdf(n_losses, n_samples, max_risk)``.

    See Also
    --------
    hoeffding_bentkus_p_values : For losses in ``[0, 1]`` that are not 0/1.

    References
    ----------
    .. [1] A. N. Angelopoulos et al., "Learn then Test", arXiv:2110.01052, 2021,
       Section 3.2 (binary losses).

    Examples
    --------
    No loss in 10 samples at ``max_risk=0.2``: ``0.8 ** 10``.

    >>> from eenet_sklearn._risk_control import binomial_p_values
    >>> float(binomial_p_values(0, 10, 0.2)[()])
    0.1073741824
    """
    counts = np.asarray(n_losses)
    return np.asarray(binom.cdf(counts, n_samples, max_risk), dtype=np.float64)


def hoeffding_bentkus_p_values(loss_sums, n_samples: int, max_risk: float) -> np.ndarray:
    """Hoeffding-Bentkus p-values of ``H0: risk > max_risk`` for losses in ``[0, 1]``.

    The smaller of Hoeffding's ``exp(-n h(min(r, eps), eps))``, with
    ``h(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))``, and Bentkus's
    ``e * P(Binomial(n, eps) <= ceil(n r))``, where ``r`` is the empirical risk
    ``loss_sums / n`` [1]_. Taking sums rather than means keeps ``ceil(n r)`` exact
    for 0/1 losses (``n * (k / n)`` rounds above ``k`` for some ``k`` and ``n``).

    Parameters
    ----------
    loss_sums : array-like of float
        Sum of the losses (each in ``[0, 1]``) over the calibration samples, one per
        operating point.
    n_samples : int
        Number of calibration samples behind each sum.
    max_risk : float
        The risk level ``epsilon`` tested, in ``(0, 1)``.

    Returns
    -------
    p_values : ndarray of float, the shape of ``loss_sums``
        In ``[0, 1]``.

    See Also
    --------
    binomial_p_values : Exact, and smaller, for 0/1 losses.

    References
    ----------
    .. [1] A. N. Angelopoulos et al., "Learn then Test", arXiv:2110.01052, 2021,
       Proposition 3 (the Hoeffding-Bentkus p-value).
    """
    sums = np.asarray(loss_sums, dtype=np.float64)
    risk = np.minimum(sums / n_samples, max_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(risk > 0, risk * np.log(risk / max_risk), 0.0)
    second = (1.0 - risk) * np.log((1.0 - risk) / (1.0 - max_risk))
    hoeffding = np.exp(-n_samples * (first + second))
    bentkus = np.e * binom.cdf(np.ceil(sums), n_samples, max_risk)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def _fixed_sequence(p_values: np.ndarray, delta: float) -> int:
    """How many hypotheses fixed-sequence testing rejects: the leading run of ``p <= delta``."""
    accepted = np.flatnonzero(p_values > delta)
    return int(accepted[0]) if len(accepted) else len(p_values)


def _samples_needed(max_risk: float, delta: float, method: str) -> int:
    """Fewest calibration samples with which a point of zero empirical risk is certified."""
    if method == "crc":
        # (n * 0 + 1) / (n + 1) <= epsilon
        return int(np.ceil(1.0 / max_risk - 1.0 - 1e-12))
    # The smallest p-value either test can give is (1 - epsilon) ** n (no loss at all).
    return int(np.ceil(np.log(delta) / np.log1p(-max_risk) - 1e-12))


def _trace_path(
    policy: BaseExitPolicy, scores: np.ndarray, path: str, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds ``(n_points + 1, n_exits)`` and their mean cost on ``scores``, conservative first.

    Point 0 sends every sample to the last exit. ``"quotas"``: the policy's own quotas at
    ``n_points`` target costs from ``costs_[-1]`` down to ``costs_[0]``, made quota
    thresholds on ``scores`` with the target as a ceiling. ``"shared"``: one threshold for
    every exit but the last, at ``n_points`` quantiles of the pooled scores of those exits,
    from the highest down to the lowest (everybody at exit 0).
    """
    costs = policy.costs_
    n_exits = len(costs)
    thresholds = np.full((n_points + 1, n_exits), np.inf)
    thresholds[:, -1] = -np.inf
    if path == "quotas":
        targets = np.linspace(costs[-1], costs[0], n_points + 1)[1:]
        for j, target in enumerate(targets, start=1):
            quotas = policy._quota_fractions(float(target))
            thresholds[j], _ = quota_thresholds(
                scores, quotas, costs=costs, budget=float(target), quotas=policy._unit_quota_fractions
            )
    else:
        pooled = scores[:, :-1].ravel()
        levels = np.linspace(1.0, 0.0, n_points + 1)[1:]
        shared = np.quantile(pooled, levels, method="inverted_cdf")
        thresholds[1:, :-1] = shared[:, None]
    thresholds[0, :-1] = np.inf
    path_costs = np.array([costs[assign_exits(scores, row)].mean() for row in thresholds])
    return thresholds, path_costs


def _point_losses(
    scores: np.ndarray, predictions: np.ndarray, columns: np.ndarray | None, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample 0/1 losses ``(n_points, n_samples)`` and exits at every point of a path.

    ``predictions``: each exit's predicted column ``(n_samples, n_exits)``; ``columns``: the
    true column of each sample (``"accuracy_gap"``), or ``None`` (``"disagreement"``).
    """
    rows = np.arange(len(scores))
    exits = np.stack([assign_exits(scores, row) for row in thresholds])
    early = predictions[rows, exits]
    last = predictions[:, -1]
    if columns is None:
        losses = early != last
    else:
        losses = (last == columns) & (early != columns)
    return losses, exits


class RiskControlledPolicy(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """The cheapest operating point of a policy whose accuracy loss is certified.

    A meta-estimator: it fits (a clone of) ``policy`` on part of the data, traces a
    path of operating points on the same part, from the most conservative (every
    sample at the last exit) to the cheapest (every sample at the first), and keeps
    the cheapest point whose risk on the held-out calibration part is certified to be
    at most ``max_risk``. EENet gives the most accuracy for a cost; this gives the
    least cost for an accuracy loss [2]_.

    Parameters
    ----------
    policy : BaseExitPolicy
        The threshold policy whose operating points are tested: with
        ``path="quotas"`` one whose thresholds are quotas of an exit score
        (:class:`~eenet_sklearn.EarlyExitPolicy`, :class:`~eenet_sklearn.MaxProbPolicy`,
        :class:`~eenet_sklearn.EntropyPolicy`, :class:`~eenet_sklearn.LearnedScorePolicy`).
        Its ``costs`` must be set. Unless ``prefit``, a clone is fitted at its own
        ``budget``, or at this ``budget``, or else at the middle of its costs.
    max_risk : float, default=0.01
        ``epsilon``, the risk allowed, a fraction in ``(0, 1)`` (0.01: one point of
        accuracy).
    confidence_level : float, default=0.9
        ``1 - delta``, the probability over the calibration draw that the certified
        risk holds, in ``(0, 1)``. Not used by ``method="crc"``.
    risk : {"accuracy_gap", "disagreement"}, default="accuracy_gap"
        The per-sample 0/1 loss, whose mean is the risk.
        ``"accuracy_gap"``: 1 where the last exit is right and the sample's exit is
        wrong; its mean bounds from above the accuracy lost against the last exit
        (which also subtracts samples the early exit gets right and the last exit
        wrong). Needs labels. ``"disagreement"``: 1 where the sample's exit predicts
        another class than the last exit; needs no labels (``fit(X)``) and bounds
        ``"accuracy_gap"`` sample by sample.
    budget : float, default=None
        Optional ceiling on the mean cost per sample, in the unit of the costs:
        only operating points whose mean cost on the path data is at most
        ``budget`` are tested.
    method : {"binomial", "hoeffding_bentkus", "crc"}, default="binomial"
        ``"binomial"``: Learn-then-Test [1]_ with exact binomial p-values (valid,
        and tightest, for the 0/1 losses above); ``"hoeffding_bentkus"``: with the
        Hoeffding-Bentkus p-values of losses in ``[0, 1]``; both with fixed-sequence
        testing. ``"crc"``: conformal risk control [3]_, a bound on the *expected*
        test risk (over calibration and test draws) rather than a high-probability
        one, on losses made monotone along the path.
    path : {"quotas", "shared"}, default="quotas"
        The operating points: ``"quotas"``, the policy's own quotas (what
        :meth:`~eenet_sklearn.base.BaseExitPolicy.recalibrate` uses) at ``n_points``
        mean costs from ``costs[-1]`` down to ``costs[0]``; ``"shared"``, one
        threshold on the exit score shared by every exit but the last, at
        ``n_points`` quantiles (with :class:`~eenet_sklearn.MaxProbPolicy`, the
        rule of "Fast yet Safe" [2]_).
    n_points : int, default=100
        Operating points on the path besides the most conservative one.
    calibration_size : float or int, default=0.5
        The share (a float in ``(0, 1)``) or number of samples held out to certify
        the risk; the rest fits the policy (unless ``prefit``) and traces the path.
    prefit : bool, default=False
        Whether ``policy`` is already fitted: it is then copied, not refitted, and
        the non-calibration part only traces the path.
    on_failure : {"warn", "raise"}, default="warn"
        What happens when no point within ``budget`` is certified: a
        :class:`RiskNotCertifiedWarning` and every sample at the last exit (above
        the budget), or a ``ValueError``.
    random_state : int, RandomState instance or None, default=None
        Seeds the split into path and calibration parts.

    Attributes
    ----------
    policy_ : BaseExitPolicy
        The fitted policy, its ``thresholds_`` set to the chosen point (and its
        ``budget_`` and ``target_cost_`` to that point's mean cost on the path data):
        what :meth:`predict` and the other methods call. It is a plain policy:
        :func:`~eenet_sklearn.save_policy` saves it, and it predicts as this
        meta-estimator does. Recalibrating it gives up the guarantee.
    thresholds_ : ndarray of shape (n_exits,)
        The chosen point's thresholds.
    path_thresholds_ : ndarray of shape (n_points + 1, n_exits)
        Every operating point's thresholds, most conservative first.
    path_costs_ : ndarray of shape (n_points + 1,)
        Mean cost of each point on the path data.
    risks_ : ndarray of shape (n_points + 1,)
        Empirical risk of each point on the calibration data.
    calibration_costs_ : ndarray of shape (n_points + 1,)
        Mean cost of each point on the calibration data.
    p_values_ : ndarray of shape (n_points + 1,)
        Each point's p-value of ``risk > max_risk`` (``nan`` for points above the
        budget, which are not tested, and with ``method="crc"``); 0 at point 0,
        whose risk is 0 by definition.
    operating_point_ : int
        Index of the chosen point on the path.
    certified_ : bool
        Whether a point within the budget was certified (``False`` after the
        fallback).
    risk_ : float
        The chosen point's empirical risk on the calibration data.
    expected_cost_ : float
        The chosen point's mean cost on the calibration data.
    costs_ : ndarray of shape (n_exits,)
        The policy's costs.
    classes_ : ndarray of shape (n_classes,)
        The policy's class labels.
    n_exits_, n_classes_, n_features_in_ : int
        As the policy's.
    n_calibration_ : int
        Number of calibration samples.
    calibration_indices_ : ndarray of shape (n_calibration_,)
        The rows of ``X`` held out for calibration (sorted); the others fitted the
        policy (unless ``prefit``) and traced the path.

    See Also
    --------
    eenet_sklearn.EarlyExitPolicy : The most accuracy for a budget.
    eenet_sklearn.online.BudgetController : Holds the mean cost under drift, which this
        guarantee does not cover.

    Notes
    -----
    The guarantee (``method="binomial"`` or ``"hoeffding_bentkus"``): if the
    calibration samples and a test sample are i.i.d. (exchangeable) draws from one
    distribution, independent of the path data, then with probability at least
    ``confidence_level`` over the calibration draw, the chosen point's risk on that
    distribution, the mean loss of a new sample, is at most ``max_risk``. The path is
    fixed before the calibration data is looked at, and points are tested from the
    most conservative onwards, stopping at the first that fails, so no correction for
    the number of points is needed (fixed-sequence testing). With ``"crc"``:
    ``E[loss of a new sample] <= max_risk``, averaged over the calibration draw too.
    Nothing is said about traffic that drifts away from the calibration data, nor
    about the cost (the budget holds on the path data, and up to sampling noise on
    new data).

    References
    ----------
    .. [1] A. N. Angelopoulos, S. Bates, E. J. Candès, M. I. Jordan and L. Lei, "Learn
       then Test: Calibrating Predictive Algorithms to Achieve Risk Control",
       arXiv:2110.01052, 2021.
    .. [2] M. Jazbec, A. Timans et al., "Fast yet Safe: Early-Exiting with Risk
       Control", NeurIPS 2024, arXiv:2405.20915.
    .. [3] A. N. Angelopoulos, S. Bates, A. Fisch, L. Lei and T. Schuster, "Conformal
       Risk Control", ICLR 2024, arXiv:2208.02814.

    Examples
    --------
    At most 2 points of accuracy lost against the last exit, with 90% confidence:

    >>> from eenet_sklearn import MaxProbPolicy, RiskControlledPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> safe = RiskControlledPolicy(MaxProbPolicy(costs=data.costs), max_risk=0.02,
    ...                             confidence_level=0.9, random_state=0)
    >>> safe = safe.fit(data.val_logits, data.val_labels)
    >>> bool(safe.certified_), bool(safe.expected_cost(data.test_logits) < data.costs[-1])
    (True, True)
    >>> last = data.test_logits[:, -1].argmax(axis=1) == data.test_labels
    >>> bool(last.mean() - safe.score(data.test_logits, data.test_labels) <= 0.02)
    True
    """

    def __init__(
        self,
        policy,
        max_risk=0.01,
        confidence_level=0.9,
        risk="accuracy_gap",
        budget=None,
        *,
        method="binomial",
        path="quotas",
        n_points=100,
        calibration_size=0.5,
        prefit=False,
        on_failure="warn",
        random_state=None,
    ):
        self.policy = policy
        self.max_risk = max_risk
        self.confidence_level = confidence_level
        self.risk = risk
        self.budget = budget
        self.method = method
        self.path = path
        self.n_points = n_points
        self.calibration_size = calibration_size
        self.prefit = prefit
        self.on_failure = on_failure
        self.random_state = random_state

    def _check_parameters(self) -> None:
        for name in ("max_risk", "confidence_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"{name} must be a real number in (0, 1), got {describe(value)}.")
            if not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must be in (0, 1) (exclusive), got {format_number(value)}.")
        for name, allowed in (
            ("risk", _RISKS),
            ("method", _METHODS),
            ("path", _PATHS),
            ("on_failure", _ON_FAILURE),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if not isinstance(self.n_points, Integral) or isinstance(self.n_points, bool) or self.n_points < 1:
            raise ValueError(f"n_points must be an integer >= 1, got {describe(self.n_points)}.")
        if not isinstance(self.prefit, (bool, np.bool_)):
            raise TypeError(f"prefit must be True or False, got {describe(self.prefit)}.")
        if not isinstance(self.policy, BaseExitPolicy):
            raise TypeError(
                "policy must be an eenet_sklearn exit policy (a BaseExitPolicy such as "
                f"EarlyExitPolicy or MaxProbPolicy), got {describe(self.policy)}."
            )
        if self.path == "quotas":
            self.policy._check_quota_rule("RiskControlledPolicy(path='quotas')")

    def fit(self, X, y=None):
        """Fit the policy, trace its operating points and certify the cheapest one.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says) of
            data the network was not trained on, exchangeable with the traffic the
            guarantee is for.
        y : array-like of shape (n_samples,), default=None
            True labels; needed with ``risk="accuracy_gap"``. With
            ``risk="disagreement"`` and no labels, an unfitted policy is fitted on
            the last exit's predictions (class labels are then column indices
            unless the policy's ``classes`` names them).

        Returns
        -------
        self : RiskControlledPolicy
            The fitted meta-estimator.

        Raises
        ------
        ValueError
            If ``max_risk`` or ``confidence_level`` is outside ``(0, 1)``, a string
            option is unknown, ``y`` is missing with ``risk="accuracy_gap"``, the
            calibration part is too small to certify any point below the last exit
            (the message says how many samples would do), the budget is below
            ``costs[0]``, or, with ``on_failure="raise"``, no point within the
            budget is certified.
        TypeError
            If ``policy`` is not an exit policy (or not a quota rule with
            ``path="quotas"``), or a parameter has the wrong type.

        Warns
        -----
        RiskNotCertifiedWarning
            If no point within the budget is certified (``on_failure="warn"``).
        """
        self._check_parameters()
        if self.risk == "accuracy_gap" and y is None:
            raise ValueError(
                "risk='accuracy_gap' needs labels: call fit(X, y), or use "
                "risk='disagreement', which needs none."
            )
        base = self.policy
        input_type = base.input_type
        n_exits = len(base.costs_) if self.prefit and hasattr(base, "costs_") else None
        if n_exits is None:
            if base.costs is None:
                raise ValueError("policy.costs must be set: RiskControlledPolicy reads the costs from it.")
            n_exits = len(np.ravel(base.costs))
        outputs = check_exit_outputs(X, n_exits, input_type=input_type)
        n_samples = outputs.shape[0]
        target = None if y is None else check_target(y, type(self).__name__)
        if target is not None and len(target) != n_samples:
            raise ValueError(f"y has {len(target)} labels but X has {n_samples} samples.")
        path_rows, cal_rows = self._split(n_samples)
        n_cal = len(cal_rows)
        max_risk, delta = float(self.max_risk), 1.0 - float(self.confidence_level)
        needed = _samples_needed(max_risk, delta, self.method)
        if n_cal < needed:
            level = format_number(self.confidence_level)
            what = "E[risk]" if self.method == "crc" else f"with confidence {level}"
            raise ValueError(
                f"The calibration part has {n_cal} samples, too few to certify any operating "
                f"point below the last exit at max_risk={format_number(max_risk)} {what}: even "
                f"with no loss at all it takes at least {needed} calibration samples. Pass more "
                "samples, a larger calibration_size, a larger max_risk or a lower confidence_level."
            )

        policy = self._fitted_policy(outputs[path_rows], None if target is None else target[path_rows])
        costs = policy.costs_
        budget = None if self.budget is None else check_budget(self.budget, costs)
        path_scores = policy.exit_scores(outputs[path_rows])
        thresholds, path_costs = _trace_path(policy, path_scores, self.path, int(self.n_points))

        cal = outputs[cal_rows]
        columns = None
        if self.risk == "accuracy_gap":
            assert target is not None
            columns = encode_labels(target[cal_rows], n_cal, cal.shape[2], policy.classes_)[1]
        losses, exits = _point_losses(
            policy.exit_scores(cal), policy._exit_predictions(cal), columns, thresholds
        )
        loss_sums = losses.sum(axis=1)
        within = np.ones(len(thresholds), dtype=bool)
        if budget is not None:
            within = np.array([within_budget(float(c), budget) for c in path_costs])
        tested = np.flatnonzero(within)
        p_values = np.full(len(thresholds), np.nan)
        if self.method == "crc":
            # Losses made non-decreasing along the path, so that CRC's monotonicity holds.
            monotone = np.maximum.accumulate(losses, axis=0).sum(axis=1)
            passes = (monotone + 1.0) / (n_cal + 1.0) <= max_risk
            passes[0] = True  # risk 0 by definition
            failing = np.flatnonzero(~passes)
            last_ok = (failing[0] if len(failing) else len(passes)) - 1
            chosen = tested[tested <= last_ok]
            point = int(chosen[-1]) if len(chosen) else -1
        else:
            test = binomial_p_values if self.method == "binomial" else hoeffding_bentkus_p_values
            p_values[tested] = test(loss_sums[tested], n_cal, max_risk)
            p_values[0] = 0.0 if within[0] else np.nan  # the last exit's risk is 0 by definition
            n_rejected = _fixed_sequence(p_values[tested], delta)
            point = int(tested[n_rejected - 1]) if n_rejected else -1
        certified = point >= 0
        if not certified:
            self._not_certified(budget, path_costs, loss_sums / n_cal)
            point = 0

        policy.thresholds_ = thresholds[point].copy()
        policy.exit_fractions_ = np.bincount(exits[point], minlength=len(costs)) / n_cal
        # What these thresholds spend on the path data: recalibrate() without a budget keeps it.
        policy.budget_ = policy.target_cost_ = float(path_costs[point])
        self.policy_ = policy
        self.thresholds_ = policy.thresholds_
        self.path_thresholds_, self.path_costs_ = thresholds, path_costs
        self.risks_ = loss_sums / n_cal
        self.calibration_costs_ = costs[exits].mean(axis=1)
        self.p_values_ = p_values
        self.operating_point_, self.certified_ = point, certified
        self.risk_ = float(self.risks_[point])
        self.expected_cost_ = float(self.calibration_costs_[point])
        self.costs_, self.classes_ = costs, policy.classes_
        self.n_exits_, self.n_classes_ = policy.n_exits_, policy.n_classes_
        self.n_features_in_ = policy.n_features_in_
        self.n_calibration_, self.calibration_indices_ = n_cal, cal_rows
        return self

    def _split(self, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.calibration_size
        if isinstance(size, Integral) and not isinstance(size, bool):
            valid = 0 < int(size) < n_samples
        else:
            valid = isinstance(size, Real) and not isinstance(size, bool) and 0 < float(size) < 1
        if not valid:
            raise ValueError(
                "calibration_size must be a fraction in (0, 1) or a number of samples in "
                f"[1, n_samples - 1] = [1, {n_samples - 1}], got {describe(size)}."
            )
        path_rows, cal_rows = train_test_split(
            np.arange(n_samples), test_size=size, random_state=self.random_state
        )
        return np.sort(path_rows), np.sort(cal_rows)

    def _fitted_policy(self, outputs: np.ndarray, target: np.ndarray | None) -> BaseExitPolicy:
        """A fitted copy of ``policy``: copied when ``prefit``, else a clone fitted on ``outputs``."""
        if self.prefit:
            check_is_fitted(self.policy)
            return copy.deepcopy(self.policy)
        policy = clone(self.policy)
        if target is None:
            # No labels (risk="disagreement"): the last exit's predictions stand in.
            target = exit_predictions(outputs, policy.input_type)[:, -1]
            if policy.classes is None:
                policy.set_params(classes=np.arange(outputs.shape[2]))
            else:
                target = np.asarray(policy.classes)[target]
        budget = None
        if policy.budget is None:
            costs = np.asarray(policy.costs, dtype=np.float64)
            budget = self.budget if self.budget is not None else float(costs[0] + costs[-1]) / 2
        with warnings.catch_warnings():
            # Its thresholds are replaced by the certified point's: a warning about whether
            # they hold the fitting budget would be about thresholds that are never used.
            warnings.simplefilter("ignore", SmallFittingSetWarning)
            return policy.fit(outputs, target, budget=budget)

    def _not_certified(self, budget: float | None, path_costs: np.ndarray, risks: np.ndarray) -> None:
        """Raise or warn that no point within the budget is certified (see ``on_failure``)."""
        within = "" if budget is None else f" within budget={format_number(budget)}"
        cheapest = ""
        if budget is not None:
            affordable = risks[[within_budget(float(c), budget) for c in path_costs]]
            cheapest = (
                " (the lowest empirical risk of a point within the budget is "
                f"{format_number(float(affordable.min(initial=1.0)))})"
            )
        message = (
            f"No operating point{within} certifies risk <= {format_number(self.max_risk)} with "
            f"confidence {format_number(self.confidence_level)} on the calibration data{cheapest}."
        )
        if self.on_failure == "raise":
            raise ValueError(message + " Raise the budget or max_risk, or calibrate on more samples.")
        warnings.warn(
            message + " Falling back to every sample at the last exit, which spends "
            f"{format_number(float(path_costs[0]))} per sample, above the budget.",
            RiskNotCertifiedWarning,
            stacklevel=3,
        )

    # Prediction: the fitted policy at the chosen point.

    def predict_exit(self, X) -> np.ndarray:
        """Index (0-based) of the exit each sample leaves at, at the certified point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        exits : ndarray of shape (n_samples,), dtype int64

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.predict_exit : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.predict_exit(X)

    def predict(self, X) -> np.ndarray:
        """Class label predicted at each sample's exit, at the certified point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Labels from ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.predict : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities at each sample's exit, at the certified point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in ``classes_`` order.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.predict_proba : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.predict_proba(X)

    def exit_scores(self, X) -> np.ndarray:
        """The wrapped policy's exit scores at every exit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_exits)
            A sample leaves at the first exit ``k`` with ``scores[:, k] >= thresholds_[k]``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.exit_scores : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.exit_scores(X)

    def decide_at_exit(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Decide at exit ``k`` from the outputs of exits ``0..k`` alone, for early-exit inference.

        Parameters
        ----------
        X : array-like of shape (n_samples, k + 1, n_classes)
            Outputs of exits ``0..k``, with ``1 <= k + 1 <= n_exits_``.

        Returns
        -------
        leaving : ndarray of shape (n_samples,), dtype bool
            Whether each sample leaves at exit ``k``.
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities at exit ``k``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.decide_at_exit : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.decide_at_exit(X)

    def exit_decider(self):
        """The wrapped policy's decision, one exit at a time, for early-exit inference and serving.

        Returns
        -------
        eenet_sklearn.base.ExitDecider
            The certified policy's (``policy_``) incremental decider; it decides as
            :meth:`predict_exit` does.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.exit_decider : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.exit_decider()

    def expected_cost(self, X) -> float:
        """Mean cost of the exits chosen for ``X``, in the unit of ``costs_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        cost : float
            ``costs_[predict_exit(X)].mean()``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape (as the policy's method
            raises).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.expected_cost : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.expected_cost(X)

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities, as the policy's ``input_type`` says), with the
            exits and classes the policy was fitted on.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        accuracy : float
            Fraction (or weighted fraction) of samples predicted right, in ``[0, 1]``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the meta-estimator is not fitted.
        ValueError
            If ``X`` is not per-exit outputs of the fitted shape, or ``y`` does not match it.

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.score : The wrapped policy's method.
        """
        check_is_fitted(self)
        return self.policy_.score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.poor_score = True
        return tags

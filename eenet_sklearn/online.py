"""Online budget control: hold the mean cost per sample of a fitted policy on a drifting stream.

A fitted policy's thresholds spend its budget on data like the fitting data. When the
traffic drifts (harder inputs run deeper, easier ones shallower), the same thresholds
spend more or less. :class:`BudgetController` wraps a fitted quota policy and decides
batch by batch as the policy does, with thresholds it keeps setting from recent traffic:
at each exit, the quantile of the recent scores there that lets the exit take its quota,
moved by a per-exit offset that the update rule of adaptive conformal inference keeps
correcting, so that the running mean cost converges to the budget on any sequence of
batches. It also tests whether the traffic has drifted from the fitting data, and can
say so with a :class:`DriftWarning`.
"""

from __future__ import annotations

import warnings
from collections import deque
from numbers import Integral, Real

import numpy as np
from scipy.special import chdtrc
from sklearn.utils import check_scalar
from sklearn.utils.validation import check_is_fitted

from ._decider import ExitDecider, State
from ._thresholds import assign_exits
from ._validation import (
    as_real_array,
    check_budget,
    check_exit_outputs,
    check_exit_prefix,
    describe,
    format_number,
    format_values,
)
from .base import BaseExitPolicy

__all__ = ["BudgetController", "DriftWarning"]

#: An exit's threshold is the policy's fitted one until its window holds at least this
#: share of ``window`` scores (and at least one).
_WARM_UP_SHARE = 0.1


class DriftWarning(UserWarning):
    """The exits the fitted thresholds give on recent traffic differ from the fitting data's.

    Raised by :class:`BudgetController` with ``warn_on_drift=True`` when its drift test
    first rejects (and again after it has cleared). The controller keeps holding the
    mean cost; the accuracy the policy was fitted for is no longer assured.

    See Also
    --------
    BudgetController.drift_pvalue_ : The p-value to poll instead.
    """


class BudgetController:
    """Hold the running mean cost of a fitted policy at a budget, batch by batch.

    Each batch is decided as the fitted policy decides it (a sample leaves at the first
    exit whose score reaches its threshold), with thresholds set from the traffic seen
    so far, exit by exit. The policy's quotas for the budget, ``quotas_`` (the fraction
    of samples each exit should take: MSDNet's geometric quotas [3]_ for the baselines,
    EENet's exit distribution tilted to the cost [4]_), say which share of the samples
    *reaching* exit ``k`` should leave there, ``q_k = quotas_[k] / sum(quotas_[k:])``.
    The threshold at exit ``k`` is the score that a share ``q_k + offsets_[k]`` of the
    last ``window`` scores seen at exit ``k`` reaches (their ``1 - q_k - offsets_[k]``
    quantile): what :meth:`~eenet_sklearn.base.BaseExitPolicy.recalibrate` would set on
    that recent traffic, corrected by the offset. After each batch, every exit's offset
    moves by the update rule of adaptive conformal inference [1]_ (a quantile level
    tracking the miss rate; "quantile tracking" in [2]_),

    ``offsets_[k] <- offsets_[k] + step_size * (q_k * reached_k - left_k)``,

    where ``reached_k`` samples of the batch reached exit ``k`` and ``left_k`` left
    there: an exit that let too few samples out lets more out next time. Since the
    quotas spend the budget, holding every exit to its share holds the cost. A batch is
    decided with what the batches before it taught the controller: no sample's decision
    depends on the other samples of its batch. Until an exit's window holds a tenth of
    ``window`` scores, its threshold is the policy's fitted one, so the first batch is
    decided exactly as the policy decides it.

    Parameters
    ----------
    policy : fitted MaxProbPolicy, EntropyPolicy, LearnedScorePolicy or EarlyExitPolicy
        A policy whose thresholds are quotas of an exit score (or a wrapper of one that
        keeps them, such as :class:`~eenet_sklearn.AnytimeEnsemble`). It is not
        modified; the controller reads its ``thresholds_`` while an exit warms up (so a
        :meth:`~eenet_sklearn.base.BaseExitPolicy.recalibrate` before that is picked up).
    budget : float, default=None
        Mean cost per sample to hold, in the unit of ``policy.costs_``, within
        ``[costs_[0], costs_[-1]]``. ``None``: ``policy.target_cost_``, what the
        fitted thresholds spend on the fitting data.
    step_size : float, default=0.002
        How far an offset moves per sample that left an exit more (or less) than its
        share, in units of quantile level. A batch of ``n`` samples moves an offset by
        at most ``step_size * n``; keep ``step_size * batch_size`` at 0.5 or below
        (at 2, the thresholds oscillate between batches: the MSDNet rule lost 1.5
        points of accuracy on ``benchmarks/drift.py``'s stream). Smaller values give the
        quantiles of the window more say; larger ones pay back an excess sooner.
    window : int, default=1000
        How many recent scores, per exit, of the samples that reached it the
        thresholds are quantiles of. Shorter windows follow a change of traffic
        sooner; longer ones give steadier thresholds.
    drift_window : int, default=1000
        Number of recent samples the drift test looks at (whole batches; the test runs
        once the window holds at least this many).
    drift_alpha : float, default=0.001
        Level of the drift test: ``drift_detected_`` is true when its p-value is below
        it. The test runs after every batch on overlapping windows, so keep it small.
    warn_on_drift : bool, default=False
        Also raise a :class:`DriftWarning` when drift is first detected (and again each
        time it is detected after having cleared).

    Attributes
    ----------
    budget_ : float
        The budget held.
    costs_ : ndarray of shape (n_exits,)
        The policy's ``costs_``.
    quotas_ : ndarray of shape (n_exits,)
        Fraction of the samples each exit should take; ``quotas_ @ costs_`` is the
        budget (to the root finder's precision, about ``1e-12`` relative).
    offsets_ : ndarray of shape (n_exits,)
        Per exit, how far the share of the window's scores that leave is moved from
        ``q_k``; positive lets more samples out (cheaper), negative fewer. Start at 0;
        the last stays 0 (every sample leaves there).
    n_samples_seen_ : int
        Samples decided and recorded so far.
    mean_cost_ : float
        Running mean cost of those samples (``nan`` before the first batch).
    drift_pvalue_ : float or None
        p-value of the latest drift test, ``None`` until the window is full.
    drift_detected_ : bool
        Whether ``drift_pvalue_ < drift_alpha``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``policy`` is not fitted.
    TypeError
        If ``policy`` is not an exit policy, or its thresholds are not quotas of an
        exit score (:class:`~eenet_sklearn.PatiencePolicy` and
        :class:`~eenet_sklearn.FixedExitPolicy`: their thresholds are settings, not
        quotas to hold), or a number has the wrong type.
    ValueError
        If ``budget`` is not finite or lies outside ``[costs_[0], costs_[-1]]``,
        ``step_size`` is not positive and finite, ``window`` or ``drift_window`` is
        below 1 or ``drift_alpha`` is outside ``(0, 1)``.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.recalibrate : New thresholds from a sample of
        unlabeled traffic, once.
    eenet_sklearn.nn.early_exit_predict : Accepts a controller in place of a policy.

    Notes
    -----
    **What is guaranteed.** Write ``left_k`` and ``reached_k`` for the samples that
    left at and reached exit ``k`` over all ``N`` samples so far. Since the offsets start
    at 0, ``left_k - q_k * reached_k = -offsets_[k] / step_size`` exactly, and the
    running mean cost follows, exactly:

    ``mean_cost_ - quotas_ @ costs_ = sum_k w_k * offsets_[k] / (step_size * N)``,

    with ``w_k = sum_{m > k} (costs_[m] - costs_[m - 1]) * prod_{k < i < m} (1 - q_i)``,
    between 0 and ``costs_[-1] - costs_[k]``. The offsets stay bounded: once an exit's
    offset is so high that the share to let out reaches 1, every sample reaching it
    leaves and the offset can only come down; once it is so low that the share is 0,
    none leaves and it can only go up. So, with ``n`` the largest batch, ``|offsets_[k]|
    <= 1 + step_size * (window / 10 + 2 * n)`` and the running mean cost converges to the
    budget at rate ``1 / N`` on *any* sequence of batches, adversarial ones included,
    whatever the drift and whatever the scores do, the condition of [1]_. What is held
    is the running mean over all samples, not the cost of each batch or window: after a
    sudden change, windows spend more (or less) until the recent scores are those of the
    new traffic (about ``window`` samples reaching each exit), and later windows spend
    the difference back.

    **What is not guaranteed.** Accuracy. The scores were learned on the fitting data;
    on drifted traffic they may rank samples less well, and the controller only moves
    the thresholds to hold each exit's share. Nor does it anticipate: it follows the
    traffic of the last ``window`` samples.

    **Why per exit.** Holding each exit to its quota keeps the exit distribution the
    policy was fitted for, whatever the drift does to each exit's scores. One offset
    shared by all exits also holds the cost, but spends it elsewhere: on a stream of
    corrupted Fashion-MNIST images it sent 39 / 12 / 18 / 31% of the samples to the four
    exits of a CNN under the MSDNet rule against quotas of 31 / 27 / 23 / 20%, and lost
    1.1 points of accuracy at the same cost (``benchmarks/drift.py``).

    **The drift test.** After each batch, once ``drift_window`` samples are in the
    window, a chi-square test compares the exits the *fitted* thresholds give on the
    window with the policy's ``exit_fractions_``. It sees drift the controller hides
    (the thresholds absorb it), whether or not the cost moved. Fitted thresholds are
    themselves estimated from a finite fitting set, so with a window much larger than
    that set the test may reject on data like the fitting data. In early-exit inference
    (:meth:`exit_decider`) a sample that left before its fitted exit never computed the
    later exits: the test then pools the exits after the earliest exit at which that
    happened in the window.

    References
    ----------
    .. [1] I. Gibbs and E. Candès, "Adaptive Conformal Inference Under Distribution
       Shift", NeurIPS 2021, arXiv:2106.00170.
    .. [2] A. N. Angelopoulos, E. J. Candès and R. J. Tibshirani, "Conformal PID
       Control for Time Series Prediction", NeurIPS 2023, arXiv:2307.16895.
    .. [3] G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten and K. Q. Weinberger,
       "Multi-Scale Dense Networks for Resource Efficient Image Classification",
       ICLR 2018, arXiv:1703.09844.
    .. [4] F. Ilhan et al., "Adaptive Deep Neural Network Inference Optimization
       with EENet", arXiv:2301.07099, 2023.

    Examples
    --------
    A stream that turns less confident (logits scaled down) runs deeper: the fitted
    policy alone overspends, the controller holds the running mean at the budget.

    >>> import numpy as np
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.online import BudgetController
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=data.costs, budget=0.03)
    >>> policy = policy.fit(data.val_logits, data.val_labels)
    >>> stream = 0.3 * data.test_logits
    >>> bool(policy.expected_cost(stream) > 1.4 * 0.03)  # over the budget by 40% or more
    True
    >>> controller = BudgetController(policy)
    >>> for batch in np.array_split(stream, 100):
    ...     exits = controller.predict_exit(batch)
    >>> round(controller.mean_cost_ / 0.03, 2)
    1.0
    >>> controller.drift_detected_
    True
    """

    def __init__(
        self,
        policy,
        budget=None,
        *,
        step_size=0.002,
        window=1000,
        drift_window=1000,
        drift_alpha=0.001,
        warn_on_drift=False,
    ) -> None:
        if not isinstance(policy, BaseExitPolicy):
            raise TypeError(
                f"policy must be a fitted exit policy (an eenet_sklearn BaseExitPolicy), got "
                f"{describe(policy)} of type {type(policy).__name__}."
            )
        check_is_fitted(policy)
        policy._check_quota_rule("BudgetController")
        costs = np.asarray(policy.costs_, dtype=np.float64)
        if budget is None:
            # A budget above the last exit's cost (allowed in fit) spends as costs[-1] does.
            budget_ = min(float(policy.target_cost_), float(costs[-1]))
        else:
            budget_ = check_budget(budget, costs)
            if budget_ > costs[-1]:
                raise ValueError(
                    f"budget={format_number(budget_)} is above the last exit's cost "
                    f"{format_number(costs[-1])}: no threshold setting spends it; pass a budget "
                    f"within [costs[0], costs[-1]] = {format_values(costs[[0, -1]])}."
                )
        check_scalar(step_size, "step_size", Real, min_val=0, include_boundaries="neither")
        if not np.isfinite(step_size):
            raise ValueError(f"step_size must be finite, got {step_size}.")
        check_scalar(window, "window", Integral, min_val=1)
        check_scalar(drift_window, "drift_window", Integral, min_val=1)
        check_scalar(drift_alpha, "drift_alpha", Real, min_val=0, max_val=1, include_boundaries="neither")
        if not isinstance(warn_on_drift, (bool, np.bool_)):
            raise TypeError(f"warn_on_drift must be True or False, got {describe(warn_on_drift)}.")

        n_exits = int(policy.n_exits_)
        quotas = np.asarray(policy._quota_fractions(budget_), dtype=np.float64)
        self.policy = policy
        self.step_size = float(step_size)
        self.window = int(window)
        self.drift_window = int(drift_window)
        self.drift_alpha = float(drift_alpha)
        self.warn_on_drift = bool(warn_on_drift)
        self.budget_ = budget_
        self.costs_ = costs.copy()
        self.quotas_ = quotas
        self.offsets_ = np.zeros(n_exits, dtype=np.float64)
        self.n_samples_seen_ = 0
        self.drift_pvalue_: float | None = None
        self.drift_detected_ = False
        self._total_cost = 0.0
        self._leave_shares = _leave_shares(quotas)
        self._min_scores = max(1, int(np.ceil(_WARM_UP_SHARE * self.window)))
        # Per exit but the last: the latest scores of the samples that reached it.
        self._scores = [np.empty(0, dtype=np.float64) for _ in range(n_exits - 1)]
        # What the decider saw of the batch in flight: scores per exit, and, for the
        # drift window, how many samples had each fitted exit (known), and how many left
        # at each exit before their fitted exit, which is then unknown.
        self._pending_scores: list[list[np.ndarray]] = [[] for _ in range(n_exits - 1)]
        self._window: deque[tuple[np.ndarray, np.ndarray]] = deque()
        # Their sums over the drift window, kept as batches come and go.
        self._window_known = np.zeros(n_exits, dtype=np.int64)
        self._window_censored = np.zeros(n_exits, dtype=np.int64)
        self._pending_known = np.zeros(n_exits, dtype=np.int64)
        self._pending_censored = np.zeros(n_exits, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(policy={type(self.policy).__name__}(...), "
            f"budget={format_number(self.budget_)}, step_size={format_number(self.step_size)}, "
            f"window={self.window})"
        )

    @property
    def mean_cost_(self) -> float:
        """Running mean cost of the samples recorded so far (``nan`` before any)."""
        return self._total_cost / self.n_samples_seen_ if self.n_samples_seen_ else float("nan")

    @property
    def thresholds_(self) -> np.ndarray:
        """The thresholds the next batch is decided with.

        At exit ``k``: the policy's fitted threshold while fewer than a tenth of
        ``window`` scores were seen there; then the score that a share
        ``q_k + offsets_[k]`` of the recent scores at ``k`` reaches (``-inf`` when
        that share is 1 or more: every sample leaves; ``+inf`` when it is 0 or less:
        none does). The last is ``-inf``.

        Returns
        -------
        ndarray of shape (n_exits,)
            In the policy's score units, comparable with its
            :meth:`~eenet_sklearn.base.BaseExitPolicy.exit_scores`.
        """
        thresholds = np.array(self.policy.thresholds_, dtype=np.float64)
        for k, scores in enumerate(self._scores):
            if scores.size < self._min_scores:
                continue
            share = self._leave_shares[k] + self.offsets_[k]
            if share >= 1.0:
                thresholds[k] = -np.inf
            elif share <= 0.0:
                thresholds[k] = np.inf
            else:
                thresholds[k] = np.quantile(scores, 1.0 - share)
        thresholds[-1] = -np.inf
        return thresholds

    # --- deciding ---------------------------------------------------------------------

    def predict_exit(self, X) -> np.ndarray:
        """Exit of each sample of a batch, then move the thresholds for the next batch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            The batch's per-exit outputs, as the policy's ``predict_exit`` takes them.

        Returns
        -------
        exits : ndarray of shape (n_samples,), dtype int64
            The first exit whose score reaches the current :attr:`thresholds_`.

        Raises
        ------
        ValueError, TypeError
            As the policy's ``predict_exit`` for a bad ``X``.
        """
        return self._run(X, labels=False)[0]

    def predict(self, X, *, return_exits: bool = False):
        """Class label of each sample of a batch at its exit, then move the thresholds.

        Call one of :meth:`predict` and :meth:`predict_exit` per batch: each records the
        batch's cost and moves the thresholds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            The batch's per-exit outputs, as the policy's ``predict`` takes them.
        return_exits : bool, default=False
            Also return the exits.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            The label (from the policy's ``classes_``) predicted at each sample's exit.
        exits : ndarray of shape (n_samples,), dtype int64
            Only with ``return_exits=True``: the exits.

        Raises
        ------
        ValueError, TypeError
            As the policy's ``predict`` for a bad ``X``.
        """
        exits, labels = self._run(X, labels=True)
        return (labels, exits) if return_exits else labels

    def decide_at_exit(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Decide at exit ``k`` from the outputs of exits ``0..k``, with the current thresholds.

        The thresholds do not move here: call :meth:`update` with the batch's exits once
        every sample of the batch has left. Call it at each exit ``k`` with the samples
        of the batch that reached ``k``: their scores at ``k`` then enter the window
        that exit's threshold is set from.

        Parameters
        ----------
        X : array-like of shape (n_samples, k + 1, n_classes)
            Outputs of exits ``0..k`` of the samples still running.

        Returns
        -------
        leaving : ndarray of shape (n_samples,), dtype bool
            Whether each sample leaves at exit ``k`` (always true at the last exit).
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities at exit ``k``.

        Raises
        ------
        ValueError, TypeError
            As the policy's ``decide_at_exit`` for a bad ``X``.
        """
        policy = self.policy
        check_is_fitted(policy)
        outputs = check_exit_prefix(X, policy.n_exits_, policy.n_classes_, policy.input_type)
        decider = _ControlledDecider(self)
        state = decider.initial_state(outputs.shape[0])
        for k in range(outputs.shape[1]):
            last = k == outputs.shape[1] - 1
            leaving, proba, state = decider._decide_recorded(k, outputs[:, k], state, last)
        return leaving, proba

    def exit_decider(self) -> ExitDecider:
        """The policy's incremental decider, with the current thresholds, that feeds the drift test.

        What :func:`~eenet_sklearn.nn.early_exit_predict` drives for a controller: its
        :meth:`~eenet_sklearn.base.ExitDecider.decide` decides as the policy's decider
        does, with :attr:`thresholds_` as they are now, and records the scores of the
        rows at each exit (for the thresholds) and the fitted exits of the rows leaving
        (for the drift test). The thresholds do not move: call :meth:`update` with the
        batch's exits once every sample of the batch has left.

        Returns
        -------
        ExitDecider
            With the extra state ``"fitted_exit"``: the first exit at which each row's
            score reached the policy's fitted threshold (``-1`` while none has).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.exit_decider : The policy's own.
        """
        check_is_fitted(self.policy)
        return _ControlledDecider(self)

    def update(self, exits) -> BudgetController:
        """Record the exits of a batch decided with :meth:`exit_decider`; move the thresholds.

        Every exit's offset moves by the batch's exits. The scores the decider (or
        :meth:`decide_at_exit`) saw at exit ``k`` enter that exit's window when they are
        those of exactly the samples that reached ``k`` (as in
        :func:`~eenet_sklearn.nn.early_exit_predict`); the batch enters the drift test
        when the decider saw each of its samples leave, once. The guarantee on the
        mean cost holds for batches decided with :attr:`thresholds_`.

        Parameters
        ----------
        exits : array-like of shape (n_samples,)
            The exit (0-based) each sample of the batch left at.

        Returns
        -------
        self : BudgetController

        Raises
        ------
        ValueError
            If ``exits`` is not a 1-D array of exit indices in ``[0, n_exits - 1]``.
        TypeError
            If ``exits`` is not integers.
        """
        expected = f"the exit of each sample of the batch, integers in [0, {self.policy.n_exits_ - 1}]"
        values = as_real_array(exits, "exits", expected, allow_bool=False)
        if values.dtype.kind == "f":
            raise TypeError(f"exits must be {expected}, got floats: {describe(values)}.")
        if values.ndim != 1:
            raise ValueError(f"exits must be {expected}, 1-D, got {describe(values)}.")
        if values.size and (values.min() < 0 or values.max() >= self.policy.n_exits_):
            raise ValueError(f"exits must be {expected}, got {format_values(values)}.")
        exits_ = values.astype(np.int64)
        known, censored = self._pending_known, self._pending_censored
        pending, reached = self._pending_scores, self._reached(exits_)
        n_exits = self.policy.n_exits_
        self._pending_known = np.zeros(n_exits, dtype=np.int64)
        self._pending_censored = np.zeros(n_exits, dtype=np.int64)
        self._pending_scores = [[] for _ in range(n_exits - 1)]
        scores = [
            np.concatenate(seen) if seen and sum(map(len, seen)) == count else None
            for seen, count in zip(pending, reached, strict=False)
        ]
        drift = (known, censored) if known.sum() + censored.sum() == values.size else None
        self._step(exits_, scores, drift)
        return self

    # --- internals --------------------------------------------------------------------

    def _reached(self, exits: np.ndarray) -> np.ndarray:
        """How many of the samples reached each exit."""
        left = np.bincount(exits, minlength=self.policy.n_exits_)
        return np.cumsum(left[::-1])[::-1]

    def _run(self, X, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Decide a whole batch from every exit's outputs, record it, move the thresholds."""
        policy = self.policy
        outputs = check_exit_outputs(
            X, policy.n_exits_, policy.n_classes_, policy.input_type, type(self).__name__
        )
        # The policy's decider with the current thresholds (from past batches only: no
        # row's decision depends on another's); the scores, for the fitted exits.
        decider = ExitDecider(policy, self.thresholds_)
        scores = policy._decide_outputs(outputs, "scores", decider)
        fitted_exits = assign_exits(scores, np.asarray(policy.thresholds_, dtype=np.float64))
        exits = assign_exits(scores, decider.thresholds)
        predicted = None
        if labels:
            predicted = policy.classes_[policy._decide_outputs(outputs, "labels", decider)]
        known = np.bincount(fitted_exits, minlength=policy.n_exits_)
        # Each exit's window takes the scores of the samples that reached it.
        reached = [scores[exits >= k, k] for k in range(policy.n_exits_ - 1)]
        self._step(exits, reached, (known, np.zeros(policy.n_exits_, dtype=np.int64)))
        return exits, predicted

    def _step(
        self,
        exits: np.ndarray,
        scores: list[np.ndarray | None],
        drift: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """Record a batch: the running cost, the offsets, the windows of scores, the drift window."""
        if exits.size == 0:
            return
        left = np.bincount(exits, minlength=self.policy.n_exits_)
        reached = np.cumsum(left[::-1])[::-1]
        # Adaptive conformal inference's update, per exit, on the share leaving.
        self.offsets_ += self.step_size * (self._leave_shares * reached - left)
        self.offsets_[-1] = 0.0  # every sample reaching the last exit leaves there
        self._total_cost += float(self.costs_[exits].sum())
        self.n_samples_seen_ += int(exits.size)
        for k, new in enumerate(scores):
            if new is not None and new.size:
                self._scores[k] = np.concatenate([self._scores[k], new])[-self.window :]
        if drift is not None:
            self._window.append(drift)
            self._window_known += drift[0]
            self._window_censored += drift[1]
            self._test_drift()

    def _test_drift(self) -> None:
        """Chi-square test of the window's fitted exits against the policy's ``exit_fractions_``."""
        size = int(self._window_known.sum() + self._window_censored.sum())
        while len(self._window) > 1:
            first_known, first_censored = self._window[0]
            first = int(first_known.sum() + first_censored.sum())
            if size - first < self.drift_window:
                break
            self._window.popleft()
            self._window_known -= first_known
            self._window_censored -= first_censored
            size -= first
        if size < self.drift_window:
            return
        known, censored = self._window_known.copy(), self._window_censored.copy()
        expected = np.asarray(self.policy.exit_fractions_, dtype=np.float64)
        # Samples that left at k before their fitted exit had a fitted exit after k:
        # pool the exits after the earliest such k.
        observed = known
        if censored.any():  # never at the last exit, where every sample reaches its fitted exit
            cut = int(np.flatnonzero(censored)[0]) + 1
            observed = np.append(known[:cut], known[cut:].sum() + censored.sum())
            expected = np.append(expected[:cut], expected[cut:].sum())
        pvalue = _chisquare_pvalue(observed, expected)
        was_detected = self.drift_detected_
        self.drift_pvalue_ = pvalue
        self.drift_detected_ = pvalue < self.drift_alpha
        if self.drift_detected_ and not was_detected and self.warn_on_drift:
            shares = format_values(np.round(100 * observed / observed.sum(), 1))
            fitted = format_values(np.round(100 * expected / expected.sum(), 1))
            warnings.warn(
                f"drift: over the last {int(observed.sum())} samples, the fitted thresholds would "
                f"send {shares} % of the samples to the exits, against {fitted} % on the fitting "
                f"data (chi-square p = {pvalue:.3g} < drift_alpha={format_number(self.drift_alpha)}). "
                "The controller keeps holding the mean cost, not the accuracy: consider refitting "
                "the policy on labelled recent data, or recalibrate() on recent traffic.",
                DriftWarning,
                stacklevel=4,
            )


def _leave_shares(quotas: np.ndarray) -> np.ndarray:
    """Share of the samples reaching each exit that should leave there, for exit quotas.

    ``quotas[k] / sum(quotas[k:])``; 1 where no quota is left from ``k`` on (a sample
    reaching such an exit is one too many: it leaves as soon as it can) and at the last.
    """
    tail = np.cumsum(quotas[::-1])[::-1]
    shares = np.divide(quotas, tail, out=np.ones_like(quotas), where=tail > 0)
    shares = np.clip(shares, 0.0, 1.0)
    shares[-1] = 1.0
    return shares


def _chisquare_pvalue(observed: np.ndarray, expected: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of counts against expected fractions.

    A sample in a cell the reference gives probability 0 rejects outright (p = 0);
    cells both empty and impossible are left out.
    """
    impossible = expected <= 0
    if observed[impossible].sum() > 0:
        return 0.0
    observed, expected = observed[~impossible], expected[~impossible]
    if observed.size < 2:
        return 1.0
    expected = expected / expected.sum() * observed.sum()
    # Pearson's statistic and its chi-square tail (scipy.stats.chisquare's, without the
    # overhead of its argument handling: this runs after every batch).
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return float(chdtrc(observed.size - 1, statistic))


class _ControlledDecider(ExitDecider):
    """A policy's decider with a controller's thresholds, recording what its drift test needs."""

    def __init__(self, controller: BudgetController) -> None:
        super().__init__(controller.policy, controller.thresholds_)
        self._controller = controller
        self._fitted = np.asarray(controller.policy.thresholds_, dtype=np.float64)
        self.state_names = (*self.state_names, "fitted_exit")

    def initial_state(self, n_samples: int) -> State:
        state = super().initial_state(n_samples)
        state["fitted_exit"] = np.full(n_samples, -1, dtype=np.int64)
        return state

    def decide(self, k, outputs_k, state):
        k = self._check_exit(k)
        outputs = self._check_outputs(outputs_k)
        self._check_state(state, outputs.shape[0])
        return self._decide_recorded(k, outputs, state, True)

    def _decide_recorded(
        self, k: int, outputs: np.ndarray, state, record: bool
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """Decide validated exit-``k`` outputs; with ``record``, keep the rows' scores for
        exit ``k``'s window and count the leaving rows' fitted exits."""
        fitted_exit = state["fitted_exit"]
        scores, proba, state = self._score(k, outputs, state)
        assert proba is not None  # the probabilities are asked for
        leave = self._leave(k, scores)
        controller = self._controller
        reached = (fitted_exit < 0) & (scores >= self._fitted[k])  # fitted[-1] = -inf
        state["fitted_exit"] = np.where(reached, k, fitted_exit)
        if record:
            if k < len(controller._pending_scores):  # the window of exit k's scores
                controller._pending_scores[k].append(np.array(scores, dtype=np.float64))
            # The fitted exit of the rows leaving now, where the outputs seen tell it.
            known = state["fitted_exit"][leave]
            controller._pending_known += np.bincount(
                known[known >= 0], minlength=controller.policy.n_exits_
            )
            controller._pending_censored[k] += int((known < 0).sum())
        return leave, proba, state

"""Online budget control: hold the mean cost per sample of a fitted policy on a drifting stream.

A fitted policy's thresholds spend its budget on data like the fitting data. When the
traffic drifts (harder inputs run deeper, easier ones shallower), the same thresholds
spend more or less. :class:`BudgetController` wraps a fitted quota policy, decides batch
by batch as the policy does, and after each batch moves all its thresholds by one offset,
with the update rule of adaptive conformal inference, so that the running mean cost
converges to the budget on any sequence of batches. It also tests whether the traffic
has drifted from the fitting data, and can say so with a :class:`DriftWarning`.
"""

from __future__ import annotations

import warnings
from collections import deque
from numbers import Integral, Real

import numpy as np
from scipy.special import expit, logit
from scipy.stats import chisquare
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

#: Probabilities closer than this to 0 or 1 are clipped before the logit on the "logit"
#: scale, which bounds that scale to ``[-_LOGIT_BOUND, _LOGIT_BOUND]`` (about 27.6).
_LOGIT_EPS = 1e-12
_LOGIT_BOUND = float(logit(1.0 - _LOGIT_EPS))


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
    exit whose score reaches its threshold), with every threshold moved by one offset
    ``offset_`` on the policy's score scale (the logit of the score for policies whose
    scores are probabilities, EENet's and a classifier's, the score itself for the
    log-odds-like confidences). With ``offset_ = 0`` the decisions are the policy's,
    exactly. After each batch the offset moves by the quantile-tracking rule of adaptive
    conformal inference [1]_,

    ``offset_ <- offset_ + step_size * sum_i (cost_i - budget) / (costs_[-1] - costs_[0])``,

    summed over the batch's samples: a batch that overspends lowers the thresholds (more
    samples leave early), one that underspends raises them. A batch is decided with what
    the batches before it taught the controller: no sample's decision depends on the other
    samples of its batch.

    Parameters
    ----------
    policy : fitted MaxProbPolicy, EntropyPolicy, LearnedScorePolicy or EarlyExitPolicy
        A policy whose thresholds are quotas of an exit score. It is not modified;
        the controller reads its ``thresholds_`` at every batch (so a later
        :meth:`~eenet_sklearn.base.BaseExitPolicy.recalibrate` is picked up).
    budget : float, default=None
        Mean cost per sample to hold, in the unit of ``policy.costs_``, within
        ``[costs_[0], costs_[-1]]``. ``None``: ``policy.target_cost_``, what the
        fitted thresholds spend on the fitting data.
    step_size : float, default=0.01
        How far the offset moves per sample, in units of the score scale per unit of
        normalised excess cost. A batch of ``n`` samples moves it by at most
        ``step_size * n``; the controller reacts to a change of traffic within about
        ``1 / step_size`` to ``10 / step_size`` samples. Larger values react faster
        but make the thresholds (and the cost of single batches) jitter; keep
        ``step_size * batch_size`` around 2 or below.
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
    offset_ : float
        The current offset of the thresholds on the score scale; positive means
        lowered (cheaper), negative raised. Starts at 0.
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
        scores to shift), or a number has the wrong type.
    ValueError
        If ``budget`` is not finite or lies outside ``[costs_[0], costs_[-1]]``,
        ``step_size`` is not positive and finite, ``drift_window`` is below 1 or
        ``drift_alpha`` is outside ``(0, 1)``.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.recalibrate : New thresholds from a sample of
        unlabeled traffic, once.
    eenet_sklearn.nn.early_exit_predict : Accepts a controller in place of a policy.

    Notes
    -----
    **What is guaranteed.** Since the offset starts at 0, after ``N`` samples

    ``mean_cost_ - budget_ = (costs_[-1] - costs_[0]) * offset_ / (step_size * N)``

    exactly. The offset stays bounded: once the thresholds are low enough that every
    sample leaves at exit 0, batches cost ``costs_[0] <= budget_`` and the offset can
    only come down; once they are high enough that every sample runs to the last exit,
    it can only go up. On the logit scale this bounds ``|offset_|`` by ``2 * 27.6 +
    step_size * (largest batch)``; on the linear scale by the range of the scores seen
    plus the same term, finite on any stream of bounded scores (the condition of [1]_).
    So the running mean cost converges to the budget at rate ``1 / N`` on *any*
    sequence of batches, adversarial ones included, whatever the drift. What is held is
    the running mean over all samples, not the cost of each batch or window: after a
    sudden change, windows spend more (or less) for about ``1 / step_size`` samples
    while the offset catches up, and later windows spend the difference back.

    **What is not guaranteed.** Accuracy. The scores were learned on the fitting data;
    on drifted traffic they may rank samples less well, and the controller only moves
    the thresholds to hold the cost. Nor is the offset that holds the cost on one kind
    of traffic right for the next: the controller follows, it does not anticipate.

    **The drift test.** After each batch, once ``drift_window`` samples are in the
    window, a chi-square test compares the exits the *fitted* thresholds (offset 0)
    give on the window with the policy's ``exit_fractions_``. It sees drift the cost
    controller hides (the offset absorbs it), whether or not the cost moved. Fitted
    thresholds are themselves estimated from a finite fitting set, so with a window
    much larger than that set the test may reject on data like the fitting data. In
    early-exit inference (:meth:`exit_decider`) a sample that left before its fitted
    exit never computed the later exits: the test then pools the exits after the
    earliest exit at which that happened in the window.

    References
    ----------
    .. [1] I. Gibbs and E. Candès, "Adaptive Conformal Inference Under Distribution
       Shift", NeurIPS 2021, arXiv:2106.00170.

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
        step_size=0.01,
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
        check_scalar(drift_window, "drift_window", Integral, min_val=1)
        check_scalar(drift_alpha, "drift_alpha", Real, min_val=0, max_val=1, include_boundaries="neither")
        if not isinstance(warn_on_drift, (bool, np.bool_)):
            raise TypeError(f"warn_on_drift must be True or False, got {describe(warn_on_drift)}.")

        self.policy = policy
        self.step_size = float(step_size)
        self.drift_window = int(drift_window)
        self.drift_alpha = float(drift_alpha)
        self.warn_on_drift = bool(warn_on_drift)
        self.budget_ = budget_
        self.costs_ = costs.copy()
        self.offset_ = 0.0
        self.n_samples_seen_ = 0
        self.drift_pvalue_: float | None = None
        self.drift_detected_ = False
        self._total_cost = 0.0
        n_exits = policy.n_exits_
        # Scores seen so far, per exit: the range of the "linear" scale.
        self._low = np.full(n_exits, np.inf)
        self._high = np.full(n_exits, -np.inf)
        # Per batch in the drift window: how many samples had each fitted exit (known), and
        # how many left at each exit before their fitted exit, which is then unknown.
        self._window: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._pending_known = np.zeros(n_exits, dtype=np.int64)
        self._pending_censored = np.zeros(n_exits, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(policy={type(self.policy).__name__}(...), "
            f"budget={format_number(self.budget_)}, step_size={format_number(self.step_size)})"
        )

    @property
    def mean_cost_(self) -> float:
        """Running mean cost of the samples recorded so far (``nan`` before any)."""
        return self._total_cost / self.n_samples_seen_ if self.n_samples_seen_ else float("nan")

    @property
    def thresholds_(self) -> np.ndarray:
        """The thresholds the next batch is decided with: the policy's, moved by ``offset_``.

        Returns
        -------
        ndarray of shape (n_exits,)
            In the policy's score units, comparable with its
            :meth:`~eenet_sklearn.base.BaseExitPolicy.exit_scores`.
        """
        return self._shifted(np.asarray(self.policy.thresholds_, dtype=np.float64))

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

        What :func:`~eenet_sklearn.nn.early_exit_predict` calls after each stage. The
        thresholds do not move here: call :meth:`update` with the batch's exits once
        every sample of the batch has left.

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
        does, with :attr:`thresholds_` as they are now, and records what the drift test
        needs of the samples leaving. The thresholds do not move: call :meth:`update`
        with the batch's exits once every sample of the batch has left.

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

        The batch enters the drift test when the decider (or :meth:`decide_at_exit`)
        saw each of its samples leave, once (as in
        :func:`~eenet_sklearn.nn.early_exit_predict`); otherwise only its cost is recorded.

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
        known, censored = self._pending_known, self._pending_censored
        n_exits = self.policy.n_exits_
        self._pending_known = np.zeros(n_exits, dtype=np.int64)
        self._pending_censored = np.zeros(n_exits, dtype=np.int64)
        drift = (known, censored) if known.sum() + censored.sum() == values.size else None
        self._step(values.astype(np.int64), drift)
        return self

    # --- internals --------------------------------------------------------------------

    def _run(self, X, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Decide a whole batch from every exit's outputs, record it, move the offset."""
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
        self._observe(scores)
        predicted = None
        if labels:
            predicted = policy.classes_[policy._decide_outputs(outputs, "labels", decider)]
        known = np.bincount(fitted_exits, minlength=policy.n_exits_)
        self._step(exits, (known, np.zeros(policy.n_exits_, dtype=np.int64)))
        return exits, predicted

    def _observe_exit(self, k: int, scores: np.ndarray) -> None:
        """Widen the range of scores seen at exit ``k``."""
        if scores.shape[0]:
            self._low[k] = min(self._low[k], scores.min())
            self._high[k] = max(self._high[k], scores.max())

    def _observe(self, scores: np.ndarray) -> None:
        """Widen the range of scores seen at each exit (the bounds of the "linear" scale)."""
        if scores.shape[0]:
            k = scores.shape[1]
            np.minimum(self._low[:k], scores.min(axis=0), out=self._low[:k])
            np.maximum(self._high[:k], scores.max(axis=0), out=self._high[:k])

    def _shifted(self, thresholds: np.ndarray) -> np.ndarray:
        """``thresholds`` moved by ``-offset_`` on the policy's score scale.

        A threshold of ``+inf`` (nobody leaves) or ``-inf`` (everybody leaves) sits at
        the top or bottom of the scale, so that a large enough offset opens or closes
        that exit too. The last exit keeps ``-inf``.
        """
        if self.offset_ == 0.0:
            return thresholds.copy()
        if self.policy._score_scale == "logit":
            low = np.full(thresholds.shape, -_LOGIT_BOUND)
            high = np.full(thresholds.shape, _LOGIT_BOUND)
            with np.errstate(divide="ignore"):
                scaled = logit(np.clip(thresholds, _LOGIT_EPS, 1.0 - _LOGIT_EPS))
        else:
            # The scale's ends at each exit: the scores seen there and its finite threshold.
            # Where no score was seen yet the scale is open-ended, and an infinite threshold
            # stays as it is.
            seen = np.isfinite(self._low)
            finite = np.where(np.isfinite(thresholds), thresholds, np.nan)
            low = np.where(seen, np.fmin(self._low, finite), -np.inf)
            high = np.where(seen, np.fmax(self._high, finite), np.inf)
            scaled = thresholds.copy()
        scaled = np.where(thresholds == np.inf, high, scaled)
        scaled = np.where(thresholds == -np.inf, low, scaled)
        moved = scaled - self.offset_
        shifted = expit(moved) if self.policy._score_scale == "logit" else moved
        # Past the ends of the scale the exit is shut, or open to all.
        shifted = np.where(moved > high, np.inf, shifted)
        shifted = np.where(moved < low, -np.inf, shifted)
        shifted[-1] = -np.inf
        return shifted

    def _step(self, exits: np.ndarray, drift: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Record a batch's exits: the running cost, the offset, the drift window."""
        if exits.size == 0:
            return
        spent = float(self.costs_[exits].sum())
        excess = spent - exits.size * self.budget_
        self.offset_ += self.step_size * excess / (self.costs_[-1] - self.costs_[0])
        self._total_cost += spent
        self.n_samples_seen_ += int(exits.size)
        if drift is not None:
            self._window.append(drift)
            self._test_drift()

    def _test_drift(self) -> None:
        """Chi-square test of the window's fitted exits against the policy's ``exit_fractions_``."""
        sizes = [int(known.sum() + censored.sum()) for known, censored in self._window]
        while len(self._window) > 1 and sum(sizes) - sizes[0] >= self.drift_window:
            self._window.popleft()
            sizes.pop(0)
        if sum(sizes) < self.drift_window:
            return
        known = np.sum([batch[0] for batch in self._window], axis=0)
        censored = np.sum([batch[1] for batch in self._window], axis=0)
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
    return float(chisquare(observed, expected).pvalue)


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
        """Decide validated exit-``k`` outputs; with ``record``, count the leaving rows' fitted exits."""
        fitted_exit = state["fitted_exit"]
        scores, proba, state = self._score(k, outputs, state)
        leave = self._leave(k, scores)
        controller = self._controller
        controller._observe_exit(k, scores)
        reached = (fitted_exit < 0) & (scores >= self._fitted[k])  # fitted[-1] = -inf
        state["fitted_exit"] = np.where(reached, k, fitted_exit)
        if record:
            # The fitted exit of the rows leaving now, where the outputs seen tell it.
            known = state["fitted_exit"][leave]
            controller._pending_known += np.bincount(
                known[known >= 0], minlength=controller.policy.n_exits_
            )
            controller._pending_censored[k] += int((known < 0).sum())
        return leave, proba, state

"""Anytime ensembles: the prediction at exit ``k`` combines the outputs of exits ``0..k``.

:class:`AnytimeEnsemble` wraps any exit policy. At exit ``k`` it replaces exit ``k``'s
logits by the *ensembled logits*

.. math::

    z_k = \\sum_{j \\le k} w_{kj} \\, \\max(\\log \\mathrm{softmax}(x_j), \\log t),

a weighted geometric mean of the probabilities of exits ``0..k`` (``softmax(z_k)``,
with ``t`` the smallest normal float64: a probability of 0 counts as ``t``, so that no
``0 * log 0`` term is undefined). The weights ``W`` form a nonnegative lower-triangular
``(n_exits, n_exits)`` matrix: causal by construction, exit ``k`` never reads an exit
after ``k``. The wrapped policy is fitted on the ensembled logits, so its exit scores
(EENet's scorer, a confidence threshold) and its predictions read them, as in MSDNet's
reference code [1]_, Zero Time Waste [2]_ and product anytime ensembles [3]_.

Incremental decisions carry the running weighted sums in the decider's state: after
exit ``k``, ``sums[:, m] = sum_{j <= k} W[m, j] * log_p_j`` for every exit ``m``, an
``(n_rows, n_exits, n_classes)`` float64 array (``"ensemble_sums"``), and exit ``k``
reads ``sums[:, k]``, complete once exit ``k`` is added. Every value of a row is
computed from that row alone, in float64, in the same order in fitting, prediction, the
decider and the ONNX graphs.

References
----------
.. [1] G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten and K. Q. Weinberger,
   "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018,
   arXiv:1703.09844.
.. [2] M. Wołczyk, B. Wójcik, K. Bałazy, I. Podolak, J. Tabor, M. Śmieja and
   T. Trzciński, "Zero Time Waste: Recycling Predictions in Early Exit Neural
   Networks", NeurIPS 2021, arXiv:2106.05409.
.. [3] M. Jazbec, J. U. Allingham, D. Zhang and E. Nalisnick, "Towards Anytime
   Classification in Early-Exit Architectures by Enforcing Conditional Monotonicity",
   NeurIPS 2023, arXiv:2306.02652.
"""

from __future__ import annotations

import copy
from numbers import Real

import numpy as np
from scipy.optimize import minimize
from sklearn.base import MetaEstimatorMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._features import exit_log_proba, exit_predictions, exit_proba, exit_step_inputs
from ._validation import (
    as_real_array,
    check_costs,
    check_exit_outputs,
    check_input_type,
    check_target,
    describe,
    encode_labels,
    format_values,
)
from .base import BaseExitPolicy, _warn_overrides

__all__ = ["AnytimeEnsemble", "anytime_logits", "fit_anytime_weights", "uniform_anytime_weights"]

#: The state name of the running weighted sums in the decider and the ONNX graphs.
SUMS = "ensemble_sums"
#: Log-probabilities are floored here (the log of the smallest normal float64, -708.4):
#: a probability of 0 counts as 2.2e-308, so that a zero weight times it is 0, not NaN.
LOG_FLOOR = float(np.log(np.finfo(np.float64).tiny))


def uniform_anytime_weights(n_exits: int) -> np.ndarray:
    """Equal weights ``1 / (k + 1)`` on exits ``0..k``: the geometric mean of their probabilities.

    Parameters
    ----------
    n_exits : int
        Number of exits, ``>= 1``.

    Returns
    -------
    weights : ndarray of shape (n_exits, n_exits), float64
        Lower-triangular: row ``k`` holds ``1 / (k + 1)`` in columns ``0..k``.

    See Also
    --------
    AnytimeEnsemble : Uses them with ``weights="uniform"``.

    Examples
    --------
    >>> from eenet_sklearn._anytime import uniform_anytime_weights
    >>> uniform_anytime_weights(3).round(3).tolist()
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.333, 0.333, 0.333]]
    """
    rows = np.arange(1, n_exits + 1, dtype=np.float64)
    return np.tril(np.ones((n_exits, n_exits))) / rows[:, None]


def _floored(log_proba: np.ndarray) -> np.ndarray:
    return np.maximum(log_proba, LOG_FLOOR)


def _step_sums(sums: np.ndarray, weights: np.ndarray, k: int, log_proba_k: np.ndarray) -> np.ndarray:
    """The running sums after exit ``k``: ``sums + W[:, k] * floor(log_p_k)`` for every exit (new array).

    ``sums`` ``(n, K, C)``, ``log_proba_k`` ``(n, C)``, float64. Elementwise: one product and
    one sum per value, in exit order, the same in every path (ONNX's ``Mul`` then ``Add``).
    """
    term = weights[None, :, k, None] * _floored(log_proba_k)[:, None, :]
    return sums + term


def anytime_logits(log_proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ensembled logits of every exit, ``z_k = sum_{j <= k} W[k, j] * floor(log_p_j)``.

    Parameters
    ----------
    log_proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class log-probabilities (``-inf`` allowed for probabilities of 0:
        they are floored at :data:`LOG_FLOOR`).
    weights : ndarray of shape (n_exits, n_exits)
        Nonnegative, lower-triangular (validated by the caller).

    Returns
    -------
    logits : ndarray of shape (n_samples, n_exits, n_classes), float64
        Finite; ``softmax(logits[:, k])`` is the weighted geometric mean of the
        probabilities of exits ``0..k``, normalised. Row by row, the values
        :meth:`AnytimeEnsemble.exit_decider` computes, bit for bit.
    """
    n_samples, n_exits, n_classes = log_proba.shape
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    sums = np.zeros((n_samples, n_exits, n_classes), dtype=np.float64)
    logits = np.empty_like(sums)
    for k in range(n_exits):
        sums = _step_sums(sums, weights, k, np.asarray(log_proba[:, k], dtype=np.float64))
        logits[:, k] = sums[:, k]
    return logits


def _row_objective(
    w: np.ndarray, lp: np.ndarray, rows: np.ndarray, columns: np.ndarray, prior: np.ndarray, strength: float
) -> tuple[float, np.ndarray]:
    """Mean NLL of ``softmax(lp @ w)`` plus ``strength * ||w - prior||^2``, and its gradient."""
    z = np.einsum("njc,j->nc", lp, w)
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    nll = float(np.mean(log_norm - z[rows, columns]))
    residual = np.exp(z - log_norm[:, None])
    residual[rows, columns] -= 1.0
    gradient = np.einsum("nc,njc->j", residual, lp) / len(rows)
    gap = w - prior
    return nll + strength * float(gap @ gap), gradient + 2.0 * strength * gap


def fit_anytime_weights(log_proba: np.ndarray, columns: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Anytime-ensemble weights that minimise each exit's penalised negative log-likelihood.

    Row ``k`` of the weights minimises, over ``w >= 0`` (exits ``0..k``),

    ``mean_i -log softmax(sum_j w_j floor(log_p_ij))[y_i] + (alpha / n) ||w - e_k||^2``,

    with L-BFGS-B from ``e_k`` (exit ``k`` alone). The penalty is a Gaussian prior
    centred on the plain exit, worth ``alpha`` samples whatever ``n``: with few fitting
    samples the weights stay near exit ``k`` alone, with many the data decide. ``w_kk``
    also acts as an inverse temperature (the weights need not sum to 1).

    Parameters
    ----------
    log_proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class log-probabilities of the fitting data.
    columns : ndarray of shape (n_samples,), int
        Each sample's true class column.
    alpha : float, default=1.0
        Strength of the prior on exit ``k`` alone, in samples, ``>= 0``.

    Returns
    -------
    weights : ndarray of shape (n_exits, n_exits), float64
        Nonnegative, lower-triangular.

    See Also
    --------
    AnytimeEnsemble : Fits them with ``weights="fit"``.
    """
    n_samples, n_exits, _ = log_proba.shape
    lp = _floored(np.asarray(log_proba, dtype=np.float64))
    rows = np.arange(n_samples)
    columns = np.asarray(columns, dtype=np.int64)
    strength = float(alpha) / n_samples
    weights = np.zeros((n_exits, n_exits), dtype=np.float64)
    for k in range(n_exits):
        prior = np.zeros(k + 1)
        prior[k] = 1.0
        result = minimize(
            _row_objective,
            prior,
            args=(np.ascontiguousarray(lp[:, : k + 1]), rows, columns, prior, strength),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * (k + 1),
        )
        found = np.maximum(result.x, 0.0)
        # Keep the plain exit if the optimiser did not improve on it (or a row is all zero).
        start = _row_objective(prior, lp[:, : k + 1], rows, columns, prior, strength)[0]
        end = _row_objective(found, lp[:, : k + 1], rows, columns, prior, strength)[0]
        weights[k, : k + 1] = found if found.any() and np.isfinite(end) and end <= start else prior
    return weights


def _check_weight_matrix(value: object, n_exits: int, name: str = "weights") -> np.ndarray:
    """A user's weight matrix as float64, checked: ``(n_exits, n_exits)``, lower-triangular, >= 0."""
    expected = f'"fit", "uniform" or a nonnegative lower-triangular ({n_exits}, {n_exits}) array'
    array = np.array(as_real_array(value, name, expected), dtype=np.float64)
    if array.shape != (n_exits, n_exits):
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}.")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(
            f"{name} must be {expected}, got negative or non-finite values: {format_values(array)}."
        )
    if np.any(np.triu(array, 1) != 0):
        raise ValueError(
            f"{name} must be {expected}: exit k may only weigh exits 0..k (causal), got nonzero "
            f"entries above the diagonal in rows {np.flatnonzero(np.triu(array, 1).any(axis=1)).tolist()}."
        )
    empty = np.flatnonzero(~(array > 0).any(axis=1))
    if len(empty):
        raise ValueError(
            f"{name} must be {expected} with a positive entry in each row; rows {empty.tolist()} are all 0."
        )
    return array


class AnytimeEnsemble(MetaEstimatorMixin, BaseExitPolicy):
    """Any exit policy on anytime-ensembled outputs: exit ``k`` predicts from exits ``0..k``.

    The prediction at exit ``k`` is the weighted geometric mean of the probabilities of
    exits ``0..k`` (ensembled logits ``z_k = sum_{j <= k} W[k, j] log softmax(x_j)``),
    and the wrapped policy (a clone, ``policy_``) is fitted on the ensembled logits:
    its exit scores (EENet's scorer features, a confidence threshold, a patience run)
    and its labels and probabilities read them. Earlier exits are not thrown away
    (MSDNet's reference code [1]_, Zero Time Waste [2]_, product anytime ensembles
    [3]_), which raises the accuracy of the later exits and of the policy on networks
    whose exits are diverse; ``benchmarks/results/anytime_ensembles.md`` measures it.

    The ensemble is causal (exit ``k`` reads exits ``0..k`` only), so it works in
    early-exit inference (:meth:`exit_decider`, :func:`~eenet_sklearn.nn.early_exit_predict`),
    with :class:`~eenet_sklearn.online.BudgetController`, :func:`~eenet_sklearn.save_policy`
    and :func:`~eenet_sklearn.export_onnx`; a sample's decisions never depend on the other
    rows of a call.

    Parameters
    ----------
    policy : BaseExitPolicy, default=None
        The policy to wrap (unfitted; a clone is fitted). ``None``:
        ``EarlyExitPolicy()``. Its ``input_type`` is ignored (it reads the ensembled
        logits); its ``costs``, ``budget`` and ``classes`` are used where this
        estimator's are ``None``.
    weights : {"fit", "uniform"} or array-like of shape (n_exits, n_exits), default="fit"
        ``"fit"``: per exit, the nonnegative weights of exits ``0..k`` that minimise
        the negative log-likelihood of the fitting labels, with a prior on exit ``k``
        alone worth ``alpha`` samples (:func:`fit_anytime_weights`). ``"uniform"``:
        ``1 / (k + 1)`` on each of exits ``0..k``, the geometric mean of their
        probabilities. An array: those weights, nonnegative and lower-triangular,
        each row with a positive entry (one-hot rows on the diagonal give the plain
        policy back).
    alpha : float, default=1.0
        With ``weights="fit"``: the prior's strength, in samples (see
        :func:`fit_anytime_weights`); ``0`` for plain maximum likelihood.
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit; ``None``: the wrapped policy's.
    budget : float, default=None
        Average cost per sample allowed, in the unit of ``costs``; ``None``: the
        wrapped policy's.
    input_type : {"logits", "proba"}, default="logits"
        What ``X`` holds: each exit's logits, or its probabilities.
    classes : array-like of shape (n_classes,), default=None
        Label of each class column; ``None``: the wrapped policy's, or the sorted
        labels of ``y``.

    Attributes
    ----------
    policy_ : BaseExitPolicy
        The wrapped policy fitted on the ensembled logits of the fitting data (its
        ``input_type`` is ``"logits"``).
    weights_ : ndarray of shape (n_exits, n_exits)
        The ensemble weights: row ``k`` weighs the log-probabilities of exits ``0..k``.
    thresholds_, exit_fractions_, costs_, budget_, target_cost_, classes_ : ndarray or float
        ``policy_``'s.
    n_exits_, n_classes_, n_features_in_ : int
        Of the fitting data.

    See Also
    --------
    eenet_sklearn.metrics.oracle_accuracy : With ``weights=weights_``, the bound for
        the predictions this ensemble can make.
    eenet_sklearn.EarlyExitPolicy : The default policy wrapped.

    Notes
    -----
    The running sums are carried from exit to exit (state ``"ensemble_sums"``, shape
    ``(n_rows, n_exits, n_classes)``): after exit ``k``, column ``m`` holds
    ``sum_{j <= k} W[m, j] log_p_j``, and exit ``k`` reads column ``k``. Probabilities
    of 0 count as the smallest normal float64 (a log-probability floor of ``-708.4``).

    References
    ----------
    .. [1] G. Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image
       Classification", ICLR 2018, arXiv:1703.09844.
    .. [2] M. Wołczyk et al., "Zero Time Waste: Recycling Predictions in Early Exit
       Neural Networks", NeurIPS 2021, arXiv:2106.05409.
    .. [3] M. Jazbec et al., "Towards Anytime Classification in Early-Exit
       Architectures by Enforcing Conditional Monotonicity", NeurIPS 2023,
       arXiv:2306.02652.

    Examples
    --------
    Two exits, uniform weights: exit 1 predicts from the mean of the two exits'
    log-probabilities.

    >>> import numpy as np
    >>> from eenet_sklearn import AnytimeEnsemble, FixedExitPolicy
    >>> X = np.log([[[0.9, 0.1], [0.4, 0.6]],
    ...             [[0.2, 0.8], [0.3, 0.7]]])
    >>> policy = AnytimeEnsemble(FixedExitPolicy(exit=1), weights="uniform", costs=[1.0, 2.0])
    >>> policy = policy.fit(X, [0, 1])
    >>> policy.predict(X)  # sample 0: sqrt(0.9 * 0.4) = 0.6 > sqrt(0.1 * 0.6) = 0.245
    array([0, 1])
    >>> policy.predict_proba(X)[0].round(3)
    array([0.71, 0.29])
    """

    def __init__(
        self,
        policy=None,
        *,
        weights="fit",
        alpha=1.0,
        costs=None,
        budget=None,
        input_type="logits",
        classes=None,
    ):
        self.policy = policy
        self.weights = weights
        self.alpha = alpha
        self.costs = costs
        self.budget = budget
        self.input_type = input_type
        self.classes = classes

    # --- fitting --------------------------------------------------------------------

    def _base_policy(self) -> BaseExitPolicy:
        if self.policy is None:
            from ._eenet import EarlyExitPolicy

            return EarlyExitPolicy()
        if not isinstance(self.policy, BaseExitPolicy) or isinstance(self.policy, AnytimeEnsemble):
            raise TypeError(
                "policy must be an eenet_sklearn exit policy (EarlyExitPolicy, MaxProbPolicy, ...; "
                f"not an AnytimeEnsemble), got {describe(self.policy)}."
            )
        return self.policy

    def _check_alpha(self) -> float:
        alpha = self.alpha
        if not isinstance(alpha, Real) or isinstance(alpha, bool):
            raise TypeError(f"alpha must be a real number >= 0, got {describe(alpha)}.")
        value = float(alpha)
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}.")
        return value

    def _resolve_weights(self, log_proba: np.ndarray, columns: np.ndarray, alpha: float) -> np.ndarray:
        n_exits = log_proba.shape[1]
        if isinstance(self.weights, str):
            if self.weights == "uniform":
                return uniform_anytime_weights(n_exits)
            if self.weights == "fit":
                return fit_anytime_weights(log_proba, columns, alpha)
            raise ValueError(
                f'weights must be "fit", "uniform" or a ({n_exits}, {n_exits}) array, got {self.weights!r}.'
            )
        return _check_weight_matrix(self.weights, n_exits)

    def fit(self, X, y, costs=None, budget=None):
        """Fit the ensemble weights, then the wrapped policy on the ensembled logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``) of data the
            network was not trained on.
        y : array-like of shape (n_samples,)
            True labels.
        costs : array-like of shape (n_exits,), default=None
            Cumulative cost of each exit; overrides ``costs`` (and the wrapped policy's)
            for this fit.
        budget : float, default=None
            Average cost per sample allowed; overrides ``budget`` (and the wrapped
            policy's) for this fit.

        Returns
        -------
        self : AnytimeEnsemble

        Raises
        ------
        TypeError
            If ``policy`` is not an exit policy, ``alpha`` is not a number, or ``X`` or
            ``weights`` holds non-real values.
        ValueError
            If ``weights`` is not ``"fit"``, ``"uniform"`` or a nonnegative,
            lower-triangular ``(n_exits, n_exits)`` array with a positive entry per
            row, ``alpha`` is negative, ``costs`` is missing, or ``X``, ``y``,
            ``costs`` or ``budget`` are invalid (as the wrapped policy's ``fit`` raises).

        Notes
        -----
        Atomic, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        every fitted attribute is set at the end, together.
        """
        base = self._base_policy()
        alpha = self._check_alpha()
        y = check_target(y, type(self).__name__)
        input_type = check_input_type(self.input_type)
        base_params = base.get_params(deep=False)
        given_costs = self.costs if self.costs is not None else base_params.get("costs")
        costs_ = check_costs(given_costs if costs is None else costs)
        outputs = check_exit_outputs(X, len(costs_), input_type=input_type)
        log_proba = exit_log_proba(outputs, input_type)
        classes = self.classes if self.classes is not None else base_params.get("classes")
        classes_, columns = encode_labels(y, outputs.shape[0], outputs.shape[2], classes)
        weights = self._resolve_weights(log_proba, columns, alpha)
        chosen_budget = self.budget if self.budget is not None else base_params.get("budget")
        if budget is not None:
            chosen_budget = budget
        _warn_overrides(self, costs, costs_, budget, chosen_budget)

        inner = clone(base).set_params(
            costs=costs_, budget=chosen_budget, input_type="logits", classes=classes_
        )
        inner.fit(anytime_logits(log_proba, weights), y)
        fitted = {
            "policy_": inner,
            "weights_": weights,
            "costs_": inner.costs_,
            "budget_": inner.budget_,
            "target_cost_": inner.target_cost_,
            "classes_": inner.classes_,
            "thresholds_": np.array(inner.thresholds_, dtype=np.float64),
            "exit_fractions_": np.array(inner.exit_fractions_, dtype=np.float64),
            "n_exits_": int(inner.n_exits_),
            "n_classes_": int(inner.n_classes_),
            "n_features_in_": int(inner.n_features_in_),
        }
        self.__dict__.update(fitted)
        return self

    def ensembled_logits(self, X) -> np.ndarray:
        """The ensembled logits of every exit: what ``policy_`` reads.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the ensemble was fitted on.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_exits, n_classes), float64
            ``logits[:, k] = sum_{j <= k} weights_[k, j] * max(log_p_j, -708.4)``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the ensemble is not fitted.
        ValueError, TypeError
            If ``X`` is not per-exit outputs of the fitted shape.

        See Also
        --------
        eenet_sklearn.metrics.oracle_accuracy : The oracle bound of these predictions.
        """
        check_is_fitted(self)
        outputs = check_exit_outputs(X, self.n_exits_, self.n_classes_, self.input_type, type(self).__name__)
        return anytime_logits(exit_log_proba(outputs, self.input_type), self.weights_)

    def _exit_predictions(self, outputs: np.ndarray) -> np.ndarray:
        # What the ensemble serves at each exit, so risk control certifies it.
        log_proba = exit_log_proba(outputs, self.input_type)
        return exit_predictions(anytime_logits(log_proba, self.weights_), "logits")

    def recalibrate(self, X, budget=None):
        """Re-set the wrapped policy's thresholds from unlabeled outputs, keeping the weights.

        The weights and the learned scores stay as fitted; ``policy_`` is recalibrated on
        the ensembled logits of ``X`` (see :meth:`BaseExitPolicy.recalibrate
        <eenet_sklearn.base.BaseExitPolicy.recalibrate>`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit outputs of a fresh sample of the traffic, no labels.
        budget : float, default=None
            New mean cost per sample allowed; ``None`` keeps the operating point.

        Returns
        -------
        self : AnytimeEnsemble

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the ensemble is not fitted.
        TypeError, ValueError
            As the wrapped policy's ``recalibrate`` (a policy whose thresholds are not
            quotas, a bad ``X`` or ``budget``). Nothing changes if an error is raised.
        """
        check_is_fitted(self)
        self._check_quota_rule("recalibrate")
        inner = copy.deepcopy(self.policy_)
        inner.recalibrate(self.ensembled_logits(X), budget=budget)
        self.__dict__.update(
            policy_=inner,
            thresholds_=np.array(inner.thresholds_, dtype=np.float64),
            exit_fractions_=np.array(inner.exit_fractions_, dtype=np.float64),
            budget_=inner.budget_,
            target_cost_=inner.target_cost_,
        )
        return self

    # --- what the base class and BudgetController read of the wrapped policy ------------

    def _check_quota_rule(self, action: str) -> None:
        fitted = self.__dict__.get("policy_")
        (fitted if fitted is not None else self._base_policy())._check_quota_rule(action)

    def _quota_fractions(self, cost: float) -> np.ndarray:
        return self.policy_._quota_fractions(cost)

    # --- the per-exit step ---------------------------------------------------------------

    def _step_state_names(self) -> tuple[str, ...]:
        return (*self.policy_._step_state_names(), SUMS)

    def _step_initial_state(self, n_samples: int) -> dict[str, np.ndarray]:
        return {
            **self.policy_._step_initial_state(n_samples),
            SUMS: np.zeros((n_samples, self.n_exits_, self.n_classes_), dtype=np.float64),
        }

    #: The step reads exit k's log-probabilities only (its probabilities are the ensemble's).
    _step_reads_proba = False

    @property
    def _step_calls_blas(self) -> bool:  # type: ignore[override]
        return self.policy_._step_calls_blas

    def _step_weights(self) -> tuple[np.ndarray, object, tuple[str, ...], bool]:
        weights = np.ascontiguousarray(self.weights_, dtype=np.float64)
        inner = self.policy_
        return weights, inner._step_weights(), inner._step_state_names(), bool(inner._step_reads_proba)

    def _exit_step(self, k, log_proba, proba, state, weights):
        matrix, inner_weights, inner_names, reads_proba = weights
        sums = _step_sums(state[SUMS], matrix, k, log_proba)
        # As the wrapped policy's own step reads the ensembled logits (ExitDecider._step).
        ensembled, ensembled_proba = exit_step_inputs(sums[:, k], "logits", reads_proba)
        inner_state = {name: state[name] for name in inner_names}
        scores, inner_next = self.policy_._exit_step(
            k, ensembled, ensembled_proba, inner_state, inner_weights
        )
        return scores, {**inner_next, SUMS: sums}

    def _step_proba(self, k: int, proba: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        return exit_proba(state[SUMS][:, k], "logits")

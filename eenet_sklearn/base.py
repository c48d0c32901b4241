"""What every exit policy shares: validation, threshold fitting, prediction, cost."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from ._decider import ExitDecider, run_row_blocks
from ._features import exit_predictions
from ._thresholds import exit_fractions, quota_thresholds
from ._validation import (
    check_budget,
    check_costs,
    check_exit_outputs,
    check_exit_prefix,
    check_input_type,
    check_target,
    encode_labels,
    format_number,
    format_values,
)

__all__ = ["BaseExitPolicy", "ExitDecider", "FitParameterOverrideWarning", "SmallFittingSetWarning"]

#: At most this many samples are processed at once in prediction, to bound memory.
_CHUNK_SIZE = 1 << 16

#: About this many values (samples x exits x classes) per prediction chunk: 13,107 rows at
#: K=4, C=10, where each exit's per-class work runs as contiguous column passes (a few
#: dozen NumPy calls per exit and chunk): faster than 3,276 or 6,553 rows, whose calls
#: cost more than the cache they save (1.1-1.2x in throughput, measured side by side on
#: a shared 2-core machine), and within a memory bound of about 32 MB beyond the result.
_CHUNK_VALUES = 1 << 19

#: At least this many rows per prediction chunk (many classes): fewer would spend more
#: on each chunk's Python overhead than they save in cache.
_MIN_CHUNK_ROWS = 256


class FitParameterOverrideWarning(UserWarning):
    """A value passed to ``fit`` overrides a different value set in the constructor.

    ``fit(X, y, costs=..., budget=...)`` wins for that fit. Inside ``GridSearchCV`` (or
    any search that sets the parameter with ``set_params``) a fit-time value therefore
    overrides every candidate: they are all fitted with the same value, and
    ``best_params_`` names a value that was never used. Set the value in the
    constructor (or with ``set_params``) only, or leave the constructor's at ``None``.

    See Also
    --------
    BaseExitPolicy.fit : Where the warning is raised.
    """


#: How far above the budget the mean cost on new data may go before a fitting set counts
#: as too small (the upper edge of the band [0.95, 1.02] x budget the library aims for).
_HELD_OUT_SLACK = 0.02

#: One-sided normal quantile for the small-fitting-set rule: warn when the mean cost on
#: new data exceeds ``(1 + _HELD_OUT_SLACK) * budget`` with probability above 5%.
_HELD_OUT_Z = 1.645


class SmallFittingSetWarning(UserWarning):
    """The fitting set is too small for the budget to hold on new data.

    Quota thresholds are quantiles of the fitting samples' scores: they spend the
    budget on the fitting data, but the share of *new* samples above each threshold
    varies by binomial noise. At fixed thresholds, the mean cost on new data is off
    the fitting cost by about ``std(costs_[exits]) / sqrt(n_samples)`` (the standard
    error of a mean of ``n_samples`` exit costs). :meth:`BaseExitPolicy.fit` warns
    when that noise makes the new-data mean cost exceed ``1.02 * budget`` with
    probability above 5% (a one-sided normal bound, ``z = 1.645``), and names the
    fitting-set size that would keep it within, all else equal:
    ``n >= (z * std / (1.02 * budget - fitting cost))**2``.

    Fit on more samples, or lower the budget a little, or recalibrate on more
    unlabeled traffic. Policies whose thresholds are not quotas
    (:class:`~eenet_sklearn.PatiencePolicy`, :class:`~eenet_sklearn.FixedExitPolicy`)
    do not give it.

    See Also
    --------
    BaseExitPolicy.fit : Where the warning is raised.
    """


def _warn_if_small_fitting_set(
    policy: str,
    costs: np.ndarray,
    budget: float | None,
    exits: np.ndarray,
    stacklevel: int = 4,
    done: str = "fitted",
) -> None:
    """Give :class:`SmallFittingSetWarning` when ``exits`` are too few for ``budget`` to hold.

    ``costs`` and ``exits``: the policy's costs and the exit of each fitting sample.
    ``done``: what was done on those samples ("fitted", "recalibrated").
    The rule is :class:`SmallFittingSetWarning`'s.
    """
    n_samples = len(exits)
    if budget is None or n_samples == 0:
        return
    spent = costs[exits]
    cost, spread = float(spent.mean()), float(spent.std())
    allowed = (1.0 + _HELD_OUT_SLACK) * budget
    if spread == 0.0 or cost + _HELD_OUT_Z * spread / np.sqrt(n_samples) <= allowed:
        return
    needed = int(np.ceil((_HELD_OUT_Z * spread / (allowed - cost)) ** 2))
    error = spread / np.sqrt(n_samples)
    warnings.warn(
        f"{policy} was {done} on {n_samples} samples, too few for budget={format_number(budget)} "
        f"to hold on new data: at these thresholds the mean cost of new samples has a standard "
        f"error of {format_number(error)} ({100 * error / budget:.2g}% of the budget), so it "
        f"exceeds the budget by more than {100 * _HELD_OUT_SLACK:g}% with probability above 5%. "
        f"Use about {needed} samples or more to keep it within that, or lower the budget.",
        SmallFittingSetWarning,
        stacklevel=stacklevel,
    )


def _warn_overrides(policy: BaseExitPolicy, costs, costs_: np.ndarray, budget, budget_) -> None:
    """Warn where a fit-time value differs from an explicitly set constructor value."""
    if costs is not None and policy.costs is not None:
        try:
            same = np.array_equal(np.asarray(policy.costs, dtype=np.float64), costs_)
        except (TypeError, ValueError):
            same = False
        if not same:
            _warn_override("costs", format_values(costs_), format_values(policy.costs))
    if budget is not None and policy.budget is not None:
        given = policy.budget
        if not (isinstance(given, Real) and not isinstance(given, bool) and float(given) == budget_):
            _warn_override("budget", format_number(budget_), format_number(given))


def _warn_override(name: str, fit_value: str, init_value: str) -> None:
    warnings.warn(
        f"fit({name}={fit_value}) overrides the constructor's {name}={init_value} for this "
        f"fit. In a GridSearchCV over {name}, the fit-time value overrides every candidate's: "
        f"all are fitted with {name}={fit_value}. Set {name} in the constructor or with "
        f"set_params only, or leave the constructor's {name}=None.",
        FitParameterOverrideWarning,
        stacklevel=4,  # the caller of fit
    )


class BaseExitPolicy(ClassifierMixin, BaseEstimator):
    """Base class of budgeted exit policies over per-exit outputs.

    A policy sends each sample out at the first exit ``k`` whose exit score reaches
    ``thresholds_[k]``; subclasses define the score, one exit at a time
    (:meth:`_exit_step`, with what it carries from exit to exit), and either the
    fraction of samples each exit should take (:meth:`_fit_policy`, turned into quota
    thresholds) or the thresholds themselves (:meth:`_fit_thresholds`). Exit scores
    are causal (the score at exit ``k`` reads exits ``0..k`` only), so every policy
    can decide during early-exit inference (:meth:`exit_decider`).

    Subclasses accept ``costs``, ``budget``, ``input_type`` and ``classes``
    as constructor parameters. Not meant to be instantiated directly.

    **Batch invariance.** A sample's exit, label, class probabilities and exit scores
    never depend on the other rows of the call, on how many there are (one, or millions
    in bounded-memory chunks), on their order, or on the dtype of identical input values
    (float16, float32, float64, integers, booleans), through :meth:`predict_exit`,
    :meth:`predict`, :meth:`predict_proba`, :meth:`exit_scores` and :meth:`exit_decider`
    alike, and :func:`~eenet_sklearn.nn.early_exit_predict` decides as they do on the
    logits the network gives it (the network itself may round a row differently with the
    batch size). Two mechanisms make it so:

    - *Row-independent arithmetic.* Every prediction runs the one per-exit step of
      :class:`ExitDecider` (the full-matrix path over all rows, the incremental path
      over the rows still running). Each exit's outputs are converted to float64 first,
      and every value of a row is computed from that row alone: elementwise operations,
      sums over the classes that add them one by one in class order (NumPy's own
      ``sum`` adds pairwise, in an order that depends on the layout and, for a single
      row, on its length), and the scorers' products (EENet's, and the decision values
      of :class:`~eenet_sklearn.LearnedScorePolicy`'s logistic regressions, whose
      ``expit`` is computed here rather than by ``predict_proba``) on zero-padded blocks
      of 8 rows, each through one BLAS kernel whatever the number of rows: a matrix
      product into a hidden layer, a matrix-vector product into a single output
      (OpenBLAS rounds a row of a matrix product differently as a matrix-vector
      product, at one row, or at the ragged edge, than inside one: up to 2e-7 in
      float32 here). The values of a row, computed elementwise or in class order, are
      the same bits whether the call lays out an exit's values row-major or
      class-major (as prediction does for up to 64 classes, for speed).
    - *Thresholds off the fitting scores.* A quota threshold lies halfway (in float64)
      between the lowest admitted fitting score and the highest one not admitted, so
      no fitting sample sits exactly on a threshold, and a score rounded by an ulp
      elsewhere (by a user-given classifier's ``predict_proba``, which this library
      does not control) still falls on the side it fell in fitting.

    One exception: a :class:`~eenet_sklearn.LearnedScorePolicy` whose classifier is not a
    ``LogisticRegression`` (its default) scores with that classifier's ``predict_proba``,
    and the invariance then holds only as far as that ``predict_proba`` computes each
    row as it would alone: a new sample's score may be rounded to the other side of a
    threshold with other rows.

    Prediction runs its row blocks (13,107 rows at 4 exits and 10 classes) on as many
    threads as the BLAS thread pool may use (the CPUs by default; ``OPENBLAS_NUM_THREADS=1``
    or ``threadpoolctl.threadpool_limits(1)`` make it run on the calling thread), with
    BLAS and OpenMP limited to one thread in each (the small products lose more to thread
    hand-off and contention than they gain). The results are the same bits whatever the
    threads. Its memory beyond the result stays at a few blocks' temporaries.

    See Also
    --------
    eenet_sklearn.EarlyExitPolicy : EENet, the learned budgeted policy.
    eenet_sklearn.MaxProbPolicy : MSDNet's max-probability rule.
    eenet_sklearn.EntropyPolicy : BranchyNet's entropy rule.
    eenet_sklearn.PatiencePolicy : PABEE's patience rule.
    eenet_sklearn.FixedExitPolicy : Every sample at one exit.
    eenet_sklearn.LearnedScorePolicy : A scikit-learn classifier as the exit score.

    Examples
    --------
    Every policy shares these methods. Here the MSDNet rule, three exits of costs 1, 2
    and 3 and a budget of 2, which gives each exit a third of the samples: the most
    confident sample at exit 0 leaves there, the more confident of the other two at
    exit 1 leaves there, and the last goes on to exit 2.

    >>> import numpy as np
    >>> from eenet_sklearn import MaxProbPolicy
    >>> X = np.array([[[4.0, 0.0], [4.0, 0.0], [4.0, 0.0]],   # sure from exit 0
    ...               [[0.1, 0.0], [0.0, 3.0], [0.0, 4.0]],   # sure from exit 1
    ...               [[0.0, 0.1], [0.2, 0.0], [0.0, 1.0]]])  # unsure until exit 2
    >>> policy = MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=2.0).fit(X, [0, 1, 1])
    >>> policy.predict_exit(X)
    array([0, 1, 2])
    >>> policy.predict(X)
    array([0, 1, 1])
    >>> policy.expected_cost(X)
    2.0
    """

    costs: object
    budget: object
    input_type: str
    classes: object

    #: Private attributes that :meth:`fit` sets (besides those ending in ``_`` and the
    #: settings of :meth:`_check_hyperparameters`): part of the fitted state, replaced as
    #: a whole by each fit.
    _private_fit_state: ClassVar[tuple[str, ...]] = ()

    #: Whether :meth:`_exit_step` reads ``proba`` (else it is passed ``None``, and
    #: prediction spends no exponentials on probabilities it does not return).
    _step_reads_proba: ClassVar[bool] = True

    #: Whether :meth:`_exit_step` calls BLAS (:func:`~eenet_sklearn._decider.row_product`):
    #: prediction then limits BLAS to one thread for the call, a process-wide limit the
    #: policies whose steps call none leave alone (:func:`~eenet_sklearn._decider.run_row_blocks`).
    _step_calls_blas: bool = True

    def fit(self, X, y, costs=None, budget=None):
        """Fit the policy on held-out per-exit outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``) of data
            the network was not trained on; real numbers (numeric strings and
            complex numbers are refused).
        y : array-like of shape (n_samples,)
            True labels.
        costs : array-like of shape (n_exits,), default=None
            Cumulative cost of each exit; overrides the constructor's ``costs`` for
            this fit (the value used is stored in ``costs_``).
        budget : float, default=None
            Average cost per sample allowed, in the unit of ``costs``; overrides the
            constructor's ``budget`` for this fit (stored in ``budget_``).

        Returns
        -------
        self : BaseExitPolicy
            The fitted policy.

        Raises
        ------
        ValueError
            If ``costs`` or ``budget`` is missing, ``costs`` is not 1-D, finite,
            positive and strictly increasing, ``budget`` is not finite or is below
            ``costs[0]``, ``X`` is empty, ragged, of the wrong shape for ``costs``
            or not finite (or not distributions with ``input_type="proba"``), ``y``
            is not 1-D class labels matching ``X`` and ``classes``, or a
            hyperparameter is out of range.
        TypeError
            If ``X`` or ``costs`` holds strings, complex numbers or other non-real
            values, ``budget`` is not a real number, or a hyperparameter has the
            wrong type.

        Warns
        -----
        FitParameterOverrideWarning
            If ``costs`` or ``budget`` is given here and differs from the
            constructor's value, which was set (not ``None``): in a ``GridSearchCV``
            over that parameter, a fit-time value would override every candidate.
        SmallFittingSetWarning
            If the policy's thresholds are quotas and ``X`` has too few samples for
            the budget to hold on new data (the rule and the size that would do are
            in :class:`SmallFittingSetWarning`).

        Notes
        -----
        Fitting is atomic: every fitted attribute is computed first and all are set
        together at the end. If the fit raises, or is interrupted (``KeyboardInterrupt``,
        which is re-raised, never swallowed), the policy keeps its previous fit
        unchanged, or stays unfitted if it had none.
        """
        # Validate everything first, so that a bad argument is reported before any work.
        settings = self._check_hyperparameters()
        y = check_target(y, type(self).__name__)
        input_type = check_input_type(self.input_type)
        costs_ = check_costs(self.costs if costs is None else costs)
        budget_ = self._check_budget(self.budget if budget is None else budget, costs_)
        outputs = check_exit_outputs(X, len(costs_), input_type=input_type)
        classes_, columns = encode_labels(y, outputs.shape[0], outputs.shape[2], self.classes)
        _warn_overrides(self, costs, costs_, budget, budget_)

        # Fitting is atomic: the hooks below set their attributes on a scratch copy of the
        # policy, which hands them over in one assignment at the end (_take_fit). An error
        # or an interrupt (Ctrl-C) anywhere before leaves the previous fit, or none, intact.
        fitted = self._fitting_copy(settings)
        fitted.costs_, fitted.budget_, fitted.classes_ = costs_, budget_, classes_
        fitted.n_exits_, fitted.n_classes_ = outputs.shape[1], outputs.shape[2]
        fitted.n_features_in_ = fitted.n_exits_ * fitted.n_classes_
        # Right as predict is right: the argmax of the probabilities predict_proba returns.
        correct = exit_predictions(outputs, input_type) == columns[:, None]
        # What the thresholds spend on the fitting data; a policy that spends less on
        # purpose lowers it while fitting its thresholds.
        fitted.target_cost_ = budget_
        fitted.thresholds_, exits = fitted._fit_thresholds(outputs, correct)
        fitted.exit_fractions_ = exit_fractions(exits, fitted.n_exits_)
        self._take_fit(fitted)
        return self

    def _is_fit_state(self, name: str, settings: dict[str, object]) -> bool:
        """Whether attribute ``name`` belongs to a fit (replaced by the next) rather than to the user.

        Fitted attributes end in ``_`` (scikit-learn's convention, what ``check_is_fitted``
        looks for); the private ones are the hyperparameter settings and
        ``_private_fit_state``. Everything else (parameters, metadata requests) is the user's.
        """
        return (
            (name.endswith("_") and not name.startswith("__"))
            or name in settings
            or name in self._private_fit_state
        )

    def _fitting_copy(self, settings: dict[str, object]) -> BaseExitPolicy:
        """A scratch policy for :meth:`fit` to set attributes on: the parameters, no fitted state.

        Built without ``__init__`` or pickling (the parameters are shared, not copied:
        fitting reads them only), then given the validated ``settings``.
        """
        scratch = object.__new__(type(self))
        state = {k: v for k, v in vars(self).items() if not self._is_fit_state(k, settings)}
        scratch.__dict__.update(state, **settings)
        return scratch

    def _take_fit(self, fitted: BaseExitPolicy) -> None:
        """Take the fitted state of ``fitted`` (from :meth:`_fitting_copy`), all at once.

        The new attribute dictionary is built first and installed in a single assignment,
        which an interrupt cannot split: the policy holds either the old fit or the new.
        """
        self.__dict__ = dict(vars(fitted))

    def recalibrate(self, X, budget=None):
        """Re-set the thresholds from unlabeled per-exit outputs, keeping the learned scores.

        Label-free recalibration for traffic that has drifted from the fitting data:
        the exit scores stay as fitted (EENet's scorer, a classifier, a confidence
        measure); only the quota thresholds are set again, on the scores of ``X``, so
        that the mean cost on ``X`` meets the target. With ``budget`` the operating
        point moves to that budget without retraining: the quotas are those the
        policy gives that cost (:meth:`_quota_fractions`), MSDNet's geometric quotas [1]_
        for the baselines and EENet's mean exit distribution tilted to the cost [2]_.
        As in :meth:`fit`, the mean cost on ``X`` is at most the target, ties
        included. Nothing changes if an error is raised.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``) of a fresh
            sample of the traffic, with the exits and classes the policy was fitted
            on. No labels are needed.
        budget : float, default=None
            New mean cost per sample allowed, in the unit of ``costs_``, at least
            ``costs_[0]``. ``None`` keeps the operating point: the thresholds spend
            ``target_cost_`` on ``X``.

        Returns
        -------
        self : BaseExitPolicy
            The policy, with ``thresholds_`` and ``exit_fractions_`` (on ``X``) set
            again, and, when ``budget`` is given, ``budget_ = target_cost_ = budget``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        TypeError
            If the policy's thresholds are not quotas of an exit score
            (:class:`~eenet_sklearn.PatiencePolicy`,
            :class:`~eenet_sklearn.FixedExitPolicy`: refit them instead), ``X``
            holds strings, complex numbers or other non-real values, or ``budget``
            is not a real number.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes, or ``budget`` is not finite or is below ``costs_[0]``.

        Warns
        -----
        SmallFittingSetWarning
            If ``X`` has too few samples for the budget to hold on more of the same
            traffic, as in :meth:`fit`.

        See Also
        --------
        fit : Fits the scores and the thresholds on labelled data.
        eenet_sklearn.online.BudgetController : Holds the mean cost on a stream, batch by batch.

        Notes
        -----
        The target is met on ``X`` itself. On later traffic it holds as well as ``X``
        resembles that traffic, within the sampling noise of ``X``'s size (the
        thresholds are quantiles of ``X``'s scores). Accuracy is not re-checked: the
        scores learned on the fitting data may rank drifted samples less well.
        Called with the fitting data itself, a policy that spends its whole budget
        gets its fitted thresholds back.

        References
        ----------
        .. [1] G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten and K. Q. Weinberger,
           "Multi-Scale Dense Networks for Resource Efficient Image Classification",
           ICLR 2018, arXiv:1703.09844.
        .. [2] F. Ilhan et al., "Adaptive Deep Neural Network Inference Optimization
           with EENet", arXiv:2301.07099, 2023.

        Examples
        --------
        Traffic less confident than the fitting data (logits scaled down) runs
        deeper and overspends; recalibrated on a sample of it, the policy spends
        the budget again, on that sample and on more of the same traffic.

        >>> from eenet_sklearn import MaxProbPolicy
        >>> from eenet_sklearn.datasets import load_exit_logits
        >>> data = load_exit_logits("mnist_mlp3")
        >>> policy = MaxProbPolicy(costs=data.costs, budget=0.03)
        >>> policy = policy.fit(data.val_logits, data.val_labels)
        >>> unlabeled, later = 0.3 * data.test_logits[:5000], 0.3 * data.test_logits[5000:]
        >>> bool(policy.expected_cost(later) > 1.4 * 0.03)  # over the budget by 40% or more
        True
        >>> policy = policy.recalibrate(unlabeled)
        >>> round(policy.expected_cost(later) / 0.03, 2)
        1.0
        """
        check_is_fitted(self)
        self._check_quota_rule("recalibrate")
        outputs = check_exit_outputs(
            X, self.n_exits_, self.n_classes_, self.input_type, type(self).__name__
        )
        if budget is None:
            budget_, target = self.budget_, self.target_cost_
        else:
            budget_ = target = check_budget(budget, self.costs_)
        fractions = self._quota_fractions(target)
        scores = self._chunked_exit_scores(outputs)
        thresholds, exits = quota_thresholds(
            scores,
            fractions,
            costs=self.costs_,
            budget=target,
            quotas=self._unit_quota_fractions,
            use_gpu=self._use_gpu(),
        )
        _warn_if_small_fitting_set(type(self).__name__, self.costs_, budget_, exits, 3, "recalibrated")
        # Everything is computed: set it all at once.
        self.thresholds_, self.exit_fractions_ = thresholds, exit_fractions(exits, self.n_exits_)
        self.budget_, self.target_cost_ = budget_, target
        return self

    def _quota_fractions(self, cost: float) -> np.ndarray:
        """Exit quotas (fractions of samples, summing to 1) whose expected cost is ``cost``.

        What :meth:`recalibrate` sets thresholds for. Quota rules override this; the
        base class has no quotas.
        """
        raise NotImplementedError(f"{type(self).__name__} has no exit quotas.")

    def _unit_quota_fractions(self, share: float) -> np.ndarray:
        """:meth:`_quota_fractions` at the mean cost ``share * costs_[-1]``.

        The path of quotas that :func:`~eenet_sklearn._thresholds.quota_thresholds`
        follows when the rounded quotas overspend, in units of the last exit's cost so
        that costs of any scale (subnormal ones too) trace the same path. Quota rules
        whose quotas depend on the cost ratios only override this to compute them
        without the rescaling.
        """
        return self._quota_fractions(share * float(self.costs_[-1]))

    def _check_quota_rule(self, action: str) -> None:
        """Raise ``TypeError`` unless the thresholds are quotas of an exit score."""
        if type(self)._quota_fractions is BaseExitPolicy._quota_fractions:
            name = type(self).__name__
            raise TypeError(
                f"{action} needs a policy whose thresholds are quotas of an exit score "
                "(MaxProbPolicy, EntropyPolicy, LearnedScorePolicy, EarlyExitPolicy); "
                f"{name} sets its thresholds from a setting (a patience, an exit), not from "
                f"quotas, so they cannot be moved without labels: fit {name} again with the "
                "new budget instead."
            )

    def _check_hyperparameters(self) -> dict[str, object]:
        """Validate and normalise the subclass's hyperparameters; called once, first in :meth:`fit`.

        Raises on an invalid value. Returns the normalised values as private attributes
        (name to value) that :meth:`fit` sets once everything is validated.
        """
        return {}

    def _check_budget(self, budget: object, costs: np.ndarray) -> float | None:
        """Validate the budget against the validated costs, before any attribute is set.

        Subclasses whose settings may make the budget unnecessary, or that must check
        settings against the number of exits, extend this.
        """
        return check_budget(budget, costs)

    def _fit_thresholds(
        self, outputs: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Learn the policy; return its thresholds and the exit of every fitting sample.

        ``outputs``: the validated fitting outputs ``(n_samples, n_exits, n_classes)``
        (:func:`~eenet_sklearn._validation.check_exit_outputs`, of ``input_type``);
        ``correct``: whether each exit's prediction is right, ``(n_samples, n_exits)``.

        By default, quota thresholds on the scores and quotas of :meth:`_fit_policy`,
        with the budget as a ceiling on the fitting data; rules whose thresholds are not
        quotas (patience, fixed exit) override this.
        """
        scores, fractions = self._fit_policy(outputs, correct)
        # target_cost_: the budget, or less where the policy chose to spend less.
        thresholds, exits = quota_thresholds(
            scores,
            fractions,
            costs=self.costs_,
            budget=self.target_cost_,
            quotas=self._unit_quota_fractions,
            use_gpu=self._use_gpu(),
        )
        _warn_if_small_fitting_set(type(self).__name__, self.costs_, self.budget_, exits)
        return thresholds, exits

    def _fit_policy(
        self, outputs: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Learn what the policy needs; return the fitting data's exit scores and the quotas."""
        raise NotImplementedError(
            f"{type(self).__name__} overrides neither _fit_policy nor _fit_thresholds."
        )

    # --- the per-exit step: the one home of the decision arithmetic ------------------

    def _step_state_names(self) -> tuple[str, ...]:
        """Names of what the decision at exit ``k`` carries from exits ``0..k-1``."""
        return ()

    def _step_initial_state(self, n_samples: int) -> dict[str, np.ndarray]:
        """The carried state before exit 0 (:meth:`ExitDecider.initial_state`)."""
        return {}

    def _step_weights(self) -> object:
        """Derived forms of the fitted scorer the step reads (not pickled); ``None`` if none."""
        return None

    def _step_proba(self, k: int, proba: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        """Class probabilities predicted at exit ``k``, from exit ``k``'s own and the next state.

        Exit ``k``'s own ``proba`` by default; :class:`~eenet_sklearn.AnytimeEnsemble`
        returns its combination of exits ``0..k``, which it carries in ``state``.
        """
        return proba

    @abstractmethod
    def _exit_step(
        self,
        k: int,
        log_proba: np.ndarray,
        proba: np.ndarray | None,
        state: dict[str, np.ndarray],
        weights: object,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Exit ``k``'s scores ``(n_rows,)`` and the next state, from exit ``k`` alone.

        ``log_proba``: exit ``k``'s class log-probabilities ``(n_rows, n_classes)``
        (:func:`~eenet_sklearn._features.exit_log_proba`: float64, any memory order) and
        ``proba`` their ``exp`` (``None`` where :attr:`_step_reads_proba` is false);
        ``state``: what exits ``0..k-1`` left. None of them is to be modified;
        ``weights``: :meth:`_step_weights`. Every value of a row must be computed from
        that row alone, in float64 (elementwise operations, reductions over a row's
        contiguous classes, products through :func:`~eenet_sklearn._decider.row_product`
        rather than a BLAS product whose rounding depends on the number of rows), so
        that decisions do not depend on the other rows of a call (a user-given
        classifier's ``predict_proba``, which this library does not control, excepted).
        """

    def exit_decider(self) -> ExitDecider:
        """The policy's decision, one exit at a time: for early-exit inference and serving.

        Returns
        -------
        ExitDecider
            Takes exit ``k``'s outputs for the rows still running and the state the
            earlier exits left; returns which rows leave, their class probabilities
            and the next state. Each exit's decision costs the same whatever its
            index. It needs NumPy only, and decides bit for bit as
            :meth:`predict_exit` (which runs the same steps over all the rows).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.

        See Also
        --------
        eenet_sklearn.nn.early_exit_predict : Early-exit inference that uses it.
        ExitDecider : The interface, and what each policy carries in its state.

        Examples
        --------
        >>> from eenet_sklearn import FixedExitPolicy
        >>> X = [[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]]
        >>> policy = FixedExitPolicy(costs=[1.0, 2.0, 4.0], exit=1).fit(X, [0, 1])
        >>> decider = policy.exit_decider()
        >>> state = decider.initial_state(2)
        >>> leave, proba, state = decider.decide(0, [[2.0, 0.0], [0.0, 1.0]], state)
        >>> leave  # at exit 0: nobody leaves
        array([False, False])
        >>> decider.decide(1, [[0.0, 1.0], [0.0, 1.0]], state)[0]  # at exit 1: everybody
        array([ True,  True])
        """
        check_is_fitted(self)
        return ExitDecider(self)

    def _use_gpu(self) -> bool:
        """Whether threshold sorting runs on the GPU; baselines stay on NumPy."""
        return False

    def _exit_predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Each exit's predicted class column ``(n_samples, n_exits)`` for validated outputs.

        What the fitted policy predicts at each exit; wrappers that change the predictions
        (an anytime ensemble) override it, so risk control certifies what is served.
        """
        return exit_predictions(outputs, self.input_type)

    def _chunk_rows(self, n_samples: int) -> list[slice]:
        """Row blocks for prediction: bounded memory, temporaries that stay in cache."""
        size = max(_MIN_CHUNK_ROWS, _CHUNK_VALUES // (self.n_exits_ * self.n_classes_))
        size = max(1, min(_CHUNK_SIZE, size))
        return [slice(start, start + size) for start in range(0, n_samples, size)]

    def _chunked_exit_scores(self, outputs: np.ndarray) -> np.ndarray:
        """Exit scores ``(n_samples, n_exits)`` of validated outputs, for fitting thresholds.

        Computed by the steps prediction runs (:meth:`exit_decider`, over the same row
        blocks), bit for bit the scores :meth:`exit_scores` gives: a fitting sample whose
        score sits at a threshold is decided at prediction as it was in fitting. Needs
        the fitted scorer, not the thresholds.
        """
        unset = np.full(self.n_exits_ - 1, np.inf)
        return self._decide_outputs(outputs, "scores", ExitDecider(self, thresholds=unset))

    def _decide(self, X, what: str = "exits") -> np.ndarray:
        """``what`` of every row ("exits", "labels", "proba" or "scores"), chunk by chunk.

        Memory beyond the result is bounded by the chunk size: nothing else of the
        size of ``X`` is kept.
        """
        check_is_fitted(self)
        outputs = check_exit_outputs(
            X, self.n_exits_, self.n_classes_, self.input_type, type(self).__name__
        )
        return self._decide_outputs(outputs, what, self.exit_decider())

    def _decide_outputs(self, outputs: np.ndarray, what: str, decider: ExitDecider) -> np.ndarray:
        """:meth:`_decide` of validated outputs, with ``decider``'s thresholds."""
        n_samples = outputs.shape[0]
        result: np.ndarray
        if what == "proba":
            result = np.empty((n_samples, self.n_classes_), dtype=np.float64)
        elif what == "scores":
            result = np.empty((n_samples, self.n_exits_), dtype=np.float64)
        else:
            result = np.empty(n_samples, dtype=np.int64)

        def decide_rows(rows: slice) -> None:
            exits, chosen, scores = decider._run(
                outputs[rows], all_scores=what == "scores", proba=what in ("labels", "proba")
            )
            if what == "exits":
                result[rows] = exits
            elif what == "labels":
                assert chosen is not None
                result[rows] = chosen.argmax(axis=1)
            elif what == "proba":
                result[rows] = chosen
            else:
                result[rows] = scores

        run_row_blocks(decide_rows, self._chunk_rows(n_samples), n_samples, calls_blas=self._step_calls_blas)
        return result

    def decide_at_exit(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Decide at exit ``k`` from the outputs of exits ``0..k`` alone.

        The decision at exit ``k`` for samples that reached it, from all their outputs
        so far: it re-runs exits ``0..k``. Early-exit inference and serving code use
        :meth:`exit_decider` instead, which carries what the earlier exits left and
        costs the same at every exit; both make :meth:`predict_exit`'s decisions.

        Parameters
        ----------
        X : array-like of shape (n_samples, k + 1, n_classes)
            Outputs (logits, or probabilities with ``input_type="proba"``) of exits
            ``0..k``, with ``1 <= k + 1 <= n_exits_``.

        Returns
        -------
        leaving : ndarray of shape (n_samples,), dtype bool
            Whether each sample leaves at exit ``k`` (always true at the last exit).
        proba : ndarray of shape (n_samples, n_classes), float64
            Class probabilities at exit ``k``, columns in ``classes_`` order.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is not 3-D with at most ``n_exits_`` exits and ``n_classes_``
            classes, is empty or ragged, or holds non-finite values.
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        exit_decider : The same decision, incremental.
        predict_exit : The same decisions, from the outputs of every exit.

        Examples
        --------
        >>> from eenet_sklearn import FixedExitPolicy
        >>> X = [[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]]
        >>> policy = FixedExitPolicy(costs=[1.0, 2.0, 4.0], exit=1).fit(X, [0, 1])
        >>> policy.decide_at_exit([x[:1] for x in X])[0]  # at exit 0: nobody leaves
        array([False, False])
        >>> policy.decide_at_exit([x[:2] for x in X])[0]  # at exit 1: everybody
        array([ True,  True])
        """
        check_is_fitted(self)
        outputs = check_exit_prefix(X, self.n_exits_, self.n_classes_, self.input_type)
        decider = self.exit_decider()
        state = decider.initial_state(outputs.shape[0])
        for k in range(outputs.shape[1]):
            scores, proba, state = decider._score(k, outputs[:, k], state)
        return decider._leave(k, scores), proba

    def predict_exit(self, X) -> np.ndarray:
        """Index (0-based) of the exit each sample leaves at.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        exits : ndarray of shape (n_samples,), dtype int64
            The first exit ``k`` whose exit score reaches ``thresholds_[k]``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        predict : The class label at that exit.
        decide_at_exit : The same decision, taken exit by exit.
        """
        return self._decide(X, "exits")

    def predict(self, X) -> np.ndarray:
        """Class label predicted at each sample's exit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            The label (from ``classes_``) of the most probable class at the exit
            :meth:`predict_exit` chooses.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        predict_exit : The exit of each sample.
        predict_proba : The class probabilities at that exit.
        """
        # Decide first: it raises NotFittedError before classes_ is looked up.
        columns = self._decide(X, "labels")
        return self.classes_[columns]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the exit each sample leaves at.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            The softmax of the logits (or the probabilities given) at each sample's
            exit, columns in ``classes_`` order.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        predict : The most probable class at that exit.
        """
        return self._decide(X, "proba")

    def exit_scores(self, X) -> np.ndarray:
        """Exit scores at every exit (what the thresholds are compared with).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_exits)
            Column ``k`` depends on exits ``0..k`` only; a sample leaves at the first
            exit ``k`` with ``scores[:, k] >= thresholds_[k]``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        predict_exit : The exits these scores choose.
        """
        return self._decide(X, "scores")

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
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
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.
            Also if ``y`` is not 1-D class labels, one per sample of ``X``.

        See Also
        --------
        expected_cost : What that accuracy costs.
        eenet_sklearn.metrics.make_cost_aware_scorer : Accuracy, charged for overspending.
        """
        labels = self.predict(X)  # raises NotFittedError first
        y = check_target(y, type(self).__name__, warn=False)
        if len(y) != len(labels):
            raise ValueError(f"y has {len(y)} labels but X has {len(labels)} samples.")
        return float(accuracy_score(y, labels, sample_weight=sample_weight))

    def expected_cost(self, X) -> float:
        """Mean cost of the exits chosen for ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit logits (or probabilities with ``input_type="proba"``), with the
            exits and classes the policy was fitted on.

        Returns
        -------
        cost : float
            ``costs_[predict_exit(X)].mean()``, in the unit of ``costs_``: what the
            budget bounds on the fitting data.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the policy is not fitted.
        ValueError
            If ``X`` is empty, ragged, not finite, or not of the fitted number of
            exits and classes (or not distributions with ``input_type="proba"``).
        TypeError
            If ``X`` holds strings, complex numbers or other non-real values.

        See Also
        --------
        predict_exit : The exits whose costs are averaged.
        """
        exits = self.predict_exit(X)  # raises NotFittedError before costs_ is looked up
        return float(self.costs_[exits].mean())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.poor_score = True
        return tags

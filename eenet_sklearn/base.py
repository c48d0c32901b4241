"""What every exit policy shares: validation, threshold fitting, prediction, cost."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from ._features import exit_proba
from ._thresholds import assign_exits, exit_fractions, quota_thresholds
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

__all__ = ["BaseExitPolicy", "FitParameterOverrideWarning"]

#: At most this many samples are processed at once in prediction, to bound memory.
_CHUNK_SIZE = 1 << 16

#: At most this many values (samples x exits x classes) per prediction chunk, so that a
#: chunk's temporaries stay in cache.
_CHUNK_VALUES = 1 << 20


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
    ``thresholds_[k]``; subclasses define the score (:meth:`_exit_scores`) and either
    the fraction of samples each exit should take (:meth:`_fit_policy`, turned into
    quota thresholds) or the thresholds themselves (:meth:`_fit_thresholds`). Exit
    scores are causal (the score at exit ``k`` reads exits ``0..k`` only), so every
    policy can decide during early-exit inference (:meth:`decide_at_exit`).

    Subclasses accept ``costs``, ``budget``, ``input_type`` and ``classes``
    as constructor parameters. Not meant to be instantiated directly.

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
        """
        # Validate everything before setting any attribute, so that a failed fit
        # leaves no half-fitted state that check_is_fitted would take for fitted.
        settings = self._check_hyperparameters()
        y = check_target(y, type(self).__name__)
        input_type = check_input_type(self.input_type)
        costs_ = check_costs(self.costs if costs is None else costs)
        budget_ = self._check_budget(self.budget if budget is None else budget, costs_)
        proba = self._to_proba(check_exit_outputs(X, len(costs_), input_type=input_type))
        classes_, columns = encode_labels(y, proba.shape[0], proba.shape[2], self.classes)
        _warn_overrides(self, costs, costs_, budget, budget_)

        vars(self).update(settings)
        self.costs_, self.budget_, self.classes_ = costs_, budget_, classes_
        self.n_exits_, self.n_classes_ = proba.shape[1], proba.shape[2]
        self.n_features_in_ = self.n_exits_ * self.n_classes_
        correct = proba.argmax(axis=-1) == columns[:, None]
        self.thresholds_, exits = self._fit_thresholds(proba, correct)
        self.exit_fractions_ = exit_fractions(exits, self.n_exits_)
        return self

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
        self, proba: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Learn the policy; return its thresholds and the exit of every fitting sample.

        By default, quota thresholds on the scores and quotas of :meth:`_fit_policy`;
        rules whose thresholds are not quotas (patience, fixed exit) override this.
        """
        scores, fractions = self._fit_policy(proba, correct)
        return quota_thresholds(scores, fractions, use_gpu=self._use_gpu())

    def _fit_policy(self, proba: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Learn what the policy needs; return the fitting data's exit scores and the quotas."""
        raise NotImplementedError(
            f"{type(self).__name__} overrides neither _fit_policy nor _fit_thresholds."
        )

    @abstractmethod
    def _exit_scores(self, proba: np.ndarray) -> np.ndarray:
        """Exit scores ``(n_samples, n_exits)``; column ``k`` reads exits ``<= k`` only.

        ``proba`` may hold only the first exits (early-exit inference decides exit ``k``
        from exits ``0..k``); the scores of those exits are returned.
        """

    def _use_gpu(self) -> bool:
        """Whether threshold sorting runs on the GPU; baselines stay on NumPy."""
        return False

    def _to_proba(self, outputs: np.ndarray) -> np.ndarray:
        # Fitting and prediction share the layout, so the scores they compute for the
        # same sample are identical.
        return exit_proba(outputs, self.input_type)

    def _chunk_rows(self, n_samples: int) -> list[slice]:
        """Row blocks for prediction: bounded memory, temporaries that stay in cache."""
        size = max(1, min(_CHUNK_SIZE, _CHUNK_VALUES // (self.n_exits_ * self.n_classes_)))
        return [slice(start, start + size) for start in range(0, n_samples, size)]

    def _chunked_exit_scores(self, proba: np.ndarray) -> np.ndarray:
        """:meth:`_exit_scores` over the same row blocks as prediction uses."""
        scores = np.empty(proba.shape[:2], dtype=np.float64)
        for rows in self._chunk_rows(proba.shape[0]):
            scores[rows] = self._exit_scores(proba[rows])
        return scores

    def _decide(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exit, class probabilities at that exit, and exit scores, chunk by chunk."""
        check_is_fitted(self)
        outputs = check_exit_outputs(
            X, self.n_exits_, self.n_classes_, self.input_type, type(self).__name__
        )
        n_samples = outputs.shape[0]
        exits = np.empty(n_samples, dtype=np.int64)
        chosen = np.empty((n_samples, self.n_classes_), dtype=outputs.dtype)
        scores = np.empty((n_samples, self.n_exits_), dtype=np.float64)
        for rows in self._chunk_rows(n_samples):
            proba = self._to_proba(outputs[rows])
            scores[rows] = self._exit_scores(proba)
            exits[rows] = assign_exits(scores[rows], self.thresholds_)
            # Gathered class by class, as (classes, samples).
            chosen[rows] = proba.transpose(2, 0, 1)[:, np.arange(proba.shape[0]), exits[rows]].T
        return exits, chosen, scores

    def decide_at_exit(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Decide at exit ``k`` from the outputs of exits ``0..k`` alone.

        What early-exit inference calls after running the network up to exit ``k``:
        for the samples that reached ``k``, whether each leaves there and its class
        probabilities at ``k``. Exit scores are causal, so the decision equals the one
        :meth:`predict_exit` makes from the outputs of every exit.

        Parameters
        ----------
        X : array-like of shape (n_samples, k + 1, n_classes)
            Outputs (logits, or probabilities with ``input_type="proba"``) of exits
            ``0..k``, with ``1 <= k + 1 <= n_exits_``.

        Returns
        -------
        leaving : ndarray of shape (n_samples,), dtype bool
            Whether each sample leaves at exit ``k`` (always true at the last exit).
        proba : ndarray of shape (n_samples, n_classes)
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
        predict_exit : The same decisions, from the outputs of every exit.
        eenet_sklearn.nn.early_exit_predict : Early-exit inference that calls this.

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
        proba = self._to_proba(outputs)
        k = proba.shape[1] - 1
        if k == self.n_exits_ - 1:
            return np.ones(proba.shape[0], dtype=bool), proba[:, k]
        return self._exit_scores(proba)[:, k] >= self.thresholds_[k], proba[:, k]

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
        return self._decide(X)[0]

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
        chosen = self._decide(X)[1]
        return self.classes_[chosen.argmax(axis=1)]

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
        return self._decide(X)[1]

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
        return self._decide(X)[2]

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

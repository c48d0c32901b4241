"""What every exit policy shares: validation, threshold fitting, prediction, cost."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
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
)

__all__ = ["BaseExitPolicy"]

#: At most this many samples are processed at once in prediction, to bound memory.
_CHUNK_SIZE = 1 << 16

#: At most this many values (samples x exits x classes) per prediction chunk, so that a
#: chunk's temporaries stay in cache.
_CHUNK_VALUES = 1 << 20


class BaseExitPolicy(ClassifierMixin, BaseEstimator):
    """Base class of budgeted exit policies over per-exit outputs.

    A policy sends each sample out at the first exit ``k`` whose exit score reaches
    ``thresholds_[k]``; subclasses define the score (:meth:`_exit_scores`) and either
    the fraction of samples each exit should take (:meth:`_fit_policy`, turned into
    quota thresholds) or the thresholds themselves (:meth:`_fit_thresholds`).

    Subclasses accept ``costs``, ``budget``, ``input_type`` and ``classes``
    as constructor parameters.
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
            Per-exit logits (or probabilities with ``input_type="proba"``).
        y : array-like of shape (n_samples,)
            True labels.
        costs : array-like of shape (n_exits,), default=None
            Cumulative cost of each exit; overrides the constructor's ``costs`` for
            this fit (the value used is stored in ``costs_``).
        budget : float, default=None
            Average cost per sample allowed; overrides the constructor's ``budget``
            for this fit (stored in ``budget_``).

        Returns
        -------
        self
        """
        # Validate everything before setting any attribute, so that a failed fit
        # leaves no half-fitted state that check_is_fitted would take for fitted.
        self._check_hyperparameters()
        y = check_target(y, type(self).__name__)
        input_type = check_input_type(self.input_type)
        costs_ = check_costs(self.costs if costs is None else costs)
        budget_ = self._check_budget(self.budget if budget is None else budget, costs_)
        proba = self._to_proba(check_exit_outputs(X, len(costs_), input_type=input_type))
        classes_, columns = encode_labels(y, proba.shape[0], proba.shape[2], self.classes)

        self.costs_, self.budget_, self.classes_ = costs_, budget_, classes_
        self.n_exits_, self.n_classes_ = proba.shape[1], proba.shape[2]
        self.n_features_in_ = self.n_exits_ * self.n_classes_
        correct = proba.argmax(axis=-1) == columns[:, None]
        self.thresholds_, exits = self._fit_thresholds(proba, correct)
        self.exit_fractions_ = exit_fractions(exits, self.n_exits_)
        return self

    def _check_hyperparameters(self) -> object:
        """Raise on invalid subclass hyperparameters; called first in :meth:`fit`."""

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
            classes, or holds non-finite values.
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
        X : array-like of shape (n_samples, n_exits, n_classes) or flattened

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._decide(X)[0]

    def predict(self, X) -> np.ndarray:
        """Class label predicted at each sample's exit.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        # Decide first: it raises NotFittedError before classes_ is looked up.
        chosen = self._decide(X)[1]
        return self.classes_[chosen.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the exit each sample leaves at, columns in ``classes_`` order.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        return self._decide(X)[1]

    def exit_scores(self, X) -> np.ndarray:
        """Exit scores at every exit (what the thresholds are compared with).

        Returns
        -------
        ndarray of shape (n_samples, n_exits)
        """
        return self._decide(X)[2]

    def expected_cost(self, X) -> float:
        """Mean cost of the exits chosen for ``X``, in the unit of ``costs_``."""
        exits = self.predict_exit(X)  # raises NotFittedError before costs_ is looked up
        return float(self.costs_[exits].mean())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.poor_score = True
        return tags

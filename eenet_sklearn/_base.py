"""What every exit policy shares: validation, threshold fitting, prediction, cost."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._validation import (
    check_budget,
    check_costs,
    check_exit_outputs,
    check_input_type,
    encode_labels,
)
from .features import softmax
from .thresholds import assign_exits, exit_fractions, quota_thresholds

#: Samples processed at once in prediction, to bound memory on large inputs.
_CHUNK_SIZE = 1 << 16


class BaseExitPolicy(ClassifierMixin, BaseEstimator):
    """Base class of budgeted exit policies over per-exit outputs.

    A policy sends each sample out at the first exit ``k`` whose exit score reaches
    ``thresholds_[k]``; subclasses define the score (:meth:`_exit_scores`) and the
    fraction of samples each exit should take (:meth:`_fit_policy`).

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
        input_type = check_input_type(self.input_type)
        costs_ = check_costs(self.costs if costs is None else costs)
        budget_ = check_budget(self.budget if budget is None else budget, costs_)
        proba = self._to_proba(check_exit_outputs(X, len(costs_), input_type=input_type))
        classes_, columns = encode_labels(y, proba.shape[0], proba.shape[2], self.classes)

        self.costs_, self.budget_, self.classes_ = costs_, budget_, classes_
        self.n_exits_, self.n_classes_ = proba.shape[1], proba.shape[2]
        self.n_features_in_ = self.n_exits_ * self.n_classes_
        correct = proba.argmax(axis=-1) == columns[:, None]
        scores, fractions = self._fit_policy(proba, correct)
        self.thresholds_, exits = quota_thresholds(scores, fractions, use_gpu=self._use_gpu())
        self.exit_fractions_ = exit_fractions(exits, self.n_exits_)
        return self

    @abstractmethod
    def _fit_policy(self, proba: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Learn what the policy needs; return the fitting data's exit scores and the quotas."""

    @abstractmethod
    def _exit_scores(self, proba: np.ndarray) -> np.ndarray:
        """Exit scores ``(n_samples, n_exits)``; column ``k`` reads exits ``<= k`` only."""

    def _use_gpu(self) -> bool:
        """Whether threshold sorting runs on the GPU; baselines stay on NumPy."""
        return False

    def _to_proba(self, outputs: np.ndarray) -> np.ndarray:
        return outputs if self.input_type == "proba" else softmax(outputs)

    def _decide(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exit, class probabilities at that exit, and exit scores, chunk by chunk."""
        check_is_fitted(self)
        outputs = check_exit_outputs(X, self.n_exits_, self.n_classes_, self.input_type)
        n_samples = outputs.shape[0]
        exits = np.empty(n_samples, dtype=np.int64)
        chosen = np.empty((n_samples, self.n_classes_), dtype=outputs.dtype)
        scores = np.empty((n_samples, self.n_exits_), dtype=np.float64)
        for start in range(0, n_samples, _CHUNK_SIZE):
            rows = slice(start, start + _CHUNK_SIZE)
            proba = self._to_proba(outputs[rows])
            scores[rows] = self._exit_scores(proba)
            exits[rows] = assign_exits(scores[rows], self.thresholds_)
            chosen[rows] = proba[np.arange(proba.shape[0]), exits[rows]]
        return exits, chosen, scores

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
        return self.classes_[self._decide(X)[1].argmax(axis=1)]

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
        return float(self.costs_[self.predict_exit(X)].mean())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.poor_score = True
        return tags

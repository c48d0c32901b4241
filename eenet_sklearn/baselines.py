"""Classic budgeted exit rules under the same API as :class:`EarlyExitPolicy`."""

from __future__ import annotations

import numpy as np

from ._base import BaseExitPolicy
from .features import entropy_confidence, max_prob
from .thresholds import geometric_fractions


class _ConfidenceThresholdPolicy(BaseExitPolicy):
    """A fixed confidence measure as the exit score, with MSDNet's geometric quotas."""

    def __init__(self, costs=None, budget=None, *, input_type="logits", classes=None):
        self.costs = costs
        self.budget = budget
        self.input_type = input_type
        self.classes = classes

    def _fit_policy(self, proba: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._exit_scores(proba), geometric_fractions(self.costs_, self.budget_)


class MaxProbPolicy(_ConfidenceThresholdPolicy):
    """MSDNet's budgeted rule: the largest class probability as the exit score.

    Exit quotas are geometric, ``p_k`` proportional to ``rho**k``, with ``rho``
    chosen so that ``sum_k p_k costs[k]`` equals the budget; each exit's threshold
    admits its quota of the fitting samples.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit, strictly increasing.
    budget : float, default=None
        Average cost per sample allowed; at or above ``costs[-1]`` every sample
        leaves at the last exit.
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column (default: the sorted labels of ``y``).

    Attributes
    ----------
    thresholds_, exit_fractions_, classes_, costs_, budget_, n_exits_, n_classes_
        As in :class:`EarlyExitPolicy`.
    """

    def _exit_scores(self, proba: np.ndarray) -> np.ndarray:
        return max_prob(proba).astype(np.float64)


class EntropyPolicy(_ConfidenceThresholdPolicy):
    """BranchyNet's rule: entropy confidence ``1 - H(p) / log C`` as the exit score.

    Quotas and thresholds as in :class:`MaxProbPolicy`; same parameters and attributes.
    """

    def _exit_scores(self, proba: np.ndarray) -> np.ndarray:
        return entropy_confidence(proba).astype(np.float64)

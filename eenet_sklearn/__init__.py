"""Budgeted early-exit policies for multi-exit networks, the scikit-learn way."""

from ._baselines import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from ._eenet import EarlyExitPolicy
from .plotting import BudgetCurveDisplay, ExitDistributionDisplay

__all__ = [
    "BudgetCurveDisplay",
    "EarlyExitPolicy",
    "EntropyPolicy",
    "ExitDistributionDisplay",
    "FixedExitPolicy",
    "LearnedScorePolicy",
    "MaxProbPolicy",
    "PatiencePolicy",
]
__version__ = "0.1.0"

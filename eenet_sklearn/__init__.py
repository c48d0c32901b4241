"""Budgeted early-exit policies for multi-exit networks, the scikit-learn way."""

from .baselines import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from .plotting import BudgetCurveDisplay, ExitDistributionDisplay
from .policy import EarlyExitPolicy

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

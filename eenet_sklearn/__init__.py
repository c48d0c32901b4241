"""Budgeted early-exit policies for multi-exit networks, the scikit-learn way."""

from .baselines import EntropyPolicy, MaxProbPolicy
from .policy import EarlyExitPolicy

__all__ = ["EarlyExitPolicy", "EntropyPolicy", "MaxProbPolicy"]
__version__ = "0.1.0"

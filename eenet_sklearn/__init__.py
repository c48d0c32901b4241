"""Budgeted early-exit policies for multi-exit networks, the scikit-learn way."""

from ._anytime import AnytimeEnsemble
from ._baselines import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from ._eenet import EarlyExitPolicy
from ._onnx_export import export_onnx
from ._policy_file import PolicyFileError, load_policy, save_policy
from ._risk_control import RiskControlledPolicy, RiskNotCertifiedWarning
from ._select_exits import exit_subset_costs, select_exits
from .plotting import BudgetCurveDisplay, ExitDistributionDisplay

__all__ = [
    "AnytimeEnsemble",
    "BudgetCurveDisplay",
    "EarlyExitPolicy",
    "EntropyPolicy",
    "ExitDistributionDisplay",
    "FixedExitPolicy",
    "LearnedScorePolicy",
    "MaxProbPolicy",
    "PatiencePolicy",
    "PolicyFileError",
    "RiskControlledPolicy",
    "RiskNotCertifiedWarning",
    "exit_subset_costs",
    "export_onnx",
    "load_policy",
    "save_policy",
    "select_exits",
]
__version__ = "0.1.0"

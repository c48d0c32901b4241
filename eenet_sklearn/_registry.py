"""The policies by name: one registry for the command line, the demo and the benchmarks.

Each policy has one name (the command line's, as ``--policy`` and ``--policies`` take
it), the class it is, the label it carries in reports and plots, a short label for
table columns, and the command-line options that apply to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._baselines import EntropyPolicy, FixedExitPolicy, LearnedScorePolicy, MaxProbPolicy, PatiencePolicy
from ._eenet import EarlyExitPolicy
from .base import BaseExitPolicy


@dataclass(frozen=True)
class PolicySpec:
    """One policy of the registry.

    Attributes
    ----------
    name : str
        Its name on the command line (``eenet``, ``maxprob``, ...).
    cls : type
        The policy class.
    label : str
        Its label in reports and plots, naming the method it implements.
    short_label : str
        A compact label, for table columns.
    cli_options : tuple of str
        The command line's training options (constructor parameters) that apply to it.
    """

    name: str
    cls: type[BaseExitPolicy]
    label: str
    short_label: str
    cli_options: tuple[str, ...] = ()

    def build(self, costs=None, budget=None, **params) -> BaseExitPolicy:
        """An unfitted policy of this kind.

        Parameters
        ----------
        costs : array-like of shape (n_exits,), default=None
            Cumulative cost of each exit (or given later, to ``fit`` or by
            :func:`~eenet_sklearn.metrics.budget_curve`).
        budget : float, default=None
            Mean cost per sample allowed, in the unit of ``costs``.
        **params : dict
            Other constructor parameters of :attr:`cls`.

        Returns
        -------
        BaseExitPolicy

        Raises
        ------
        TypeError
            If a parameter is not one of :attr:`cls`'s.
        """
        return self.cls(costs=costs, budget=budget, **params)


#: The policies, in the order the command line lists them.
POLICIES: dict[str, PolicySpec] = {
    spec.name: spec
    for spec in (
        PolicySpec(
            "eenet", EarlyExitPolicy, "EENet", "EENet",
            cli_options=("max_epochs", "max_steps", "random_state", "spend_less", "device", "verbose"),
        ),
        PolicySpec("maxprob", MaxProbPolicy, "MSDNet (max-prob)", "MSDNet"),
        PolicySpec("entropy", EntropyPolicy, "BranchyNet (entropy)", "BranchyNet"),
        PolicySpec("patience", PatiencePolicy, "PABEE (patience)", "PABEE"),
        PolicySpec("fixed", FixedExitPolicy, "fixed exit", "Fixed"),
        PolicySpec("learned-score", LearnedScorePolicy, "learned score (logistic)", "LearnedScore"),
    )
}


def policy_spec(name: str) -> PolicySpec:
    """The registry entry of the policy named ``name``.

    Raises
    ------
    ValueError
        If no policy has that name; the message lists the names.
    """
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {name!r}.") from None


def make_policy(name: str, costs=None, budget=None, **params) -> BaseExitPolicy:
    """An unfitted policy of the given name; see :meth:`PolicySpec.build`.

    Raises
    ------
    ValueError
        If no policy has that name.
    TypeError
        If a parameter is not one of the policy's.
    """
    return policy_spec(name).build(costs, budget, **params)

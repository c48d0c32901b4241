"""Displays for budgets and exits, after scikit-learn's Display convention.

Each display holds computed data, draws it with ``plot(ax=None, ...)`` (which
returns the display with ``ax_``, ``figure_`` and the drawn artists set) and is
built by classmethods that compute the data (``from_estimator(s)``) or take it
ready-made (``from_predictions``). Matplotlib is imported only when drawing, so
that the rest of the package works without it (``pip install "eenet-sklearn[plot]"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral

import numpy as np
from sklearn.utils import check_scalar
from sklearn.utils.validation import check_is_fitted

from ._thresholds import exit_fractions
from ._validation import check_budget, check_costs
from .metrics import budget_curve

__all__ = ["BudgetCurveDisplay", "ExitDistributionDisplay"]

_X_AXES = {
    "budget": "Budget (mean cost allowed per sample)",
    "mean_cost": "Mean cost per sample (measured)",
}
_CURVE_COLUMNS = ("policy", "budget", "accuracy", "mean_cost")


def _import_matplotlib(caller: str):
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f'{caller} needs matplotlib: pip install "eenet-sklearn[plot]" (or pip install matplotlib).'
        ) from exc
    return plt


def _axes(plt, ax):
    """The given axes and its figure, or a new figure's axes."""
    if ax is None:
        figure, ax = plt.subplots()
        return ax, figure
    return ax, ax.figure


class BudgetCurveDisplay:
    """Accuracy against budget (or measured mean cost) of several exit policies.

    One line per policy, in the axes' colour cycle; the oracle bound, when present,
    as a distinct dashed line. Build it with :meth:`from_estimators` (fits the
    policies at every budget through :func:`~eenet_sklearn.metrics.budget_curve`)
    or :meth:`from_predictions` (from a table ``budget_curve`` returned), then
    :meth:`plot` draws it.

    Parameters
    ----------
    names : sequence of str
        Name of each curve (a policy, or the oracle).
    budgets : sequence of array-like of shape (n_budgets,)
        Budgets of each curve, in increasing order.
    accuracies : sequence of array-like of shape (n_budgets,)
        Accuracy of each curve at its budgets.
    mean_costs : sequence of array-like of shape (n_budgets,)
        Measured mean cost per sample of each curve at its budgets.
    oracle_name : str or None, default="oracle"
        Which of ``names`` is the oracle bound, drawn dashed; ``None`` when none is.

    Attributes
    ----------
    lines_ : list of matplotlib.lines.Line2D
        One line per curve, in the order of ``names`` (the oracle's included).
    oracle_line_ : matplotlib.lines.Line2D or None
        The oracle's line, or ``None`` without an oracle curve.
    ax_ : matplotlib.axes.Axes
    figure_ : matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.plotting import BudgetCurveDisplay
    >>> d = load_exit_logits("mnist_mlp3")
    >>> display = BudgetCurveDisplay.from_estimators(
    ...     {"msdnet": MaxProbPolicy()}, d.val_logits, d.val_labels,
    ...     d.test_logits, d.test_labels, d.costs, [0.03, 0.04, 0.05])
    >>> [line.get_label() for line in display.lines_]
    ['msdnet', 'oracle']
    """

    def __init__(
        self,
        names: Sequence[str],
        budgets: Sequence,
        accuracies: Sequence,
        mean_costs: Sequence,
        *,
        oracle_name: str | None = "oracle",
    ):
        self.names = list(names)
        self.budgets = [np.asarray(b, dtype=np.float64) for b in budgets]
        self.accuracies = [np.asarray(a, dtype=np.float64) for a in accuracies]
        self.mean_costs = [np.asarray(m, dtype=np.float64) for m in mean_costs]
        self.oracle_name = oracle_name
        if not len(self.names) == len(self.budgets) == len(self.accuracies) == len(self.mean_costs):
            raise ValueError(
                "names, budgets, accuracies and mean_costs must have one entry per curve, got "
                f"{len(self.names)}, {len(self.budgets)}, {len(self.accuracies)} and {len(self.mean_costs)}."
            )
        for name, *arrays in zip(self.names, self.budgets, self.accuracies, self.mean_costs, strict=True):
            if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
                raise ValueError(
                    f"curve {name!r}: budgets, accuracies and mean_costs must be 1-D of one length, "
                    f"got shapes {[a.shape for a in arrays]}."
                )

    def plot(self, ax=None, *, x: str = "budget", oracle_kw: Mapping | None = None, **kwargs):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure's when ``None``.
        x : {"budget", "mean_cost"}, default="budget"
            Horizontal axis: the budget each policy was fitted for, or the mean
            cost it measured on the evaluation data (points stay in budget order).
        oracle_kw : dict, default=None
            Line properties of the oracle curve, overriding its dashed black style.
        **kwargs : dict
            Line properties of the policy curves (e.g. ``marker``, ``linewidth``),
            overriding their defaults; each line's label is its curve's name.

        Returns
        -------
        BudgetCurveDisplay
            ``self``, with ``lines_``, ``oracle_line_``, ``ax_`` and ``figure_`` set.
        """
        if x not in _X_AXES:
            raise ValueError(f"x must be one of {tuple(_X_AXES)}, got {x!r}.")
        plt = _import_matplotlib("BudgetCurveDisplay.plot")
        from matplotlib.cbook import normalize_kwargs
        from matplotlib.lines import Line2D

        ax, figure = _axes(plt, ax)
        # Normalised so that an alias given by the caller ("ls") replaces the default ("linestyle").
        policy_style = {"marker": "o", **normalize_kwargs(kwargs, Line2D)}
        oracle_style = {"linestyle": "--", "color": "black", **normalize_kwargs(oracle_kw or {}, Line2D)}
        self.lines_, self.oracle_line_ = [], None
        for name, budgets, accuracies, mean_costs in zip(
            self.names, self.budgets, self.accuracies, self.mean_costs, strict=True
        ):
            is_oracle = name == self.oracle_name
            style = oracle_style if is_oracle else policy_style
            xs = budgets if x == "budget" else mean_costs
            (line,) = ax.plot(xs, accuracies, **{**style, "label": name})
            self.lines_.append(line)
            if is_oracle:
                self.oracle_line_ = line
        ax.set_xlabel(_X_AXES[x])
        ax.set_ylabel("Accuracy")
        ax.legend(loc="lower right")
        self.ax_, self.figure_ = ax, figure
        return self

    @classmethod
    def from_predictions(
        cls,
        curves,
        *,
        oracle_name: str | None = "oracle",
        ax=None,
        x: str = "budget",
        oracle_kw: Mapping | None = None,
        **kwargs,
    ) -> BudgetCurveDisplay:
        """Draw a table of budget-curve results, as :func:`~eenet_sklearn.metrics.budget_curve` returns.

        Parameters
        ----------
        curves : pandas.DataFrame or iterable of dict
            Rows with ``policy``, ``budget``, ``accuracy`` and ``mean_cost``
            (other columns are ignored); at most one row per policy and budget.
        oracle_name : str or None, default="oracle"
            The policy name whose rows are the oracle bound.
        ax, x, oracle_kw, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        BudgetCurveDisplay
        """
        columns: dict[str, dict[str, list[float]]] = {}
        for row in _curve_rows(curves):
            curve = columns.setdefault(row["policy"], {key: [] for key in _CURVE_COLUMNS[1:]})
            for key in _CURVE_COLUMNS[1:]:
                curve[key].append(float(row[key]))
        if not columns:
            raise ValueError("curves is empty: it needs at least one row.")
        names, budgets, accuracies, mean_costs = [], [], [], []
        for name, curve in columns.items():
            budget = np.asarray(curve["budget"])
            # A repeated budget (several seeds, say) would draw a zigzag: ask for one row instead.
            if len(np.unique(budget)) != len(budget):
                raise ValueError(
                    f"curves has several rows for policy {name!r} at one budget; aggregate them "
                    "first (e.g. the mean accuracy and mean cost per policy and budget)."
                )
            order = np.argsort(budget, kind="stable")
            names.append(name)
            budgets.append(budget[order])
            accuracies.append(np.asarray(curve["accuracy"])[order])
            mean_costs.append(np.asarray(curve["mean_cost"])[order])
        display = cls(names, budgets, accuracies, mean_costs, oracle_name=oracle_name)
        return display.plot(ax=ax, x=x, oracle_kw=oracle_kw, **kwargs)

    @classmethod
    def from_estimators(
        cls,
        policies: Mapping[str, object],
        X_fit,
        y_fit,
        X_eval,
        y_eval,
        costs,
        budgets: Sequence[float],
        *,
        include_oracle: bool = True,
        input_type: str | None = None,
        classes=None,
        ax=None,
        x: str = "budget",
        oracle_kw: Mapping | None = None,
        **kwargs,
    ) -> BudgetCurveDisplay:
        """Fit policies at several budgets on one split, measure them on another, and draw them.

        Parameters
        ----------
        policies : dict of str to estimator
            Name to unfitted policy; each is cloned at every budget, as in
            :func:`~eenet_sklearn.metrics.budget_curve`, and left untouched.
        X_fit, y_fit : array-like
            Per-exit outputs and labels the policies are fitted on.
        X_eval, y_eval : array-like
            Per-exit outputs and labels they are measured on.
        costs : array-like of shape (n_exits,)
            Cumulative cost of each exit.
        budgets : sequence of float
            Average budgets per sample, each at least ``costs[0]``.
        include_oracle : bool, default=True
            Also draw the oracle bound on the evaluation split (named ``"oracle"``).
        input_type, classes
            As in :func:`~eenet_sklearn.metrics.budget_curve`.
        ax, x, oracle_kw, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        BudgetCurveDisplay
        """
        if include_oracle and "oracle" in policies:
            raise ValueError(
                'a policy is named "oracle", the name of the oracle curve: rename it or '
                "pass include_oracle=False."
            )
        rows = budget_curve(
            policies, X_fit, y_fit, X_eval, y_eval, costs, budgets,
            include_oracle=include_oracle, input_type=input_type, classes=classes, as_frame=False,
        )
        return cls.from_predictions(
            rows, oracle_name="oracle" if include_oracle else None,
            ax=ax, x=x, oracle_kw=oracle_kw, **kwargs,
        )


def _curve_rows(curves) -> list[Mapping]:
    """The rows of a budget-curve table given as a DataFrame or as an iterable of dicts."""
    if hasattr(curves, "to_dict"):  # a pandas DataFrame, as budget_curve returns with pandas
        missing = [key for key in _CURVE_COLUMNS if key not in curves.columns]
        if missing:
            raise ValueError(f"curves lacks the column(s) {missing}; it needs {list(_CURVE_COLUMNS)}.")
        return curves.to_dict("records")
    if not isinstance(curves, Iterable) or isinstance(curves, str | Mapping):
        raise TypeError(
            f"curves must be a DataFrame or an iterable of dicts (rows), got {type(curves).__name__}."
        )
    rows = list(curves)
    for row in rows:
        if not isinstance(row, Mapping) or any(key not in row for key in _CURVE_COLUMNS):
            raise ValueError(
                f"each row of curves must be a dict with keys {list(_CURVE_COLUMNS)}, got {row!r}."
            )
    return rows


class ExitDistributionDisplay:
    """Bar chart of the fraction of samples leaving at each exit.

    Build it with :meth:`from_estimator` (a fitted policy and data) or
    :meth:`from_predictions` (exit indices), then :meth:`plot` draws it.

    Parameters
    ----------
    fractions : array-like of shape (n_exits,)
        Fraction of samples leaving at each exit.
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit; when given, the tick labels show it and the
        title the mean cost ``fractions @ costs``.
    budget : float, default=None
        The policy's budget, shown in the title next to the mean cost.
    name : str, default=None
        Title of the chart (e.g. the policy's name).

    Attributes
    ----------
    bars_ : matplotlib.container.BarContainer
        One bar per exit.
    ax_ : matplotlib.axes.Axes
    figure_ : matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.plotting import ExitDistributionDisplay
    >>> d = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=d.costs, budget=0.04).fit(d.val_logits, d.val_labels)
    >>> display = ExitDistributionDisplay.from_estimator(policy, d.test_logits)
    >>> len(display.bars_)
    3
    """

    def __init__(self, fractions, *, costs=None, budget: float | None = None, name: str | None = None):
        self.fractions = np.asarray(fractions, dtype=np.float64)
        if self.fractions.ndim != 1 or len(self.fractions) < 1:
            raise ValueError(
                f"fractions must be 1-D with one entry per exit, got shape {self.fractions.shape}."
            )
        self.costs = None if costs is None else check_costs(costs, len(self.fractions))
        if budget is not None and self.costs is None:
            raise ValueError("budget needs costs: pass the exits' costs too.")
        self.budget = None if budget is None else check_budget(budget, self.costs)
        self.name = name

    def plot(self, ax=None, *, annotate: bool = True, **kwargs):
        """Draw the bars.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure's when ``None``.
        annotate : bool, default=True
            Write each bar's percentage above it.
        **kwargs : dict
            Bar properties passed to ``Axes.bar`` (e.g. ``color``).

        Returns
        -------
        ExitDistributionDisplay
            ``self``, with ``bars_``, ``ax_`` and ``figure_`` set.
        """
        plt = _import_matplotlib("ExitDistributionDisplay.plot")
        ax, figure = _axes(plt, ax)
        positions = np.arange(len(self.fractions))
        self.bars_ = ax.bar(positions, self.fractions, **kwargs)
        ticks = [f"exit {k}" for k in positions]
        title = [] if self.name is None else [self.name]
        if self.costs is not None:
            ticks = [f"{tick}\ncost {cost:.3g}" for tick, cost in zip(ticks, self.costs, strict=True)]
            cost_text = f"mean cost {self.fractions @ self.costs:.3g}"
            if self.budget is not None:
                cost_text += f" (budget {self.budget:.3g})"
            title.append(cost_text)
        ax.set_xticks(positions, ticks)
        if annotate:
            ax.bar_label(self.bars_, labels=[f"{f:.1%}" for f in self.fractions])
        # A fixed range, with room for the labels, keeps charts of several policies comparable.
        ax.set_ylim(0.0, 1.1)
        ax.set_xlabel("Exit")
        ax.set_ylabel("Fraction of samples")
        if title:
            ax.set_title(": ".join(title))
        self.ax_, self.figure_ = ax, figure
        return self

    @classmethod
    def from_estimator(
        cls, policy, X, *, name: str | None = None, ax=None, annotate: bool = True, **kwargs
    ) -> ExitDistributionDisplay:
        """Draw where a fitted policy sends the samples of ``X``.

        Parameters
        ----------
        policy : fitted exit policy
            Any estimator with ``predict_exit``, ``n_exits_`` and ``costs_``
            (and ``budget_``, shown when set).
        X : array-like of shape (n_samples, n_exits, n_classes) or flattened
            Per-exit outputs.
        name : str, default=None
            Title; the policy's class name when ``None``.
        ax, annotate, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        ExitDistributionDisplay
        """
        check_is_fitted(policy)
        exits = policy.predict_exit(X)
        display = cls(
            exit_fractions(exits, policy.n_exits_),
            costs=policy.costs_,
            budget=getattr(policy, "budget_", None),
            name=type(policy).__name__ if name is None else name,
        )
        return display.plot(ax=ax, annotate=annotate, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        exits,
        n_exits: int,
        costs=None,
        *,
        budget: float | None = None,
        name: str | None = None,
        ax=None,
        annotate: bool = True,
        **kwargs,
    ) -> ExitDistributionDisplay:
        """Draw the distribution of given exit indices.

        Parameters
        ----------
        exits : array-like of shape (n_samples,)
            Exit index (0-based) of each sample, as ``predict_exit`` returns.
        n_exits : int
            Number of exits (exits nobody took still get a bar).
        costs : array-like of shape (n_exits,), default=None
            Cumulative cost of each exit, shown on the ticks and in the title.
        budget : float, default=None
            Budget shown in the title; needs ``costs``.
        name : str, default=None
            Title.
        ax, annotate, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        ExitDistributionDisplay
        """
        check_scalar(n_exits, "n_exits", Integral, min_val=1)
        exits = np.asarray(exits)
        if exits.ndim != 1 or len(exits) == 0 or exits.dtype.kind not in "iu":
            raise ValueError(
                f"exits must be a non-empty 1-D array of integer exit indices, got shape {exits.shape} "
                f"and dtype {exits.dtype}."
            )
        if exits.min() < 0 or exits.max() >= n_exits:
            raise ValueError(
                f"exits must lie in [0, n_exits - 1] = [0, {n_exits - 1}], got values from "
                f"{exits.min()} to {exits.max()}."
            )
        display = cls(exit_fractions(exits, n_exits), costs=costs, budget=budget, name=name)
        return display.plot(ax=ax, annotate=annotate, **kwargs)

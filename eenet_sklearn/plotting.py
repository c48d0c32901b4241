"""Displays for budgets and exits, after scikit-learn's Display convention.

Each display holds computed data, draws it with ``plot(ax=None, ...)`` (which
returns the display with ``ax_``, ``figure_`` and the drawn artists set) and is
built by classmethods that compute the data (``from_estimator(s)``) or take it
ready-made (``from_predictions``). Matplotlib is imported only when drawing, so
that the rest of the package works without it (``pip install matplotlib``).
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
    "budget": "Budget: mean cost allowed per sample",
    "mean_cost": "Mean cost per sample, measured",
}
# Where plot(legend_loc="outside") puts the legend: beside the axes, right of the plot area.
_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
_CURVE_COLUMNS = ("policy", "budget", "accuracy", "mean_cost")


def _import_matplotlib(caller: str):
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f'{caller} needs matplotlib: pip install matplotlib (or pip install -e ".[plot]" in a clone).'
        ) from exc
    return plt


def _with_unit(label: str, unit: str | None) -> str:
    """An axis label with the unit in parentheses, when one is given."""
    return label if unit is None else f"{label} ({unit})"


def _check_unit(cost_unit) -> str | None:
    """``cost_unit`` as given, after checking that it is a string or None."""
    if cost_unit is not None and not isinstance(cost_unit, str):
        raise TypeError(f"cost_unit must be a str (such as 'ms') or None, got {type(cost_unit).__name__}.")
    return cost_unit


def _axes(plt, ax):
    """The given axes and its figure, or a new figure's axes."""
    if ax is None:
        figure, ax = plt.subplots()
        return ax, figure
    return ax, ax.figure


class BudgetCurveDisplay:
    """Accuracy against budget (or measured mean cost) of several exit policies.

    One line per policy, in the axes' colour cycle, with a marker at every
    measured point; the oracle bound, when present, as a distinct dashed black
    line with its own markers (so that it stays visible when all its points
    coincide, as when the oracle's mean cost is the same at every budget).
    Build it with :meth:`from_estimators` (fits the
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
    cost_unit : str or None, default=None
        Unit of the budgets and costs (such as ``"ms"`` or ``"FLOPs"``), shown in
        the horizontal axis label, e.g. "Mean cost per sample, measured (ms)".

    Attributes
    ----------
    lines_ : list of matplotlib.lines.Line2D
        One line per curve, in the order of ``names`` (the oracle's included).
    oracle_line_ : matplotlib.lines.Line2D or None
        The oracle's line, or ``None`` without an oracle curve.
    ax_ : matplotlib.axes.Axes
        The axes drawn on.
    figure_ : matplotlib.figure.Figure
        The figure of ``ax_``.

    Raises
    ------
    ValueError
        If ``names``, ``budgets``, ``accuracies`` and ``mean_costs`` do not have one
        entry per curve, or a curve's arrays are not 1-D of one length.
    TypeError
        If ``cost_unit`` is neither a string nor ``None``.

    See Also
    --------
    eenet_sklearn.metrics.budget_curve : Computes the table this display draws.
    ExitDistributionDisplay : Where one fitted policy sends the samples.
    sklearn.metrics.RocCurveDisplay : The scikit-learn display convention followed here.

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
    ...     d.test_logits, d.test_labels, d.costs, [0.03, 0.04, 0.05], cost_unit="ms")
    >>> [line.get_label() for line in display.lines_]
    ['msdnet', 'oracle']
    >>> display.ax_.get_xlabel()
    'Budget: mean cost allowed per sample (ms)'
    """

    def __init__(
        self,
        names: Sequence[str],
        budgets: Sequence,
        accuracies: Sequence,
        mean_costs: Sequence,
        *,
        oracle_name: str | None = "oracle",
        cost_unit: str | None = None,
    ):
        self.names = list(names)
        self.budgets = [np.asarray(b, dtype=np.float64) for b in budgets]
        self.accuracies = [np.asarray(a, dtype=np.float64) for a in accuracies]
        self.mean_costs = [np.asarray(m, dtype=np.float64) for m in mean_costs]
        self.oracle_name = oracle_name
        self.cost_unit = _check_unit(cost_unit)
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

    def plot(
        self,
        ax=None,
        *,
        x: str = "budget",
        oracle_kw: Mapping | None = None,
        legend_loc: str | None = "best",
        **kwargs,
    ):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure's when ``None``.
        x : {"budget", "mean_cost"}, default="budget"
            Horizontal axis: the budget each policy was fitted for, or the mean
            cost it measured on the evaluation data (points stay in budget order).
        oracle_kw : dict, default=None
            Line properties of the oracle curve, overriding its dashed black style
            with ``"x"`` markers.
        legend_loc : str or None, default="best"
            Where the legend goes: any ``loc`` of ``Axes.legend`` (``"best"``
            lets matplotlib choose the corner that covers the fewest points),
            ``"outside"`` for beside the axes, right of the plot area (the figure
            is widened to make room, when this display created it), or ``None``
            for no legend.
        **kwargs : dict
            Line properties of the policy curves (e.g. ``marker``, ``linewidth``),
            overriding their defaults (a solid line with ``"o"`` markers); each
            line's label is its curve's name.

        Returns
        -------
        BudgetCurveDisplay
            ``self``, with ``lines_``, ``oracle_line_``, ``ax_`` and ``figure_`` set.

        Raises
        ------
        ValueError
            If ``x`` is not ``"budget"`` or ``"mean_cost"``.
        ImportError
            If matplotlib is not installed.
        """
        if x not in _X_AXES:
            raise ValueError(f"x must be one of {tuple(_X_AXES)}, got {x!r}.")
        plt = _import_matplotlib("BudgetCurveDisplay.plot")
        from matplotlib.cbook import normalize_kwargs
        from matplotlib.lines import Line2D

        if legend_loc is not None and not isinstance(legend_loc, str):
            raise ValueError(f"legend_loc must be a str or None, got {legend_loc!r}.")
        new_figure = ax is None
        ax, figure = _axes(plt, ax)
        # Normalised so that an alias given by the caller ("ls") replaces the default ("linestyle").
        # Every curve has markers: a curve whose points coincide (the oracle's, once its mean
        # cost no longer grows with the budget) is a zero-length line, invisible without them.
        policy_style = {"marker": "o", **normalize_kwargs(kwargs, Line2D)}
        oracle_style = {
            "linestyle": "--", "color": "black", "marker": "x",
            **normalize_kwargs(dict(oracle_kw or {}), Line2D),
        }
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
        ax.set_xlabel(_with_unit(_X_AXES[x], self.cost_unit))
        ax.set_ylabel("Accuracy")
        if legend_loc == "outside":
            ax.legend(**_OUTSIDE)
            if new_figure:  # room for the legend, which the figure's own layout then includes
                width, height = figure.get_size_inches()
                figure.set_size_inches(width * 1.35, height)
                figure.set_layout_engine("constrained")
        elif legend_loc is not None:
            ax.legend(loc=legend_loc)
        self.ax_, self.figure_ = ax, figure
        return self

    @classmethod
    def from_predictions(
        cls,
        curves,
        *,
        oracle_name: str | None = "oracle",
        cost_unit: str | None = None,
        ax=None,
        x: str = "budget",
        oracle_kw: Mapping | None = None,
        legend_loc: str | None = "best",
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
        cost_unit : str or None, default=None
            Unit of the budgets and costs, shown in the axis label (e.g. ``"ms"``).
        ax, x, oracle_kw, legend_loc, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        BudgetCurveDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``curves`` is empty, lacks one of the columns ``policy``, ``budget``,
            ``accuracy`` and ``mean_cost``, or has several rows for one policy and budget.
        TypeError
            If ``curves`` is neither a DataFrame nor an iterable of dicts.

        See Also
        --------
        eenet_sklearn.metrics.budget_curve : Makes such a table.
        BudgetCurveDisplay.from_estimators : Fits the policies and draws them in one call.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from eenet_sklearn.plotting import BudgetCurveDisplay
        >>> rows = [
        ...     {"policy": "rule", "budget": 1.0, "accuracy": 0.80, "mean_cost": 0.98},
        ...     {"policy": "rule", "budget": 2.0, "accuracy": 0.85, "mean_cost": 1.99},
        ...     {"policy": "oracle", "budget": 1.0, "accuracy": 0.90, "mean_cost": 1.0},
        ...     {"policy": "oracle", "budget": 2.0, "accuracy": 0.90, "mean_cost": 1.0},
        ... ]
        >>> display = BudgetCurveDisplay.from_predictions(rows, cost_unit="ms", x="mean_cost")
        >>> display.oracle_line_.get_marker(), display.ax_.get_xlabel()
        ('x', 'Mean cost per sample, measured (ms)')
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
        display = cls(names, budgets, accuracies, mean_costs, oracle_name=oracle_name, cost_unit=cost_unit)
        return display.plot(ax=ax, x=x, oracle_kw=oracle_kw, legend_loc=legend_loc, **kwargs)

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
        cost_unit: str | None = None,
        ax=None,
        x: str = "budget",
        oracle_kw: Mapping | None = None,
        legend_loc: str | None = "best",
        **kwargs,
    ) -> BudgetCurveDisplay:
        """Fit policies at several budgets on one split, measure them on another, and draw them.

        Parameters
        ----------
        policies : dict of str to estimator
            Name to unfitted policy; each is cloned at every budget, as in
            :func:`~eenet_sklearn.metrics.budget_curve`, and left untouched.
        X_fit : array-like of shape (n_samples, n_exits, n_classes) or (n_samples, n_exits * n_classes)
            Per-exit outputs the policies are fitted on.
        y_fit : array-like of shape (n_samples,)
            Their labels.
        X_eval : array-like of shape (n_eval_samples, n_exits, n_classes) or flattened
            Per-exit outputs the policies are measured on.
        y_eval : array-like of shape (n_eval_samples,)
            Their labels.
        costs : array-like of shape (n_exits,)
            Cumulative cost of each exit, in any unit (name it with ``cost_unit``).
        budgets : sequence of float
            Mean costs allowed per sample, in the unit of ``costs``, each at least ``costs[0]``.
        include_oracle : bool, default=True
            Also draw the oracle bound on the evaluation split (named ``"oracle"``).
        input_type, classes
            As in :func:`~eenet_sklearn.metrics.budget_curve`.
        cost_unit : str or None, default=None
            Unit of ``costs`` and ``budgets``, shown in the axis label (e.g. ``"ms"``).
        ax, x, oracle_kw, legend_loc, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        BudgetCurveDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If a policy is named ``"oracle"`` while ``include_oracle`` is true, or as
            :func:`~eenet_sklearn.metrics.budget_curve` raises for invalid data,
            costs or budgets.

        See Also
        --------
        eenet_sklearn.metrics.budget_curve : The fit-and-measure loop behind it.
        eenet_sklearn.metrics.oracle_accuracy : The oracle bound.
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
            rows, oracle_name="oracle" if include_oracle else None, cost_unit=cost_unit,
            ax=ax, x=x, oracle_kw=oracle_kw, legend_loc=legend_loc, **kwargs,
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
    cost_unit : str or None, default=None
        Unit of ``costs`` and ``budget`` (such as ``"ms"``), shown after every
        cost on the ticks (``0.116 ms`` under ``exit 0``, where without a unit it
        reads ``cost 0.116``), in the title and in the axis label.

    Attributes
    ----------
    bars_ : matplotlib.container.BarContainer
        One bar per exit.
    ax_ : matplotlib.axes.Axes
        The axes drawn on.
    figure_ : matplotlib.figure.Figure
        The figure of ``ax_``.

    Raises
    ------
    ValueError
        If ``fractions`` is not 1-D and non-empty, ``costs`` is not one strictly
        increasing positive cost per exit, or ``budget`` is given without
        ``costs`` or below ``costs[0]``.
    TypeError
        If ``cost_unit`` is neither a string nor ``None``.

    See Also
    --------
    BudgetCurveDisplay : Accuracy against budget of several policies.
    eenet_sklearn.base.BaseExitPolicy.predict_exit : The exits drawn here.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> from eenet_sklearn.plotting import ExitDistributionDisplay
    >>> d = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=d.costs, budget=0.04).fit(d.val_logits, d.val_labels)
    >>> display = ExitDistributionDisplay.from_estimator(policy, d.test_logits, cost_unit="ms")
    >>> len(display.bars_)
    3
    >>> display.ax_.get_xlabel()
    'Exit (cumulative cost in ms)'
    """

    def __init__(
        self,
        fractions,
        *,
        costs=None,
        budget: float | None = None,
        name: str | None = None,
        cost_unit: str | None = None,
    ):
        self.fractions = np.asarray(fractions, dtype=np.float64)
        if self.fractions.ndim != 1 or len(self.fractions) < 1:
            raise ValueError(
                f"fractions must be 1-D with one entry per exit, got shape {self.fractions.shape}."
            )
        self.costs = None if costs is None else check_costs(costs, len(self.fractions))
        if budget is None:
            self.budget = None
        elif self.costs is None:
            raise ValueError("budget needs costs: pass the exits' costs too.")
        else:
            self.budget = check_budget(budget, self.costs)
        self.name = name
        self.cost_unit = _check_unit(cost_unit)

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

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        """
        plt = _import_matplotlib("ExitDistributionDisplay.plot")
        ax, figure = _axes(plt, ax)
        positions = np.arange(len(self.fractions))
        self.bars_ = ax.bar(positions, self.fractions, **kwargs)
        ticks = [f"exit {k}" for k in positions]
        title = [] if self.name is None else [self.name]
        unit = "" if self.cost_unit is None else f" {self.cost_unit}"
        xlabel = "Exit"
        if self.costs is not None:
            # With a unit the axis label says these are costs: "exit 0\n0.116 ms".
            cost_word = "cost " if self.cost_unit is None else ""
            ticks = [
                f"{tick}\n{cost_word}{cost:.3g}{unit}" for tick, cost in zip(ticks, self.costs, strict=True)
            ]
            cost_text = f"mean cost {self.fractions @ self.costs:.3g}{unit}"
            if self.budget is not None:
                cost_text += f" (budget {self.budget:.3g}{unit})"
            title.append(cost_text)
            if self.cost_unit is not None:
                xlabel = f"Exit (cumulative cost in {self.cost_unit})"
        ax.set_xticks(positions, ticks)
        if annotate:
            ax.bar_label(self.bars_, labels=[f"{f:.1%}" for f in self.fractions])
        # A fixed range, with room for the labels, keeps charts of several policies comparable.
        ax.set_ylim(0.0, 1.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Fraction of samples")
        if title:
            ax.set_title(": ".join(title))
        self.ax_, self.figure_ = ax, figure
        return self

    @classmethod
    def from_estimator(
        cls,
        policy,
        X,
        *,
        name: str | None = None,
        cost_unit: str | None = None,
        ax=None,
        annotate: bool = True,
        **kwargs,
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
        cost_unit : str or None, default=None
            Unit of the policy's costs and budget (e.g. ``"ms"``), shown with them.
        ax, annotate, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        ExitDistributionDisplay
            The display, drawn.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If ``policy`` is not fitted.
        ValueError
            If ``X`` does not match the policy's exits and classes (raised by its
            ``predict_exit``).

        See Also
        --------
        eenet_sklearn.base.BaseExitPolicy.predict_exit : The exits counted here.
        """
        check_is_fitted(policy)
        exits = policy.predict_exit(X)
        display = cls(
            exit_fractions(exits, policy.n_exits_),
            costs=policy.costs_,
            budget=getattr(policy, "budget_", None),
            name=type(policy).__name__ if name is None else name,
            cost_unit=cost_unit,
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
        cost_unit: str | None = None,
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
        cost_unit : str or None, default=None
            Unit of ``costs`` and ``budget`` (e.g. ``"ms"``), shown with them.
        ax, annotate, **kwargs
            As in :meth:`plot`.

        Returns
        -------
        ExitDistributionDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``exits`` is not a non-empty 1-D array of integers in
            ``[0, n_exits - 1]``, ``n_exits`` is below 1, or ``costs`` / ``budget``
            are invalid (see the class).

        See Also
        --------
        ExitDistributionDisplay.from_estimator : From a fitted policy and its inputs.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from eenet_sklearn.plotting import ExitDistributionDisplay
        >>> display = ExitDistributionDisplay.from_predictions(
        ...     [0, 0, 2, 2, 2], n_exits=4, costs=[1.0, 2.0, 3.0, 4.0], cost_unit="ms")
        >>> [float(bar.get_height()) for bar in display.bars_]
        [0.4, 0.0, 0.6, 0.0]
        >>> display.ax_.get_title()
        'mean cost 2.2 ms'
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
        display = cls(
            exit_fractions(exits, n_exits), costs=costs, budget=budget, name=name, cost_unit=cost_unit
        )
        return display.plot(ax=ax, annotate=annotate, **kwargs)

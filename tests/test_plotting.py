"""The budget-curve and exit-distribution displays, drawn off-screen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display is needed or wanted

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch

from eenet_sklearn import (
    BudgetCurveDisplay,
    EntropyPolicy,
    ExitDistributionDisplay,
    FixedExitPolicy,
    MaxProbPolicy,
)
from eenet_sklearn.metrics import budget_curve

NAMES = ["eenet", "msdnet", "branchynet", "fixed"]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def curve_setup(mnist: Bunch, make_eenet) -> Bunch:
    """Policies, budgets, and their budget-curve table (fit on val, measured on test)."""
    policies = {
        "eenet": make_eenet(),
        "msdnet": MaxProbPolicy(),
        "branchynet": EntropyPolicy(),
        "fixed": FixedExitPolicy(),
    }
    costs = mnist.costs
    budgets = [costs[0] + f * (costs[-1] - costs[0]) for f in (0.1, 0.3, 0.6)]
    args = (policies, mnist.X, mnist.y, mnist.X_test, mnist.y_test, costs, budgets)
    return Bunch(args=args, budgets=budgets, rows=budget_curve(*args, as_frame=False))


def _curve(rows: list[dict], name: str, column: str) -> np.ndarray:
    return np.array([row[column] for row in rows if row["policy"] == name])


def test_budget_curve_display_from_estimators(curve_setup: Bunch):
    display = BudgetCurveDisplay.from_estimators(*curve_setup.args)

    assert [line.get_label() for line in display.lines_] == [*NAMES, "oracle"]
    assert display.oracle_line_ is display.lines_[-1]
    assert display.oracle_line_.get_linestyle() == "--"
    assert all(line.get_linestyle() == "-" for line in display.lines_[:-1])
    assert {line.get_color() for line in display.lines_[:-1]}.isdisjoint({display.oracle_line_.get_color()})
    for line in display.lines_:
        np.testing.assert_allclose(line.get_xdata(), curve_setup.budgets)
    assert display.ax_.get_xlabel().startswith("Budget")
    assert display.ax_.get_ylabel() == "Accuracy"
    assert [t.get_text() for t in display.ax_.get_legend().get_texts()] == [*NAMES, "oracle"]
    assert display.figure_ is display.ax_.figure

    # The same table, drawn without fitting, gives the same lines.
    again = BudgetCurveDisplay.from_predictions(curve_setup.rows)
    assert len(again.lines_) == len(display.lines_)
    for fitted, given in zip(display.lines_, again.lines_, strict=True):
        assert fitted.get_label() == given.get_label()
        np.testing.assert_array_equal(fitted.get_xdata(), given.get_xdata())
        np.testing.assert_array_equal(fitted.get_ydata(), given.get_ydata())


def test_oracle_line_lies_on_or_above_every_policy(curve_setup: Bunch):
    display = BudgetCurveDisplay.from_predictions(curve_setup.rows)
    oracle = display.oracle_line_.get_ydata()
    for line in display.lines_[:-1]:
        assert np.all(line.get_ydata() <= oracle), line.get_label()


def test_from_predictions_reads_a_dataframe(curve_setup: Bunch):
    pd = pytest.importorskip("pandas")
    # Rows shuffled: each curve is still drawn in budget order.
    frame = pd.DataFrame(curve_setup.rows).sample(frac=1.0, random_state=0)
    display = BudgetCurveDisplay.from_predictions(frame)
    assert sorted(line.get_label() for line in display.lines_) == sorted([*NAMES, "oracle"])
    for line in display.lines_:
        rows = curve_setup.rows
        np.testing.assert_array_equal(line.get_xdata(), _curve(rows, line.get_label(), "budget"))
        np.testing.assert_array_equal(line.get_ydata(), _curve(rows, line.get_label(), "accuracy"))


def test_x_axis_can_be_the_measured_mean_cost(curve_setup: Bunch):
    display = BudgetCurveDisplay.from_predictions(curve_setup.rows, x="mean_cost")
    for line in display.lines_:
        expected = _curve(curve_setup.rows, line.get_label(), "mean_cost")
        np.testing.assert_array_equal(line.get_xdata(), expected)
    assert "mean cost" in display.ax_.get_xlabel().lower()
    with pytest.raises(ValueError, match="x must be one of"):
        BudgetCurveDisplay.from_predictions(curve_setup.rows, x="flops")


def test_budget_curve_draws_onto_given_axes(curve_setup: Bunch):
    figure, (left, right) = plt.subplots(1, 2)
    n_figures = len(plt.get_fignums())
    display = BudgetCurveDisplay.from_predictions(curve_setup.rows, ax=right)
    assert display.ax_ is right and display.figure_ is figure
    assert len(right.get_lines()) == len(NAMES) + 1 and len(left.get_lines()) == 0
    assert len(plt.get_fignums()) == n_figures

    # plot() again on other axes draws a second copy there and points the display at it.
    display.plot(ax=left)
    assert display.ax_ is left and len(left.get_lines()) == len(NAMES) + 1


def test_line_styles_can_be_overridden(curve_setup: Bunch):
    # Aliases ("ls") replace the defaults they stand for rather than clashing with them.
    display = BudgetCurveDisplay.from_predictions(
        curve_setup.rows, ls=":", marker="s", oracle_kw={"c": "red", "lw": 3}
    )
    for line in display.lines_[:-1]:
        assert line.get_linestyle() == ":" and line.get_marker() == "s"
    oracle = display.oracle_line_
    assert oracle.get_color() == "red" and oracle.get_linewidth() == 3
    assert oracle.get_linestyle() == "--"


def test_curves_without_oracle(curve_setup: Bunch):
    rows = [row for row in curve_setup.rows if row["policy"] != "oracle"]
    display = BudgetCurveDisplay.from_predictions(rows)
    assert display.oracle_line_ is None
    assert [line.get_label() for line in display.lines_] == NAMES
    # With no oracle named, a curve called "oracle" is drawn like the policies.
    display = BudgetCurveDisplay.from_predictions(curve_setup.rows, oracle_name=None)
    assert display.oracle_line_ is None
    assert all(line.get_linestyle() == "-" for line in display.lines_)


def test_budget_curve_display_rejects_bad_tables(curve_setup: Bunch):
    rows = curve_setup.rows
    with pytest.raises(ValueError, match="several rows for policy 'msdnet'"):
        BudgetCurveDisplay.from_predictions(rows + [r for r in rows if r["policy"] == "msdnet"])
    with pytest.raises(ValueError, match="keys"):
        BudgetCurveDisplay.from_predictions([{"policy": "a", "budget": 1.0, "accuracy": 0.5}])
    with pytest.raises(ValueError, match="empty"):
        BudgetCurveDisplay.from_predictions([])
    with pytest.raises(TypeError, match="curves must be"):
        BudgetCurveDisplay.from_predictions({"policy": "a"})
    with pytest.raises(ValueError, match="one entry per curve"):
        BudgetCurveDisplay(["a", "b"], [[1.0]], [[0.5]], [[1.0]])
    with pytest.raises(ValueError, match="one length"):
        BudgetCurveDisplay(["a"], [[1.0, 2.0]], [[0.5]], [[1.0, 2.0]])
    _, *data = curve_setup.args
    with pytest.raises(ValueError, match='named "oracle"'):
        BudgetCurveDisplay.from_estimators({"oracle": MaxProbPolicy()}, *data)


def test_exit_distribution_hand_case():
    # Exits 0, 0, 2, 2, 2 of four: 40 % leave at exit 0, 60 % at exit 2, none at 1 or 3;
    # with costs 1, 2, 3, 4 the mean cost is 0.4 * 1 + 0.6 * 3 = 2.2.
    display = ExitDistributionDisplay.from_predictions(
        [0, 0, 2, 2, 2], n_exits=4, costs=[1.0, 2.0, 3.0, 4.0], budget=2.5, name="rule"
    )
    heights = [bar.get_height() for bar in display.bars_]
    np.testing.assert_allclose(heights, [0.4, 0.0, 0.6, 0.0])
    ticks = [t.get_text() for t in display.ax_.get_xticklabels()]
    assert ticks == ["exit 0\ncost 1", "exit 1\ncost 2", "exit 2\ncost 3", "exit 3\ncost 4"]
    assert display.ax_.get_title() == "rule: mean cost 2.2 (budget 2.5)"
    labels = [t.get_text() for t in display.ax_.texts]
    assert labels == ["40.0%", "0.0%", "60.0%", "0.0%"]
    assert display.ax_.get_ylabel() == "Fraction of samples"


def test_exit_distribution_without_costs_or_labels():
    display = ExitDistributionDisplay.from_predictions(np.array([1, 1, 0]), 2, annotate=False, color="C3")
    np.testing.assert_allclose([bar.get_height() for bar in display.bars_], [1 / 3, 2 / 3])
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["exit 0", "exit 1"]
    assert display.ax_.get_title() == "" and not display.ax_.texts
    assert matplotlib.colors.same_color(display.bars_[0].get_facecolor(), "C3")


def test_exit_distribution_from_fitted_policy(mnist: Bunch, fitted_eenet):
    display = ExitDistributionDisplay.from_estimator(fitted_eenet, mnist.X_test)
    heights = np.array([bar.get_height() for bar in display.bars_])
    assert len(heights) == fitted_eenet.n_exits_ == 3
    np.testing.assert_allclose(heights.sum(), 1.0)
    # The bars weighted by the exit costs give the policy's own mean cost.
    mean_cost = fitted_eenet.expected_cost(mnist.X_test)
    np.testing.assert_allclose(heights @ mnist.costs, mean_cost)
    title = display.ax_.get_title()
    assert title.startswith("EarlyExitPolicy: mean cost")
    assert f"{mean_cost:.3g}" in title and f"budget {fitted_eenet.budget_:.3g}" in title


def test_exit_distribution_draws_onto_given_axes(mnist: Bunch, fitted_eenet):
    figure, (left, right) = plt.subplots(1, 2)
    display = ExitDistributionDisplay.from_estimator(fitted_eenet, mnist.X_test, ax=left, name="EENet")
    assert display.ax_ is left and display.figure_ is figure
    assert len(left.patches) == 3 and len(right.patches) == 0
    assert left.get_title().startswith("EENet: ")


def test_exit_distribution_rejects_bad_input(mnist: Bunch):
    with pytest.raises(NotFittedError):
        ExitDistributionDisplay.from_estimator(MaxProbPolicy(costs=mnist.costs, budget=0.04), mnist.X)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        ExitDistributionDisplay.from_predictions([0, 3], n_exits=3)
    with pytest.raises(ValueError, match="integer exit indices"):
        ExitDistributionDisplay.from_predictions([0.0, 1.0], n_exits=3)
    with pytest.raises(ValueError, match="n_exits"):
        ExitDistributionDisplay.from_predictions([0], n_exits=0)
    with pytest.raises(ValueError, match="budget needs costs"):
        ExitDistributionDisplay.from_predictions([0], n_exits=2, budget=1.0)
    with pytest.raises(ValueError, match="costs has 2 entries"):
        ExitDistributionDisplay.from_predictions([0], n_exits=3, costs=[1.0, 2.0])


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"eenet-sklearn\[plot\]"):
        ExitDistributionDisplay.from_predictions([0, 1], n_exits=2)
    with pytest.raises(ImportError, match=r"BudgetCurveDisplay.plot needs matplotlib"):
        BudgetCurveDisplay(["a"], [[1.0]], [[0.5]], [[1.0]]).plot()


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, eenet_sklearn; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

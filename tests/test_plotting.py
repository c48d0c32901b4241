"""The budget-curve and exit-distribution displays, drawn off-screen."""

from __future__ import annotations

import itertools
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


# A movie-review-like table (3 exits, costs in ms): the policies' accuracy is flat and low,
# so their curves run along the bottom of the axes, through the lower-right corner where the
# legend used to be pinned; the oracle reaches every sample's cheapest correct exit at the
# second budget and then stops spending, so its measured mean cost is the same from there on.
FLAT_ROWS = [
    *({"policy": "eenet", "budget": b, "accuracy": a, "mean_cost": b}
      for b, a in zip([3.0, 5.0, 7.0, 9.0, 11.0], [0.60, 0.61, 0.615, 0.62, 0.62], strict=True)),
    *({"policy": "msdnet", "budget": b, "accuracy": a, "mean_cost": b}
      for b, a in zip([3.0, 5.0, 7.0, 9.0, 11.0], [0.59, 0.605, 0.61, 0.615, 0.62], strict=True)),
    *({"policy": "oracle", "budget": b, "accuracy": a, "mean_cost": m}
      for b, a, m in zip([3.0, 5.0, 7.0, 9.0, 11.0], [0.90, 0.93, 0.93, 0.93, 0.93],
                         [3.0, 4.2, 4.2, 4.2, 4.2], strict=True)),
]


def _dense_display_points(line: matplotlib.lines.Line2D, per_segment: int = 50) -> np.ndarray:
    """Points along a drawn line (vertices and the segments between them), in pixels."""
    xy = line.get_xydata()
    t = np.linspace(0.0, 1.0, per_segment)[:, None]
    points = [xy[:1]] + [(1 - t) * a + t * b for a, b in itertools.pairwise(xy)]
    return line.axes.transData.transform(np.vstack(points))


def test_every_curve_has_markers_and_a_collapsed_oracle_stays_visible():
    # The oracle's last four points coincide on the mean-cost axis (only two distinct points
    # remain); with oracle_name=None and one point per curve, a curve is a single point.
    display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, x="mean_cost")
    for line in display.lines_:
        assert line.get_marker() not in (None, "None", "", " "), line.get_label()
        assert line.get_markersize() > 0
    assert display.oracle_line_.get_marker() != display.lines_[0].get_marker()

    # Render a one-point oracle curve (a zero-length line) and look for its black marker.
    single = [{"policy": "oracle", "budget": 9.0, "accuracy": 0.93, "mean_cost": 4.2}]

    def dark_pixels_at_the_point(**kwargs: object) -> bool:
        display = BudgetCurveDisplay.from_predictions(single, x="mean_cost", legend_loc=None, **kwargs)
        assert len(display.oracle_line_.get_xydata()) == 1
        figure = display.figure_
        figure.canvas.draw()
        pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)
        x, y = display.ax_.transData.transform((4.2, 0.93))
        row, col = round(figure.bbox.height - y), round(x)
        return bool((pixels[row - 4 : row + 5, col - 4 : col + 5].max(axis=-1) < 80).any())

    assert dark_pixels_at_the_point(), "the oracle's only point is not drawn"
    # Without a marker (the caller may turn it off) the point would be invisible.
    assert not dark_pixels_at_the_point(oracle_kw={"marker": "None"})
    display = BudgetCurveDisplay.from_predictions(single, oracle_kw={"marker": "s"})
    assert display.oracle_line_.get_marker() == "s"


def test_cost_unit_is_shown_on_the_axes():
    for x, start in (("budget", "Budget"), ("mean_cost", "Mean cost per sample")):
        display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, x=x, cost_unit="ms")
        assert display.ax_.get_xlabel().startswith(start)
        assert display.ax_.get_xlabel().endswith("(ms)")
        plain = BudgetCurveDisplay.from_predictions(FLAT_ROWS, x=x)
        assert "(" not in plain.ax_.get_xlabel()
    assert BudgetCurveDisplay(["a"], [[1.0]], [[0.5]], [[1.0]], cost_unit="FLOPs").cost_unit == "FLOPs"
    with pytest.raises(TypeError, match="cost_unit must be a str"):
        BudgetCurveDisplay(["a"], [[1.0]], [[0.5]], [[1.0]], cost_unit=1)

    display = ExitDistributionDisplay.from_predictions(
        [0, 0, 2, 2, 2], n_exits=4, costs=[1.0, 2.0, 3.0, 4.0], budget=2.5, name="rule", cost_unit="ms"
    )
    ticks = [t.get_text() for t in display.ax_.get_xticklabels()]
    assert ticks == ["exit 0\n1 ms", "exit 1\n2 ms", "exit 2\n3 ms", "exit 3\n4 ms"]
    assert display.ax_.get_title() == "rule: mean cost 2.2 ms (budget 2.5 ms)"
    assert display.ax_.get_xlabel() == "Exit (cumulative cost in ms)"
    with pytest.raises(TypeError, match="cost_unit must be a str"):
        ExitDistributionDisplay([1.0], cost_unit=b"ms")


def test_exit_distribution_from_estimator_passes_the_unit(mnist: Bunch, fitted_eenet):
    display = ExitDistributionDisplay.from_estimator(fitted_eenet, mnist.X_test, cost_unit="ms")
    assert display.ax_.get_title().endswith(f"(budget {fitted_eenet.budget_:.3g} ms)")


def test_legend_does_not_cover_the_curves():
    display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, x="mean_cost", cost_unit="ms")
    display.figure_.canvas.draw()
    legend = display.ax_.get_legend().get_window_extent()
    for line in display.lines_:
        x, y = _dense_display_points(line).T
        inside = (x >= legend.x0) & (x <= legend.x1) & (y >= legend.y0) & (y <= legend.y1)
        assert not inside.any(), f"the legend covers {line.get_label()}"
    # Where the legend used to be pinned, it covers the policies' curves: the check above bites.
    display.ax_.legend(loc="lower right")
    display.figure_.canvas.draw()
    legend = display.ax_.get_legend().get_window_extent()
    x, y = np.vstack([_dense_display_points(line) for line in display.lines_]).T
    assert ((x >= legend.x0) & (x <= legend.x1) & (y >= legend.y0) & (y <= legend.y1)).any()


def test_legend_placement_is_settable():
    display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, legend_loc="outside")
    display.figure_.canvas.draw()
    legend = display.ax_.get_legend().get_window_extent()
    axes = display.ax_.get_window_extent()
    assert legend.x0 >= axes.x1
    # The widened figure holds the whole legend.
    assert legend.x1 <= display.figure_.bbox.x1

    display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, legend_loc="upper left")
    display.figure_.canvas.draw()
    legend = display.ax_.get_legend().get_window_extent()
    axes = display.ax_.get_window_extent()
    assert legend.x0 - axes.x0 < 20 and axes.y1 - legend.y1 < 20

    display = BudgetCurveDisplay.from_predictions(FLAT_ROWS, legend_loc=None)
    assert display.ax_.get_legend() is None
    with pytest.raises(ValueError, match="legend_loc"):
        BudgetCurveDisplay.from_predictions(FLAT_ROWS, legend_loc=3.5)


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        ExitDistributionDisplay.from_predictions([0, 1], n_exits=2)
    with pytest.raises(ImportError, match=r"BudgetCurveDisplay.plot needs matplotlib"):
        BudgetCurveDisplay(["a"], [[1.0]], [[0.5]], [[1.0]]).plot()


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, eenet_sklearn; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

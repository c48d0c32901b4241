"""The helpers the command line, the demo and the benchmarks share: budget positions, the
fit-and-measure loop's options, the policy registry, the report table, plain output."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn._report import budget_curve_table, colour_only_on_terminals
from eenet_sklearn.datasets import load_exit_logits
from eenet_sklearn.metrics import budget_at_position, budget_curve, oracle_accuracy

COSTS = [2.0, 3.0, 6.0]


# --- budget_at_position ----------------------------------------------------------------


def test_budget_at_position_spans_the_first_to_the_last_cost() -> None:
    assert budget_at_position(COSTS, 0.0) == 2.0
    assert budget_at_position(COSTS, 1.0) == 6.0
    assert budget_at_position(COSTS, 0.25) == 3.0
    assert isinstance(budget_at_position(COSTS, 0.5), float)
    assert_array_equal(budget_at_position(np.array(COSTS), [0.0, 0.5, 0.75]), [2.0, 4.0, 5.0])


@pytest.mark.parametrize(
    ("position", "error", "message"),
    [
        (1.5, ValueError, r"position must lie in \[0, 1\].*got \[1.5\]"),
        ([0.2, -0.1], ValueError, r"got \[-0.1\]"),
        (float("nan"), ValueError, r"got \[nan\]"),
        ([[0.1]], ValueError, r"non-empty 1-D array, got shape \(1, 1\)"),
        ([], ValueError, r"got shape \(0,\)"),
        ("0.5", TypeError, "position must be a number"),
        (True, TypeError, "position must be a number"),
        (0.5j, TypeError, "position must be a number"),
    ],
)
def test_budget_at_position_rejects_bad_positions(position, error, message) -> None:
    with pytest.raises(error, match=message):
        budget_at_position(COSTS, position)


def test_budget_at_position_checks_the_costs() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        budget_at_position([3.0, 2.0], 0.5)


# --- budget_curve: return_estimators and verbose -------------------------------------------


@pytest.fixture(scope="module")
def mnist_small():
    d = load_exit_logits("mnist_mlp3")
    return d.val_logits[:1500], d.val_labels[:1500], d.test_logits[:1500], d.test_labels[:1500], d.costs


def test_budget_curve_returns_the_fitted_clones(mnist_small) -> None:
    X_fit, y_fit, X_eval, y_eval, costs = mnist_small
    budgets = budget_at_position(costs, [0.2, 0.6]).tolist()
    policies = {"rule": MaxProbPolicy(), "fixed": FixedExitPolicy()}
    rows = budget_curve(
        policies, X_fit, y_fit, X_eval, y_eval, costs, budgets, as_frame=False, return_estimators=True
    )
    assert [row["policy"] for row in rows] == ["rule", "fixed", "oracle"] * 2
    for row in rows:
        if row["policy"] == "oracle":
            assert row["estimator"] is None
            continue
        estimator = row["estimator"]
        assert estimator is not policies[row["policy"]] and estimator.budget_ == row["budget"]
        # The row measures that very estimator.
        assert row["accuracy"] == pytest.approx(estimator.score(X_eval, y_eval))
        assert row["mean_cost"] == pytest.approx(costs[estimator.predict_exit(X_eval)].mean())
    plain = budget_curve(policies, X_fit, y_fit, X_eval, y_eval, costs, budgets, as_frame=False)
    assert "estimator" not in plain[0]
    # The policies given are left unfitted.
    assert not hasattr(policies["rule"], "thresholds_")


def test_budget_curve_frame_has_the_estimator_column(mnist_small) -> None:
    pytest.importorskip("pandas")
    X_fit, y_fit, X_eval, y_eval, costs = mnist_small
    frame = budget_curve(
        {"rule": MaxProbPolicy()}, X_fit, y_fit, X_eval, y_eval, costs, [costs[1]], return_estimators=True
    )
    assert list(frame.columns)[-1] == "estimator"
    assert isinstance(frame["estimator"][0], MaxProbPolicy) and frame["estimator"][1] is None


def test_budget_curve_verbose_shows_a_progress_bar_over_the_fits(
    mnist_small, capsys: pytest.CaptureFixture[str]
) -> None:
    X_fit, y_fit, X_eval, y_eval, costs = mnist_small
    policies = {"rule": MaxProbPolicy(), "entropy": EntropyPolicy()}
    budget_curve(policies, X_fit, y_fit, X_eval, y_eval, costs, [costs[1], costs[2]], as_frame=False)
    assert capsys.readouterr().err == ""  # quiet by default
    budget_curve(
        policies, X_fit, y_fit, X_eval, y_eval, costs, [costs[1], costs[2]], as_frame=False, verbose=1
    )
    err = capsys.readouterr().err
    assert "fits" in err and "4/4" in err


# --- the policy registry ----------------------------------------------------------------------


def test_the_registry_has_the_six_policies_under_their_command_line_names() -> None:
    assert {name: spec.cls for name, spec in POLICIES.items()} == {
        "eenet": EarlyExitPolicy,
        "maxprob": MaxProbPolicy,
        "entropy": EntropyPolicy,
        "patience": PatiencePolicy,
        "fixed": FixedExitPolicy,
        "learned-score": LearnedScorePolicy,
    }
    labels = [spec.label for spec in POLICIES.values()]
    short = [spec.short_label for spec in POLICIES.values()]
    assert len(set(labels)) == len(set(short)) == 6 and "oracle" not in labels + short


def test_make_policy_builds_with_costs_budget_and_parameters() -> None:
    policy = make_policy("eenet", COSTS, 4.0, max_epochs=3, random_state=7)
    assert type(policy) is EarlyExitPolicy
    assert (policy.costs, policy.budget, policy.max_epochs, policy.random_state) == (COSTS, 4.0, 3, 7)
    assert make_policy("fixed", COSTS, exit=2).exit == 2
    with pytest.raises(ValueError, match=r"policy must be one of eenet, maxprob, .*, got 'msdnet'"):
        make_policy("msdnet")
    with pytest.raises(TypeError, match="max_epochs"):
        make_policy("maxprob", COSTS, 4.0, max_epochs=3)


# --- the report table and plain output ------------------------------------------------------


def test_the_table_gives_each_budget_its_position_and_the_cost_ratio(mnist_small) -> None:
    X_fit, y_fit, X_eval, y_eval, costs = mnist_small
    budget = budget_at_position(costs, 0.5)
    rows = budget_curve(
        {"rule": MaxProbPolicy()}, X_fit, y_fit, X_eval, y_eval, costs, [budget], as_frame=False
    )
    lines = budget_curve_table(rows, costs, unit="ms").splitlines()
    assert lines[0].startswith("| budget (ms) | position | policy |")
    cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert cells[1:3] == ["0.500", "oracle"]
    oracle = oracle_accuracy(X_eval, y_eval, costs, budget)
    assert float(cells[3]) == pytest.approx(oracle, abs=5e-5)
    assert_allclose(float(cells[5]), rows[1]["mean_cost"] / budget, atol=5e-4)


class _Stream:
    """A text stream that records what it is given and says whether it is a terminal."""

    def __init__(self, terminal: bool):
        self.terminal, self.text = terminal, ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("terminal", [False, True])
def test_colour_codes_reach_terminals_only(terminal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Stream(terminal)
    monkeypatch.setattr(sys, "stdout", stream)
    with colour_only_on_terminals():
        print("\x1b[32m0.1234\x1b[0m loss")
    assert sys.stdout is stream  # restored
    assert stream.text == ("\x1b[32m0.1234\x1b[0m loss\n" if terminal else "0.1234 loss\n")

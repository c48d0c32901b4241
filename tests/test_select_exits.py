"""select_exits and exit_subset_costs: which exits to keep when every head costs compute."""

from __future__ import annotations

import csv
import importlib.util
import warnings
from math import comb
from pathlib import Path

import numpy as np
import pytest
from joblib import parallel_backend
from sklearn.base import clone

from eenet_sklearn import MaxProbPolicy, exit_subset_costs, select_exits
from eenet_sklearn.base import SmallFittingSetWarning


def _fold_pairs(n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two folds, the even and the odd rows: the data below repeat every two rows, so each
    half holds the same samples and the accuracies are the hand-worked ones exactly."""
    even, odd = np.arange(0, n_samples, 2), np.arange(1, n_samples, 2)
    return [(even, odd), (odd, even)]


def _logits(correct: np.ndarray, margin: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Two-class logits: ``margin`` in favour of the true class where ``correct``, of the
    other class elsewhere."""
    logits = np.zeros((len(label), 2))
    predicted = np.where(correct, label, 1 - label)
    logits[np.arange(len(label)), predicted] = margin
    return logits


def _groups(n_groups: int, per_group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group of each sample, its label (both classes in every group) and a rank that makes
    the margins distinct within the even rows and within the odd rows (no ties at a
    threshold). Rows come in identical pairs (same group, label and rank), so the even and
    the odd rows hold the same samples."""
    group = np.repeat(np.arange(n_groups), per_group)
    label = np.tile([0, 0, 1, 1], n_groups * per_group // 4)
    rank = np.repeat(np.arange(n_groups * per_group // 2), 2) / (n_groups * per_group)
    return group, label, rank


def _useless_middle_exit() -> tuple[np.ndarray, np.ndarray]:
    """Half the samples are right and sure at exit 0; the other half are wrong and unsure
    there. Exit 1 repeats exit 0 exactly; exit 2 is right and sure on every sample."""
    group, label, rank = _groups(2, 120)
    easy = group == 0
    exit0 = _logits(easy, np.where(easy, 4.0 + rank, 0.1 + rank), label)
    exit2 = _logits(np.ones(len(label), bool), 5.0 + rank, label)
    return np.stack([exit0, exit0, exit2], axis=1), label


def _every_exit_helps() -> tuple[np.ndarray, np.ndarray]:
    """Three equal groups: right and sure from exit 0, from exit 1 and from exit 2 on;
    wrong and unsure before that."""
    group, label, rank = _groups(3, 120)
    exits = [_logits(group <= k, np.where(group <= k, 4.0 + rank, 0.1 + rank), label) for k in range(3)]
    return np.stack(exits, axis=1), label


def _select(X, y, costs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallFittingSetWarning)  # folds of 120: expected here
        return select_exits(X, y, costs, cv=_fold_pairs(len(y)), **kwargs)


def test_a_useless_middle_exit_with_a_costly_head_is_dropped():
    X, y = _useless_middle_exit()
    # Stages cost 1 each, heads 0.5 each: cumulative [1.5, 3.0, 4.5].
    result = _select(X, y, [1.5, 3.0, 4.5], head_costs=0.5, budgets=[2.8, 4.0])
    assert result.kept.tolist() == [0, 2]
    # Without head 1, exit 2 costs 4.5 - 0.5.
    np.testing.assert_array_equal(result.costs, [1.5, 4.0])
    # Exits {0, 2} at 2.8: the sure half leaves at 1.5, the rest reach exit 2 at 4.0
    # (1.5 + 0.5 * 2.5 = 2.75 <= 2.8): every sample right. At 4.0 all may reach exit 2.
    np.testing.assert_array_equal(result.accuracy, [1.0, 1.0])
    scores = dict(zip(result.subsets, result.subset_accuracy, strict=True))
    # Every exit at 2.8: a share f reaching exit 2 costs 1.5 + 3 f <= 2.8, so f <= 0.433 and
    # at most 0.5 + 0.433 of the samples are right.
    assert scores[(0, 1, 2)][0] <= 0.5 + 1.3 / 3 + 1e-9
    # The last exit alone costs 3.5 (both heads removed): above 2.8, within 4.0.
    np.testing.assert_array_equal(scores[(2,)], [0.0, 1.0])
    assert result.search == "exhaustive"
    assert sorted(result.subsets) == [(0, 1, 2), (0, 2), (1, 2), (2,)]


def test_every_exit_is_kept_when_heads_are_free_and_every_exit_helps():
    X, y = _every_exit_helps()
    result = _select(X, y, [1.0, 2.0, 3.0], budgets=[1.5, 2.1])
    assert result.kept.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(result.costs, [1.0, 2.0, 3.0])  # free heads: unchanged
    scores = dict(zip(result.subsets, result.subset_accuracy, strict=True))
    # Every exit at 2.1: a third leaves at each exit (cost 2.0), all right.
    assert scores[(0, 1, 2)][1] == 1.0
    # Exits {0, 2} at 2.1: 1 + 2 f <= 2.1, f <= 0.55: at most 1/3 + 0.55 right.
    assert scores[(0, 2)][1] <= 1 / 3 + 0.55 + 1e-9
    # Exits {1, 2} cannot meet 1.5 (exit 1 costs 2) and the last exit alone neither budget.
    assert scores[(1, 2)][0] == 0.0
    np.testing.assert_array_equal(scores[(2,)], [0.0, 0.0])
    assert result.best_by_size == {1: (2,), 2: (0, 2), 3: (0, 1, 2)}


def test_n_exits_fixes_the_number_kept():
    X, y = _every_exit_helps()
    result = _select(X, y, [1.0, 2.0, 3.0], n_exits=2, budgets=[1.5, 2.1])
    assert result.kept.tolist() == [0, 2]
    assert sorted(result.subsets) == [(0, 2), (1, 2)]  # comb(2, 1) subsets, all of size 2


def test_tol_keeps_the_fewest_exits_within_it_of_the_best():
    X, y = _every_exit_helps()
    result = _select(X, y, [1.0, 2.0, 3.0], budgets=[1.5, 2.1], tol=0.2)
    scores = dict(zip(result.subsets, result.subset_mean_accuracy, strict=True))
    # {0, 2}, the better pair ({1, 2} cannot meet 1.5), is within 0.2 of every exit ...
    assert scores[(0, 2)] >= scores[(0, 1, 2)] - 0.2
    # ... and the last exit alone, 0 at both budgets, is not.
    assert result.kept.tolist() == [0, 2]
    assert result.mean_accuracy == scores[(0, 2)]


def test_exit_subset_costs_hand_worked():
    costs, heads = [2.0, 5.0, 9.0, 14.0], [0.5, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(exit_subset_costs(costs, [1, 3], heads), [5.0 - 0.5, 14.0 - 0.5 - 1.5])
    np.testing.assert_allclose(exit_subset_costs(costs, [3], heads), [14.0 - 3.0])
    np.testing.assert_array_equal(exit_subset_costs(costs, [0, 1, 2, 3], heads), costs)
    np.testing.assert_array_equal(exit_subset_costs(costs, [0, 2], None), [2.0, 9.0])
    np.testing.assert_allclose(exit_subset_costs(costs, [0, 2], 0.25), [2.0, 9.0 - 0.25])


def test_exit_subset_costs_rebuilds_the_network_from_stages_and_heads():
    """Against an independent construction: the cost of a kept exit is the sum of every
    stage up to it plus the heads of the kept exits up to it."""
    rng = np.random.default_rng(0)
    stages, heads = rng.uniform(0.5, 2.0, 7), rng.uniform(0.0, 0.4, 7)
    costs = np.cumsum(stages + heads)
    for _ in range(20):
        kept = np.sort(rng.choice(7, size=rng.integers(1, 8), replace=False))
        expected = [stages[: j + 1].sum() + heads[kept[kept <= j]].sum() for j in kept]
        np.testing.assert_allclose(exit_subset_costs(costs, kept, heads), expected, rtol=1e-12)


def test_the_result_costs_are_the_subset_costs():
    X, y = _useless_middle_exit()
    result = _select(X, y, [1.5, 3.0, 4.5], head_costs=[0.5, 0.5, 0.5], budgets=[2.8, 4.0])
    np.testing.assert_array_equal(result.costs, exit_subset_costs([1.5, 3.0, 4.5], result.kept, 0.5))


def test_inputs_and_policy_are_left_untouched():
    X, y = _useless_middle_exit()
    costs, heads, budgets = np.array([1.5, 3.0, 4.5]), np.array([0.5, 0.5, 0.5]), np.array([2.8, 4.0])
    copies = [a.copy() for a in (X, y, costs, heads, budgets)]
    policy = MaxProbPolicy(costs=[9.0, 10.0], budget=9.5)
    before = clone(policy).get_params()
    _select(X, y, costs, head_costs=heads, budgets=budgets, policy=policy)
    for original, copy in zip((X, y, costs, heads, budgets), copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    assert policy.get_params()["costs"] == before["costs"] and policy.budget == 9.5
    assert not hasattr(policy, "thresholds_")


def test_greedy_search_tries_at_most_k_times_k_minus_one_subsets():
    X, y = _every_exit_helps()
    X = X[:, [0, 0, 1, 2]]  # exit 1 repeats exit 0
    # Stages 0.9, 0.4, 0.9, 0.9 and heads 0.1: cumulative [1.0, 1.5, 2.5, 3.5].
    costs = [1.0, 1.5, 2.5, 3.5]
    result = _select(X, y, costs, head_costs=0.1, budgets=[2.3], search="greedy")
    assert result.search == "greedy"
    assert len(result.subsets) <= 4 * 3
    # Without the repeat, exits cost [1.0, 2.4, 3.4]: a third at each (2.27 <= 2.3), all right;
    # with it, a third at exits 0, 2 and 3 costs 2.33: over the budget.
    assert result.kept.tolist() == [0, 2, 3]
    np.testing.assert_allclose(result.costs, [1.0, 2.4, 3.4])
    assert result.accuracy.tolist() == [1.0]
    fixed = _select(X, y, costs, head_costs=0.1, n_exits=2, budgets=[2.3], search="greedy")
    assert len(fixed.kept) == 2 and fixed.kept[-1] == 3
    exhaustive = _select(X, y, costs, n_exits=2, budgets=[2.3], search="exhaustive")
    assert len(exhaustive.subsets) == comb(3, 1)


def test_parallel_evaluation_gives_the_same_result():
    X, y = _every_exit_helps()
    serial = _select(X, y, [1.0, 2.0, 3.0], budgets=[1.5, 2.1])
    with parallel_backend("threading"):  # the joblib path, without starting processes
        parallel = _select(X, y, [1.0, 2.0, 3.0], budgets=[1.5, 2.1], n_jobs=2)
    assert parallel.subsets == serial.subsets and parallel.n_fits == serial.n_fits
    np.testing.assert_array_equal(parallel.subset_accuracy, serial.subset_accuracy)


def test_fit_warnings_are_summarised_once_per_category():
    X, y = _useless_middle_exit()
    with pytest.warns(SmallFittingSetWarning, match=r"of the \d+ policy fits in select_exits") as caught:
        select_exits(X, y, [1.5, 3.0, 4.5], head_costs=0.5, budgets=[2.8], cv=_fold_pairs(len(y)))
    assert sum(issubclass(w.category, SmallFittingSetWarning) for w in caught) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"head_costs": -0.1}, ValueError, r"head_costs must be finite and non-negative"),
        ({"head_costs": [0.1, 0.2]}, ValueError, r"head_costs must .* one entry per exit \(3\)"),
        (
            {"head_costs": [0.1, 1.5, 0.1]},
            ValueError,
            r"head_costs\[1\]=1.5 is not below .*\(1.5 = costs\[1\] - costs\[0\]\)",
        ),
        ({"head_costs": "0.1"}, TypeError, r"head_costs must be"),
        ({"n_exits": 0}, ValueError, r"n_exits must be in \[1, 3\].*got 0"),
        ({"n_exits": 4}, ValueError, r"n_exits must be in \[1, 3\].*got 4"),
        ({"n_exits": 2.0}, TypeError, r"n_exits must be an integer or None"),
        ({"budgets": [1.0]}, ValueError, r"budgets=1.0 is below the first exit's cost 1.5"),
        ({"budgets": []}, ValueError, r"budgets must hold at least one budget"),
        ({"budgets": 3.0}, TypeError, r"budgets must be a sequence of numbers"),
        ({"search": "beam"}, ValueError, r"search must be one of .*'beam'"),
        ({"tol": -0.1}, ValueError, r"tol must be a number in \[0, 1\)"),
        ({"tol": 1.0}, ValueError, r"tol must be a number in \[0, 1\).*got 1.0"),
        ({"tol": "0.1"}, ValueError, r"tol must be a number in \[0, 1\).*'0.1'"),
        ({"cv": 1}, ValueError, r"cv must be at least 2"),
        ({"cv": 0.5}, TypeError, r"cv must be an integer >= 2 or a cross-validation splitter"),
        ({"policy": "MaxProbPolicy"}, TypeError, r"policy must be an unfitted exit policy"),
        ({"costs": [1.5, 3.0]}, ValueError, r"X has 3 exits, expected 2 \(one per entry of costs\)"),
        ({"costs": [1.5, 1.5, 4.5]}, ValueError, r"costs must be strictly increasing"),
        ({"y": np.zeros(5)}, ValueError, r"y has 5 labels but X has 240 samples"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(kwargs, error, match):
    X, y = _useless_middle_exit()
    arguments = {"X": X, "y": y, "costs": [1.5, 3.0, 4.5], **kwargs}
    with pytest.raises(error, match=match):
        select_exits(**arguments)


@pytest.mark.parametrize(
    ("kept", "match"),
    [
        ([], r"kept must be"),
        ([2, 1], r"strictly increasing"),
        ([0, 4], r"each in \[0, 3\]"),
        ([0.5], r"kept must be"),
    ],
)
def test_exit_subset_costs_refuses_bad_kept(kept, match):
    with pytest.raises(ValueError, match=match):
        exit_subset_costs([1.0, 2.0, 3.0, 4.0], kept)


def test_the_benchmark_runs_in_quick_mode(tmp_path, monkeypatch):
    """``benchmarks/exit_selection.py --quick`` (one small set, 1,000 rows), into a temporary dir."""
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location("exit_selection", benchmarks / "exit_selection.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    md, csv_path = script.main(["--quick", "--out-dir", str(tmp_path)])
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and {row["data"] for row in rows} == {"mnist_mlp3"}
    for row in rows:  # every subset holds the last exit: each budget is met by "every exit"
        assert 0.0 < float(row["all_acc"]) <= 1.0
    text = md.read_text()
    assert "Command: `python benchmarks/exit_selection.py --quick" in text
    assert text.count("\n| 0.") == 10

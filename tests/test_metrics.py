"""The oracle bound, budget curves and the model-selection helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._features import softmax
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import make_exit_logits
from eenet_sklearn.metrics import (
    budget_curve,
    make_cost_aware_scorer,
    oracle_accuracy,
    smallest_budget_within,
)


def one_hot_logits(predictions: list[list[int]], n_classes: int) -> np.ndarray:
    return 5.0 * np.eye(n_classes)[np.asarray(predictions)]


# --- oracle_accuracy: hand-computed -------------------------------------------------------------
# Costs 1, 2, 4. Argmax per exit, label:
#   a [1, 0, 0] y=1: right at 0 only          -> extra cost 0
#   b [1, 0, 1] y=0: right only at 1          -> extra 1
#   c [1, 0, 0] y=0: right at 1 and 2         -> extra 1 (cheapest correct is 1)
#   d [0, 0, 1] y=1: right only at 2          -> extra 3
#   e [0, 0, 0] y=1: never right              -> exit 0, free
# Budget B leaves 5 * (B - 1) to share; a, then b and c (tied: b first), then d.
ORACLE_X = one_hot_logits([[1, 0, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]], 2)
ORACLE_Y = np.array([1, 0, 0, 1, 1])
ORACLE_COSTS = [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("budget", "accuracy", "exits"),
    [
        (1.0, 0.2, [0, 0, 0, 0, 0]),  # = first exit's cost: nothing to share
        (1.19, 0.2, [0, 0, 0, 0, 0]),  # 0.95 to share: not enough for b
        (1.2, 0.4, [0, 1, 0, 0, 0]),  # 1.0: b, not its tie c (the earlier sample goes first)
        (1.4, 0.6, [0, 1, 1, 0, 0]),  # 2.0: b and c (float noise must not lose c)
        (1.9, 0.6, [0, 1, 1, 0, 0]),  # 4.5: d would need 5
        (2.0, 0.8, [0, 1, 1, 2, 0]),  # 5.0: d too, exactly
        (4.0, 0.8, [0, 1, 1, 2, 0]),  # = last exit's cost: e is never right
    ],
)
def test_oracle_hand_case(budget, accuracy, exits):
    result, chosen = oracle_accuracy(ORACLE_X, ORACLE_Y, ORACLE_COSTS, budget, return_exits=True)
    assert result == pytest.approx(accuracy)
    assert_array_equal(chosen, exits)
    assert np.asarray(ORACLE_COSTS)[chosen].mean() <= budget * (1 + 1e-12)
    assert oracle_accuracy(ORACLE_X, ORACLE_Y, ORACLE_COSTS, budget) == result


def test_oracle_when_one_exit_is_always_right():
    X, y = make_exit_logits(200, n_exits=3, n_classes=4, random_state=0)
    costs = [1.0, 2.0, 3.0]
    last_right = X.copy()
    last_right[np.arange(len(y)), 2, y] += 100.0
    exit0_right = np.mean(X[:, 0].argmax(axis=1) == y)
    assert oracle_accuracy(last_right, y, costs, costs[-1]) == 1.0
    assert oracle_accuracy(last_right, y, costs, costs[0]) == pytest.approx(exit0_right)

    first_right = X.copy()
    first_right[np.arange(len(y)), 0, y] += 100.0
    accuracy, exits = oracle_accuracy(first_right, y, costs, costs[0], return_exits=True)
    assert accuracy == 1.0
    assert_array_equal(exits, 0)


def test_oracle_reads_probabilities_and_labels_like_policies():
    X, y = make_exit_logits(150, n_exits=3, n_classes=3, random_state=2)
    costs = [1.0, 2.0, 3.0]
    expected = oracle_accuracy(X, y, costs, 1.7)
    assert oracle_accuracy(softmax(X), y, costs, 1.7, input_type="proba") == expected
    names = np.array(["cat", "dog", "emu"])
    assert oracle_accuracy(X, names[y], costs, 1.7) == expected
    assert oracle_accuracy(X.reshape(len(X), -1), y, costs, 1.7) == expected


def test_oracle_rejects_bad_arguments():
    with pytest.raises(ValueError, match="below the first exit's cost"):
        oracle_accuracy(ORACLE_X, ORACLE_Y, ORACLE_COSTS, 0.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        oracle_accuracy(ORACLE_X, ORACLE_Y, [1.0, 1.0, 2.0], 1.5)
    with pytest.raises(ValueError, match="input_type"):
        oracle_accuracy(ORACLE_X, ORACLE_Y, ORACLE_COSTS, 1.5, input_type="logit")


# --- oracle_accuracy: the bound holds ------------------------------------------------------------

PROPERTY_POLICIES = {
    "eenet": EarlyExitPolicy(max_epochs=2, hidden_size=8, random_state=0, device="cpu"),
    "max_prob": MaxProbPolicy(),
    "entropy": EntropyPolicy(),
    "patience": PatiencePolicy(),
    "fixed": FixedExitPolicy(),
    "learned": LearnedScorePolicy(),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_is_never_below_any_policy(seed):
    rng = np.random.default_rng(seed)
    X, y = make_exit_logits(600, n_exits=4, n_classes=5, random_state=seed)
    costs = np.cumsum(rng.uniform(0.5, 2.0, size=4))
    budgets = costs[0] + np.array([0.15, 0.6]) * (costs[-1] - costs[0])
    rows = budget_curve(
        PROPERTY_POLICIES, X[:300], y[:300], X[300:], y[300:], costs, budgets, as_frame=False
    )
    assert len(rows) == len(budgets) * (len(PROPERTY_POLICIES) + 1)
    for row in rows:
        # On held-out data a policy may spend a little over its budget: the bound that
        # applies is the oracle's at the policy's own mean cost.
        bound = oracle_accuracy(X[300:], y[300:], costs, max(row["mean_cost"], costs[0]))
        assert row["accuracy"] <= bound + 1e-12, row["policy"]
    oracles = [row["accuracy"] for row in rows if row["policy"] == "oracle"]
    assert oracles == sorted(oracles)  # more budget never hurts the oracle


# --- budget_curve --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split() -> dict[str, np.ndarray]:
    X, y = make_exit_logits(400, n_exits=3, n_classes=4, random_state=3)
    return {"X_fit": X[:200], "y_fit": y[:200], "X_eval": X[200:], "y_eval": y[200:],
            "costs": np.array([1.0, 2.0, 4.0])}


def test_budget_curve_table(split):
    pytest.importorskip("pandas")
    policies = {"msdnet": MaxProbPolicy(), "fixed": FixedExitPolicy()}
    frame = budget_curve(policies, **split, budgets=[1.0, 2.5, 4.0], as_frame=True)
    assert list(frame.columns) == ["policy", "budget", "accuracy", "mean_cost", "exit_fractions"]
    assert list(frame.policy) == ["msdnet", "fixed", "oracle"] * 3
    assert list(frame.budget) == [1.0] * 3 + [2.5] * 3 + [4.0] * 3
    for row in frame.itertuples():
        assert_allclose(row.exit_fractions.sum(), 1.0)
        assert_allclose(row.exit_fractions @ split["costs"], row.mean_cost)
    # At the first exit's cost every policy sends everyone to exit 0: same accuracy.
    exit0 = np.mean(split["X_eval"][:, 0].argmax(axis=1) == split["y_eval"])
    assert_allclose(frame.accuracy[:2], exit0)
    fixed = frame[frame.policy == "fixed"]
    assert_allclose(fixed.mean_cost, [1.0, 2.0, 4.0])
    for policy in policies.values():  # the given policies stay unfitted
        with pytest.raises(NotFittedError):
            check_is_fitted(policy)


def test_budget_curve_list_and_input_type(split):
    rows = budget_curve({}, **split, budgets=[2.0], as_frame=False)
    assert [row["policy"] for row in rows] == ["oracle"]
    proba_split = {**split, "X_fit": softmax(split["X_fit"]), "X_eval": softmax(split["X_eval"])}
    as_proba = budget_curve(
        {"msdnet": MaxProbPolicy(input_type="proba")}, **proba_split, budgets=[2.0], as_frame=False
    )
    as_logits = budget_curve({"msdnet": MaxProbPolicy()}, **split, budgets=[2.0], as_frame=False)
    assert [r["accuracy"] for r in as_proba] == pytest.approx([r["accuracy"] for r in as_logits])
    with pytest.raises(ValueError, match="disagree on input_type"):
        budget_curve(
            {"a": MaxProbPolicy(), "b": MaxProbPolicy(input_type="proba")},
            **split, budgets=[2.0],
        )


# --- make_cost_aware_scorer ------------------------------------------------------------------------


def test_cost_aware_scorer_hand_case(split):
    # Everyone at exit 2 (cost 4) against a budget of 3.2: 25 % over budget.
    with pytest.warns(UserWarning, match="above budget"):
        policy = FixedExitPolicy(costs=split["costs"], budget=3.2, exit=2)
        policy.fit(split["X_fit"], split["y_fit"])
    X, y = split["X_eval"], split["y_eval"]
    accuracy = np.mean(X[:, 2].argmax(axis=1) == y)
    assert make_cost_aware_scorer()(policy, X, y) == pytest.approx(accuracy - 0.25)
    assert make_cost_aware_scorer(penalty=2.0)(policy, X, y) == pytest.approx(accuracy - 0.5)
    assert make_cost_aware_scorer(penalty=2.0, tolerance=0.05)(policy, X, y) == pytest.approx(
        accuracy - 0.4
    )
    assert make_cost_aware_scorer(tolerance=0.25)(policy, X, y) == pytest.approx(accuracy)
    assert make_cost_aware_scorer(penalty=np.inf)(policy, X, y) == -np.inf
    within = FixedExitPolicy(costs=split["costs"], budget=4.0).fit(split["X_fit"], split["y_fit"])
    assert make_cost_aware_scorer(penalty=np.inf)(within, X, y) == pytest.approx(accuracy)
    with pytest.raises(ValueError, match="penalty"):
        make_cost_aware_scorer(penalty=-1.0)


# --- smallest_budget_within ------------------------------------------------------------------------

CV_RESULTS = {
    "param_budget": np.ma.masked_array([3.0, 1.0, 2.0, 4.0, 2.0], mask=[False] * 5, dtype=object),
    "mean_test_score": np.array([0.90, 0.80, 0.885, 0.91, 0.895]),
}


@pytest.mark.parametrize(
    ("tolerance", "expected"),
    [
        (0.0, 3),  # the best itself
        (0.01, 0),  # 0.90 is within 0.01 of 0.91; the budget-2 ones are not
        (0.015, 4),  # budget 2 qualifies (0.895); of its two candidates, the better
        (0.03, 4),  # 0.885 qualifies too, but 0.895 at the same budget is better
        (0.2, 1),  # everything qualifies: the smallest budget
    ],
)
def test_smallest_budget_within_hand_case(tolerance, expected):
    assert smallest_budget_within(tolerance)(CV_RESULTS) == expected


def test_smallest_budget_within_skips_failed_and_unset_candidates():
    results = {
        "param_policy__budget": np.ma.masked_array([1.0, 2.0, 0.0, 3.0], mask=[0, 0, 1, 0]),
        "mean_test_accuracy": np.array([np.nan, 0.7, 0.99, 0.71]),
    }
    refit = smallest_budget_within(0.02, param="policy__budget", metric="accuracy")
    assert refit(results) == 1
    with pytest.raises(ValueError, match="param_budget"):
        smallest_budget_within(0.02)(results)
    with pytest.raises(ValueError, match="tolerance"):
        smallest_budget_within(-0.1)


def test_grid_search_with_refit_callable(split):
    X = np.concatenate([split["X_fit"], split["X_eval"]])
    y = np.concatenate([split["y_fit"], split["y_eval"]])
    budgets = [1.0, 1.5, 2.0, 3.0, 4.0]
    search = GridSearchCV(
        MaxProbPolicy(costs=split["costs"]),
        {"budget": budgets},
        cv=StratifiedKFold(3),
        refit=smallest_budget_within(0.01),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Folds of ~270 samples are too small for a budget to hold on new data, and say so.
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    within = [b for b, s in zip(budgets, scores, strict=True) if s >= scores.max() - 0.01]
    assert min(within) < budgets[-1]  # the tolerance matters on this data
    assert search.best_params_ == {"budget": min(within)}
    assert search.best_estimator_.budget_ == min(within)
    assert search.best_estimator_.predict_exit(X).shape == (len(X),)

    costly = GridSearchCV(
        MaxProbPolicy(costs=split["costs"]),
        {"budget": budgets},
        cv=StratifiedKFold(3),
        scoring=make_cost_aware_scorer(penalty=2.0),
        refit=smallest_budget_within(0.01),
    ).fit(X, y)
    assert costly.best_params_["budget"] in budgets

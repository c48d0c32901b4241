"""A sample's exit, label and probabilities never depend on the other rows of the call,
on how many there are, or on the dtype of identical input values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn.datasets import load_exit_logits, make_exit_logits
from eenet_sklearn.metrics import budget_at_position

POLICIES = (
    MaxProbPolicy,
    EntropyPolicy,
    PatiencePolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    EarlyExitPolicy,
)
SETS = ("fashion_cnn4", "mnist_mlp3", "reviews_minilm6", "generated")
#: Fitting samples per set: enough for the thresholds to be quantiles, few enough to be quick.
N_FIT = 2500


def _make(policy_class, costs, budget):
    if policy_class is EarlyExitPolicy:
        return EarlyExitPolicy(
            costs=costs, budget=budget, max_epochs=3, hidden_size=8, random_state=0, device="cpu"
        )
    return policy_class(costs=costs, budget=budget)


@pytest.fixture(scope="module", params=SETS)
def fitted(request):
    """(policies fitted on X, X: the fitting samples, followed by held-out ones)."""
    if request.param == "generated":
        X, y = make_exit_logits(2 * N_FIT, n_exits=5, n_classes=7, random_state=0)
        costs = np.array([1.0, 2.0, 3.5, 5.0, 8.0])
    else:
        data = load_exit_logits(request.param)
        X = np.concatenate([data.val_logits[:N_FIT], data.test_logits[:N_FIT]])
        y = np.concatenate([data.val_labels[:N_FIT], data.test_labels[:N_FIT]])
        costs = data.costs
    budget = budget_at_position(costs, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting sets, budgets patience cannot meet
        policies = [_make(cls, costs, budget).fit(X[:N_FIT], y[:N_FIT]) for cls in POLICIES]
    return policies, X


def _threshold_setters(policy, X_fit: np.ndarray, per_side: int = 3) -> np.ndarray:
    """The fitting samples whose scores lie nearest each threshold, on either side."""
    scores = policy.exit_scores(X_fit)
    rows = []
    for k, threshold in enumerate(policy.thresholds_[:-1]):
        if not np.isfinite(threshold):
            continue
        gap = scores[:, k] - threshold
        above, below = np.flatnonzero(gap >= 0), np.flatnonzero(gap < 0)
        rows += list(above[np.argsort(gap[above])[:per_side]])
        rows += list(below[np.argsort(-gap[below])[:per_side]])
    return np.unique(np.asarray(rows, dtype=np.int64))


def _decisions(policy, X):
    return policy.predict_exit(X), policy.predict(X), policy.predict_proba(X)


def test_single_rows_subsets_and_orders_decide_as_the_full_call(fitted) -> None:
    policies, X = fitted
    rng = np.random.default_rng(0)
    for policy in policies:
        exits, labels, proba = _decisions(policy, X)
        # The samples that set the thresholds, and some others, one row per call.
        setters = _threshold_setters(policy, X[:N_FIT])
        alone = np.concatenate([setters, rng.choice(len(X), 40, replace=False)])
        for row in alone:
            got = _decisions(policy, X[row : row + 1])
            assert got[0][0] == exits[row], (type(policy).__name__, row)
            assert got[1][0] == labels[row]
            assert_array_equal(got[2][0], proba[row])  # bit for bit
        # A random subset, shuffled, and small batches of odd sizes.
        subset = rng.permutation(len(X))[: len(X) // 3]
        for got, expected in zip(_decisions(policy, X[subset]), (exits, labels, proba), strict=True):
            assert_array_equal(got, expected[subset])
        for size in (2, 7):
            batches = np.array_split(np.arange(120), 120 // size)
            got_exits = np.concatenate([policy.predict_exit(X[b]) for b in batches])
            assert_array_equal(got_exits, exits[:120])


def test_identical_values_in_any_dtype_decide_alike(fitted) -> None:
    policies, X = fitted
    # Integer-valued logits: exactly representable in every dtype below, and full of ties
    # at the thresholds (the case float32 and float64 used to decide differently).
    rounded = np.round(X[:1500] * 2)
    variants = [rounded.astype(dtype) for dtype in (np.float16, np.float32, np.int32, np.int64)]
    for policy in policies:
        expected = _decisions(policy, rounded.astype(np.float64))
        for variant in variants:
            for got, want in zip(_decisions(policy, variant), expected, strict=True):
                assert_array_equal(got, want)
        # The real-valued logits as given (float32) and widened to float64.
        for got, want in zip(
            _decisions(policy, X[:1500]), _decisions(policy, X[:1500].astype(np.float64)), strict=True
        ):
            assert_array_equal(got, want)


def test_no_fitting_sample_sits_on_a_threshold(fitted) -> None:
    # The mechanism: quota thresholds lie halfway between two fitting scores, so a score
    # an ulp off (another summation order) still falls on the side it fell in fitting.
    policies, X = fitted
    for policy in policies[:2] + policies[4:]:  # the quota rules
        scores = policy.exit_scores(X[:N_FIT])
        finite = np.isfinite(policy.thresholds_)
        assert not np.any(scores[:, finite] == policy.thresholds_[finite])

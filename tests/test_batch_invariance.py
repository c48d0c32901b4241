"""A sample's exit, label, probabilities and scores never depend on the other rows of the
call, on how many there are, or on the dtype of identical input values; early-exit
inference decides as predict_exit on the logits the network gives it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from torch import nn

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
from eenet_sklearn.nn import MultiExitNetwork, early_exit_predict

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
    # The scores too: a decision can hide an ulp that a score shows.
    return policy.predict_exit(X), policy.predict(X), policy.predict_proba(X), policy.exit_scores(X)


def test_single_rows_subsets_and_orders_decide_as_the_full_call(fitted) -> None:
    policies, X = fitted
    rng = np.random.default_rng(0)
    for policy in policies:
        exits, labels, proba, scores = _decisions(policy, X)
        # The samples that set the thresholds, and some others, one row per call.
        setters = _threshold_setters(policy, X[:N_FIT])
        alone = np.concatenate([setters, rng.choice(len(X), 40, replace=False)])
        for row in alone:
            got = _decisions(policy, X[row : row + 1])
            assert got[0][0] == exits[row], (type(policy).__name__, row)
            assert got[1][0] == labels[row]
            assert_array_equal(got[2][0], proba[row])  # bit for bit
            assert_array_equal(got[3][0], scores[row])
        # A random subset, shuffled, and small batches of odd sizes.
        subset = rng.permutation(len(X))[: len(X) // 3]
        for got, expected in zip(_decisions(policy, X[subset]), (exits, labels, proba, scores), strict=True):
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


def _early_exit_run_logits(network, policy, X, batch_size: int):
    """``early_exit_predict``'s result, and the logits its heads computed: zeros after each sample's exit."""
    calls: list[tuple[int, np.ndarray]] = []
    hooks = [
        head.register_forward_hook(lambda module, inputs, output, k=k: calls.append((k, output.numpy())))
        for k, head in enumerate(network.heads)
    ]
    try:
        result = early_exit_predict(network, policy, X, batch_size=batch_size)
    finally:
        for hook in hooks:
            hook.remove()
    # The heads ran batch by batch, exit by exit, on the rows of the batch still running.
    logits = np.zeros((len(X), network.n_exits, calls[0][1].shape[1]), dtype=np.float32)
    calls.reverse()
    for first in range(0, len(X), batch_size):
        rows = np.arange(first, min(first + batch_size, len(X)))
        for k in range(result.exits[rows].max() + 1):
            head, output = calls.pop()
            running = rows[result.exits[rows] >= k]
            assert head == k and len(output) == len(running)
            logits[running, k] = output
    assert not calls
    return result, logits


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_early_exit_inference_decides_as_predict_exit_on_the_logits_it_computes(batch_size) -> None:
    # What holds whatever the network's kernels do with the number of rows: the decisions are
    # predict_exit's on the logits the run computed (the network may compute other logits for
    # the same inputs in other batches, and a sample near a threshold then leaves elsewhere).
    torch.manual_seed(0)
    network = MultiExitNetwork(
        stages=[nn.Linear(6, 16), *(nn.Sequential(nn.ReLU(), nn.Linear(16, 16)) for _ in range(3))],
        heads=[nn.Linear(16, 5) for _ in range(4)],
    ).eval()
    X = torch.randn(300, 6)
    with torch.inference_mode():
        full = network(X).numpy()
    y = np.random.default_rng(0).integers(0, 5, size=300)  # an untrained network: any labels
    costs = [1.0, 2.0, 3.0, 4.0]
    for policy in (MaxProbPolicy(costs, 2.0), LearnedScorePolicy(costs, 2.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a small fitting set
            policy.fit(full, y)
        result, logits = _early_exit_run_logits(network, policy, X, batch_size)
        assert_array_equal(result.exits, policy.predict_exit(logits))
        assert_array_equal(result.labels, policy.predict(logits))

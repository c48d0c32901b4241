"""The budget is a ceiling: quota thresholds never overspend on their fitting data.

Hand-worked quota cases with costs, properties of the ceiling under heavy ties (saturated
softmax outputs, duplicate rows, integer logits, float16 inputs, the shipped logits scaled
by 20 and 40), costs of any positive scale, and the warning for fitting sets too small for
the budget to hold on new data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._thresholds import (
    BUDGET_RTOL,
    assign_exits,
    geometric_fractions,
    gpu_available,
    quota_thresholds,
    tilt_to_budget,
    within_budget,
)
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import load_exit_logits
from eenet_sklearn.metrics import budget_at_position

INF = np.inf
COSTS = np.array([1.0, 2.0, 3.0])
USE_GPU = [
    False,
    pytest.param(True, marks=pytest.mark.skipif(not gpu_available(), reason="CuPy sees no usable GPU")),
]

# 10 samples, 3 exits: exit 0 has a block of three 0.7s below 0.9 and 0.8.
TIED_AT_EXIT_0 = np.column_stack(
    [
        [0.9, 0.8, 0.7, 0.7, 0.7, 0.1, 0.2, 0.3, 0.4, 0.5],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.9, 0.1, 0.2, 0.3],
        np.zeros(10),
    ]
)


def _mid(below: float, lowest: float) -> float:
    """Where a quota threshold lies: halfway between the highest score left out and the
    lowest admitted, so that no fitting sample sits on it."""
    return below / 2 + lowest / 2


def mean_cost(costs: np.ndarray, exits: np.ndarray) -> float:
    return float(np.asarray(costs)[exits].mean())


# --- quota_thresholds with a budget: hand-worked cases ----------------------------------------


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_ceiling_that_does_not_bind_changes_nothing(use_gpu):
    # Quotas 3/3/4: exit 0 leaves the 0.7 block out (2 admitted, nearer 3 than 5), exit 1
    # (cumulative target 6) admits the 4 best left: 2*1 + 4*2 + 4*3 = 22, a mean of 2.2.
    fractions = np.array([0.3, 0.3, 0.4])
    free = quota_thresholds(TIED_AT_EXIT_0, fractions, use_gpu=use_gpu)
    capped = quota_thresholds(TIED_AT_EXIT_0, fractions, costs=COSTS, budget=2.2, use_gpu=use_gpu)
    assert_array_equal(free[0], [_mid(0.7, 0.8), _mid(0.1, 0.2), -INF])
    for got, expected in zip(capped, free, strict=True):
        assert_array_equal(got, expected)
    assert mean_cost(COSTS, capped[1]) == pytest.approx(2.2)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_the_budget_makes_a_later_exit_take_more_than_its_quota(use_gpu):
    # Budget 2.1 (the quotas' own expected cost): 10 * 2.1 = 21 may be spent. Exit 0 still
    # leaves the block out (2 samples: even everybody else at exit 1 costs 2 + 16 <= 21).
    # At exit 1, with 2 spent and 8 left, admitting m costs at least 2 + 2m + 3(8 - m) =
    # 26 - m: m >= 5 although the quota asks for 4. The 5 best left at exit 1 are samples
    # 6, 5, 9, 8, 7 (0.9, 0.5, 0.3, 0.2, 0.1): 2 + 10 + 9 = 21.
    thresholds, exits = quota_thresholds(
        TIED_AT_EXIT_0, np.array([0.3, 0.3, 0.4]), costs=COSTS, budget=2.1, use_gpu=use_gpu
    )
    assert_array_equal(thresholds, [_mid(0.7, 0.8), _mid(0.0, 0.1), -INF])
    assert_array_equal(exits, [0, 0, 2, 2, 2, 1, 1, 1, 1, 1])
    assert mean_cost(COSTS, exits) == pytest.approx(2.1)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_tied_block_at_the_top_no_longer_overspends(use_gpu):
    # 7 samples tie at the top of exit 0 (quota 3): left out, as before (nearer the target,
    # and 10 samples at exit 1 would cost 20 <= 21). Exit 1 must then admit m with 2m + 3(10
    # - m) <= 21, m >= 9 (the quota asked for 6, which spent 2.4): its 9 best scores.
    scores = np.zeros((10, 3))
    scores[:7, 0] = 1.0
    scores[:, 1] = np.linspace(1, 0, 10)
    thresholds, exits = quota_thresholds(
        scores, np.array([0.3, 0.3, 0.4]), costs=COSTS, budget=2.1, use_gpu=use_gpu
    )
    assert_array_equal(thresholds, [INF, _mid(scores[9, 1], scores[8, 1]), -INF])
    assert_array_equal(exits, [1] * 9 + [2])
    assert mean_cost(COSTS, exits) == pytest.approx(2.1)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_the_budget_opens_an_empty_quota_for_the_costliest_setting_within_it(use_gpu):
    # Costs 1, 4, 5, budget 3 (30 in all), quotas 0 / 0.5 / 0.5 (which would spend 4.5):
    # the bounds are "at least 0 by exit 0, at least 5 by exit 1" (exit 1's 5th and 6th
    # best scores, 0.7 and 0.1, differ). Exit 0 must admit m with m + 4(10 - m) <= 30,
    # m >= 4 (10/3 rounded up). With 4 (samples 0-3), exit 1 needs 4 more of the 6 left
    # (4 + 4m + 5(6 - m) <= 30) and its scores there are 0.9, 0.8 and a block of three
    # 0.7s: 5 admitted, 4 + 20 + 5 = 29. With 5 at exit 0 (samples 0-4), exit 1 may admit
    # nobody: 5 + 5 * 5 = 30, the costliest setting within the budget (6 or more at exit 0
    # spend at most 6 + 4 * 5 = 26).
    scores = np.column_stack(
        [
            np.linspace(0.9, 0.0, 10),
            [0, 0, 0, 0, 0.9, 0.8, 0.7, 0.7, 0.7, 0.1],
            np.zeros(10),
        ]
    )
    costs = np.array([1.0, 4.0, 5.0])
    thresholds, exits = quota_thresholds(
        scores, np.array([0.0, 0.5, 0.5]), costs=costs, budget=3.0, use_gpu=use_gpu
    )
    assert_array_equal(thresholds, [_mid(scores[5, 0], scores[4, 0]), INF, -INF])
    assert_array_equal(exits, [0, 0, 0, 0, 0, 2, 2, 2, 2, 2])
    assert mean_cost(costs, exits) == pytest.approx(3.0)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_budget_at_the_first_cost_sends_everybody_out_first(use_gpu):
    # Every score tied and quotas that ignore the budget: only "all at exit 0" spends 1.
    thresholds, exits = quota_thresholds(
        np.ones((10, 3)), np.array([0.3, 0.3, 0.4]), costs=COSTS, budget=1.0, use_gpu=use_gpu
    )
    # Nobody is left for exit 1: its quota is empty (+inf); exit 0 takes all comers.
    assert_array_equal(thresholds, [-INF, INF, -INF])
    assert_array_equal(exits, 0)
    # A budget the middle exit meets exactly: nobody needs exit 0, everybody leaves at 1.
    thresholds, exits = quota_thresholds(
        np.ones((10, 3)), np.array([0.0, 0.5, 0.5]), costs=COSTS, budget=2.0, use_gpu=use_gpu
    )
    assert_array_equal(thresholds, [INF, -INF, -INF])
    assert_array_equal(exits, 1)


def test_costs_and_budget_go_together():
    with pytest.raises(ValueError, match="costs and budget go together"):
        quota_thresholds(TIED_AT_EXIT_0, np.array([0.3, 0.3, 0.4]), costs=COSTS)
    with pytest.raises(ValueError, match="costs and budget go together"):
        quota_thresholds(TIED_AT_EXIT_0, np.array([0.3, 0.3, 0.4]), budget=2.0)
    with pytest.raises(ValueError, match=r"budget=0.5 is below costs\[0\]=1.0: no threshold"):
        quota_thresholds(TIED_AT_EXIT_0, np.array([0.3, 0.3, 0.4]), costs=COSTS, budget=0.5)


def test_within_budget_tolerates_float_noise_only():
    assert within_budget(0.1 + 0.2, 0.3)  # 0.30000000000000004
    assert within_budget(2.0 * (1 + BUDGET_RTOL), 2.0)
    assert not within_budget(2.0 * (1 + 10 * BUDGET_RTOL), 2.0)


# --- quota_thresholds with a budget: properties ------------------------------------------------


@pytest.mark.parametrize("use_gpu", USE_GPU)
@pytest.mark.parametrize("decimals", [0, 1, 2, None])
def test_the_ceiling_holds_for_any_ties_quotas_and_budget(use_gpu, decimals):
    """Scores rounded to few values (big tied blocks), quotas drawn independently of the
    budget: the mean cost never exceeds the budget, and the fitting exits are those the
    inference rule gives."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        n_samples, n_exits = int(rng.integers(1, 400)), int(rng.integers(2, 6))
        costs = np.cumsum(rng.random(n_exits) + 1e-3)
        budget = rng.uniform(costs[0], costs[-1] * 1.1)
        scores = rng.random((n_samples, n_exits))
        if decimals is not None:
            scores = np.round(scores, decimals)
        fractions = rng.dirichlet(np.full(n_exits, 0.5))
        thresholds, exits = quota_thresholds(scores, fractions, costs=costs, budget=budget, use_gpu=use_gpu)
        assert within_budget(mean_cost(costs, exits), budget)
        assert thresholds[-1] == -INF
        assert_array_equal(assign_exits(scores, thresholds), exits)


def test_without_ties_the_ceiling_only_corrects_rounding():
    """Distinct scores and quotas that meet the budget in expectation: the mean cost is
    within one sample's worth of the cost span of the budget (the rounding of the quotas)."""
    rng = np.random.default_rng(8)
    for _ in range(40):
        n_samples, n_exits = int(rng.integers(5, 2000)), int(rng.integers(2, 7))
        costs = np.cumsum(rng.random(n_exits) + 0.01)
        fractions = rng.dirichlet(np.ones(n_exits))
        budget = float(fractions @ costs)
        _, exits = quota_thresholds(rng.random((n_samples, n_exits)), fractions, costs=costs, budget=budget)
        cost = mean_cost(costs, exits)
        assert within_budget(cost, budget)
        assert cost >= budget - (costs[-1] - costs[0]) / n_samples


@pytest.mark.skipif(not gpu_available(), reason="CuPy sees no usable GPU")
def test_gpu_and_numpy_agree_under_the_ceiling():
    rng = np.random.default_rng(9)
    scores = np.round(rng.random((5000, 4)), 2)
    costs = np.array([1.0, 1.5, 3.0, 4.0])
    for budget in (1.2, 2.0, 3.1):
        fractions = np.array([0.1, 0.2, 0.3, 0.4])
        cpu = quota_thresholds(scores, fractions, costs=costs, budget=budget, use_gpu=False)
        gpu = quota_thresholds(scores, fractions, costs=costs, budget=budget, use_gpu=True)
        for a, b in zip(cpu, gpu, strict=True):
            assert_array_equal(a, b)


@pytest.mark.parametrize("scale", [1e-45, 1e-10, 1e10, 1e38, 1e40])
def test_thresholds_and_quotas_depend_on_cost_ratios_only(scale):
    rng = np.random.default_rng(10)
    scores = np.round(rng.random((500, 4)), 1)
    costs = np.array([0.1161975, 0.240677, 0.3560185, 0.557783])
    budget = 0.3
    fractions = geometric_fractions(costs, budget)
    np.testing.assert_allclose(geometric_fractions(costs * scale, budget * scale), fractions, rtol=1e-9)
    log_weights = np.array([0.5, -1.0, 0.0, 2.0])
    np.testing.assert_allclose(
        tilt_to_budget(log_weights, costs * scale, budget * scale),
        tilt_to_budget(log_weights, costs, budget),
        rtol=1e-9,
    )
    expected = quota_thresholds(scores, fractions, costs=costs, budget=budget)
    got = quota_thresholds(scores, fractions, costs=costs * scale, budget=budget * scale)
    for a, b in zip(got, expected, strict=True):
        assert_array_equal(a, b)


# --- policies: the ceiling on the fitting data, with heavy ties --------------------------------


def saturated_case(n_samples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The issue's case: margin-40 logits for ~72% of samples at exit 0, 88% at 1, all at 2.

    In float32 the softmax of those samples is exactly 1.0 at their max class.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_samples)
    X = rng.normal(size=(n_samples, 3, 10))
    for k, share in enumerate([0.72, 0.88, 1.0]):
        sure = rng.random(n_samples) < share
        X[sure, k, y[sure]] += 40.0
    return X.astype(np.float32), y


def integer_case() -> tuple[np.ndarray, np.ndarray]:
    """Integer logits in [-2, 2]: few distinct confidences, so large tied blocks."""
    rng = np.random.default_rng(1)
    return rng.integers(-2, 3, size=(600, 3, 5)).astype(np.float64), rng.integers(0, 5, 600)


def duplicate_case() -> tuple[np.ndarray, np.ndarray]:
    """50 distinct rows, each repeated 20 times."""
    rng = np.random.default_rng(2)
    X, y = 3.0 * rng.normal(size=(50, 3, 5)), rng.integers(0, 5, 50)
    return np.tile(X, (20, 1, 1)), np.tile(y, 20)


def shipped_case(name: str, factor: float = 1.0, dtype: type = np.float32, n_rows: int | None = None):
    data = load_exit_logits(name)
    X = (data.val_logits[:n_rows] * factor).astype(dtype)
    return X, data.val_labels[:n_rows], np.asarray(data.costs, dtype=np.float64)


CASES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "saturated": lambda: (*saturated_case(), COSTS),
    "integer logits": lambda: (*integer_case(), COSTS),
    "duplicate rows": lambda: (*duplicate_case(), COSTS),
    # The whole val split: 434 identical rows.
    "mnist_mlp3": lambda: shipped_case("mnist_mlp3"),
    "mnist_mlp3 x20": lambda: shipped_case("mnist_mlp3", 20.0),
    "mnist_mlp3 x40 float16": lambda: shipped_case("mnist_mlp3", 40.0, np.float16),
    "fashion_cnn4 x20": lambda: shipped_case("fashion_cnn4", 20.0),
    "fashion_cnn4 x40": lambda: shipped_case("fashion_cnn4", 40.0),
    "fashion_cnn4 float16": lambda: shipped_case("fashion_cnn4", 1.0, np.float16),
}

_LOADED: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def load_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if name not in _LOADED:
        _LOADED[name] = CASES[name]()
    return _LOADED[name]


def case_budgets(name: str, costs: np.ndarray, positions) -> list[float]:
    if name == "saturated":
        return [2.0, 2.6]  # the issue's budgets
    budgets = budget_at_position(costs, positions).tolist()
    if name == "mnist_mlp3":
        budgets.append(0.02027)  # where the issue found a 1.07% overspend
    return budgets


def fit_quietly(policy, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        return policy.fit(X, y)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
def test_confidence_rules_never_overspend_on_their_fitting_data(case, policy_class):
    X, y, costs = load_case(case)
    for budget in case_budgets(case, costs, [0.05, 0.25, 0.5, 0.75, 0.79, 0.8, 0.95]):
        policy = fit_quietly(policy_class(costs=costs, budget=budget), X, y)
        assert within_budget(policy.expected_cost(X), budget), (case, budget)


@pytest.mark.parametrize("case", list(CASES))
def test_learned_scores_never_overspend_on_their_fitting_data(case):
    X, y, costs = load_case(case)
    X, y = X[:3000], y[:3000]
    for budget in case_budgets(case, costs, [0.3, 0.75]):
        policy = fit_quietly(LearnedScorePolicy(costs=costs, budget=budget), X, y)
        assert within_budget(policy.expected_cost(X), budget), (case, budget)


@pytest.mark.parametrize("case", list(CASES))
def test_eenet_never_overspends_on_its_fitting_data(case, make_eenet):
    X, y, costs = load_case(case)
    X, y = X[:3000], y[:3000]
    for budget in case_budgets(case, costs, [0.3, 0.75]):
        policy = fit_quietly(make_eenet(costs=costs, budget=budget), X, y)
        assert within_budget(policy.expected_cost(X), budget), (case, budget)


def test_the_issue_saturated_case_spends_close_to_the_budget():
    """The issue's example: at budget 2.0 MaxProbPolicy spent 2.142 and at 2.6 sent every
    sample to the last exit (3.0). The ceiling holds both; at 2.0 the tied blocks still
    allow spending the budget (within a block's worth of samples)."""
    X, y = saturated_case()
    policy = fit_quietly(MaxProbPolicy(costs=COSTS, budget=2.0), X, y)
    assert 1.9 <= policy.expected_cost(X) <= 2.0
    policy = fit_quietly(MaxProbPolicy(costs=COSTS, budget=2.6), X, y)
    assert policy.expected_cost(X) <= 2.6
    assert policy.exit_fractions_[-1] < 1.0


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
def test_mean_cost_never_falls_as_the_budget_rises(case, policy_class):
    X, y, costs = load_case(case)
    budgets = budget_at_position(costs, np.linspace(0.0, 1.0, 41))
    spent = [fit_quietly(policy_class(costs=costs, budget=b), X, y).expected_cost(X) for b in budgets]
    assert np.all(np.diff(spent) >= -1e-12 * costs[-1]), (case, np.diff(spent).min())


# --- the mean cost is monotone in the budget, for every quota rule -----------------------------


def quota_policies(make_eenet) -> dict[str, Callable[..., object]]:
    """Every policy whose thresholds are quotas of an exit score (EENet kept tiny)."""
    return {
        "MaxProbPolicy": MaxProbPolicy,
        "EntropyPolicy": EntropyPolicy,
        "LearnedScorePolicy": LearnedScorePolicy,
        "EarlyExitPolicy": lambda **params: make_eenet(max_epochs=1, spend_less=False, **params),
    }


def _integer_scaled(factor: float, dtype: type = np.float64):
    X, y = integer_case()
    return (X * factor).astype(dtype), y, COSTS


MONOTONE_CASES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "integer logits": lambda: (*integer_case(), COSTS),
    "duplicate rows": lambda: (*duplicate_case(), COSTS),
    # Saturated: max-probabilities of exactly 1.0 and entropies of 0.0 in float32.
    "integer logits x20": lambda: _integer_scaled(20.0, np.float32),
    "integer logits x40 float16": lambda: _integer_scaled(40.0, np.float16),
    "mnist_mlp3 x40 float16": lambda: shipped_case("mnist_mlp3", 40.0, np.float16, n_rows=1000),
}


def assert_monotone_ceiling(budgets: np.ndarray, spent: list[float], costs: np.ndarray, label) -> None:
    spent_ = np.asarray(spent)
    over = spent_ > budgets * (1 + BUDGET_RTOL)
    assert not over.any(), (label, budgets[over][:3], spent_[over][:3])
    falls = np.diff(spent_)
    assert falls.min() >= -1e-12 * costs[-1], (label, int((falls < 0).sum()), falls.min())


def test_the_issue_integer_case_no_longer_spends_less_at_a_larger_budget():
    """600 x 3 x 5 integer logits, 401 budgets, one fit per budget. Before, MaxProbPolicy's
    cost fell 5 times as the budget rose (by up to 0.79% of the budget) and
    EntropyPolicy's 7 times (up to 0.84%)."""
    X, y, costs = load_monotone_case("integer logits")
    budgets = budget_at_position(costs, np.linspace(0.0, 1.0, 401))
    for policy_class in (MaxProbPolicy, EntropyPolicy):
        spent = [fit_quietly(policy_class(costs=costs, budget=b), X, y).expected_cost(X) for b in budgets]
        assert_monotone_ceiling(budgets, spent, costs, policy_class.__name__)
        # And the budget is used: within a tied block's worth of it (the largest block of
        # equal rows here is well under 10% of the samples) at every budget.
        assert np.all(np.asarray(spent) >= budgets - 0.1 * (costs[-1] - costs[0]))


_MONOTONE_LOADED: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def load_monotone_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if name not in _MONOTONE_LOADED:
        _MONOTONE_LOADED[name] = MONOTONE_CASES[name]()
    return _MONOTONE_LOADED[name]


@pytest.mark.parametrize("case", list(MONOTONE_CASES))
@pytest.mark.parametrize(
    "policy_name", ["MaxProbPolicy", "EntropyPolicy", "LearnedScorePolicy", "EarlyExitPolicy"]
)
def test_every_quota_rule_spends_more_as_the_budget_rises_never_past_it(case, policy_name, make_eenet):
    """The threshold rule alone: the scores of one fit, thresholds re-set by
    ``recalibrate`` at 121 budgets from the first exit's cost to the last's. (EENet's
    scorer trains with the budget in its loss, so separate fits at two budgets score the
    samples differently: there the threshold rule cannot promise anything across fits.)"""
    X, y, costs = load_monotone_case(case)
    make = quota_policies(make_eenet)[policy_name]
    policy = fit_quietly(make(costs=costs, budget=float(budget_at_position(costs, 0.5))), X, y)
    budgets = budget_at_position(costs, np.linspace(0.0, 1.0, 121))
    spent = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        for budget in budgets:
            spent.append(policy.recalibrate(X, budget=budget).expected_cost(X))
    assert_monotone_ceiling(budgets, spent, costs, (case, policy_name))


@pytest.mark.parametrize("with_path", [True, False])
@pytest.mark.parametrize("family", ["geometric", "tilt"])
@pytest.mark.parametrize("decimals", [0, 1, None])
def test_quota_thresholds_cost_is_monotone_in_the_budget(family, decimals, with_path):
    """Any ties, both quota families the policies use, 50 budgets: the mean cost never
    falls as the budget rises and never passes it, with the quotas' path (what the
    policies pass) or without it (the search then keeps the budget itself)."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        n_samples, n_exits = int(rng.integers(5, 300)), int(rng.integers(2, 6))
        costs = np.cumsum(rng.random(n_exits) + 0.05)
        scores = rng.random((n_samples, n_exits))
        if decimals is not None:
            scores = np.round(scores, decimals)
        log_weights = rng.normal(size=n_exits)

        def quotas(share: float, costs=costs, log_weights=log_weights) -> np.ndarray:
            # The path, in units of the last exit's cost (as the policies give it).
            if family == "geometric":
                return geometric_fractions(costs / costs[-1], share)
            return tilt_to_budget(log_weights, costs / costs[-1], share)

        budgets = np.linspace(costs[0], costs[-1], 50)
        spent = []
        for budget in budgets:
            thresholds, exits = quota_thresholds(
                scores,
                quotas(budget / costs[-1]),
                costs=costs,
                budget=budget,
                quotas=quotas if with_path else None,
            )
            assert_array_equal(assign_exits(scores, thresholds), exits)
            spent.append(mean_cost(costs, exits))
        assert_monotone_ceiling(budgets, spent, costs, (n_samples, n_exits))


def test_without_ties_the_quotas_are_kept_wherever_they_fit_the_budget():
    """Distinct scores: whenever the rounded quotas spend at most the budget, the ceiling
    changes nothing (the thresholds without a budget); when their rounding overspends,
    the cost is the path's last setting within the budget, less than one sample's move
    from the first exit to the last below it."""
    rng = np.random.default_rng(12)
    kept = corrected = 0
    for _ in range(60):
        n_samples, n_exits = int(rng.integers(5, 1000)), int(rng.integers(2, 7))
        costs = np.cumsum(rng.random(n_exits) + 0.01)
        budget = float(rng.uniform(costs[0], costs[-1]))
        scores = rng.random((n_samples, n_exits))

        def quotas(share: float, costs=costs) -> np.ndarray:
            return geometric_fractions(costs / costs[-1], share)

        fractions = quotas(budget / costs[-1])
        free = quota_thresholds(scores, fractions)
        capped = quota_thresholds(scores, fractions, costs=costs, budget=budget, quotas=quotas)
        if within_budget(mean_cost(costs, free[1]), budget):
            kept += 1
            for got, expected in zip(capped, free, strict=True):
                assert_array_equal(got, expected)
        else:
            corrected += 1
            cost = mean_cost(costs, capped[1])
            assert within_budget(cost, budget)
            assert cost >= budget - (costs[-1] - costs[0]) / n_samples
    assert kept > 10 and corrected > 10  # both branches are exercised


def test_rules_that_cannot_meet_a_budget_still_warn():
    # Patience and fixed exits are settings, not quotas: they warn when a budget is out of
    # reach (min_exit=2 or exit=2 forces everybody to the last exit, which costs 3).
    X = np.tile([[[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]]], (4, 1, 1))
    y = [0, 1, 0, 1]
    with pytest.warns(UserWarning, match="above budget=2.5"):
        PatiencePolicy(costs=COSTS, budget=2.5, min_exit=2).fit(X, y)
    with pytest.warns(UserWarning, match="above budget=1.5"):
        FixedExitPolicy(costs=COSTS, budget=1.5, exit=2).fit(X, y)


# --- costs of any positive scale ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_small():
    data = load_exit_logits("fashion_cnn4")
    return data.val_logits[:1500], data.val_labels[:1500], data.test_logits[:3000], data.costs


@pytest.mark.parametrize("policy_name", ["eenet", "maxprob"])
def test_scaling_costs_and_budget_together_changes_no_decision(policy_name, fashion_small, make_eenet):
    """Only cost ratios matter. Before, costs scaled by 1e40 or 1e-45 failed in the root
    finder (float32 costs of inf or 0 in the loss) and at 1e38 most exits changed."""
    X, y, X_test, costs = fashion_small
    costs = np.asarray(costs, dtype=np.float64)
    budget = float(budget_at_position(costs, 0.4))

    def fit(scale):
        make = make_eenet if policy_name == "eenet" else MaxProbPolicy
        return fit_quietly(make(costs=costs * scale, budget=budget * scale), X, y)

    reference = fit(1.0)
    for scale in (1e-45, 1e-10, 1e10, 1e38, 1e40):
        policy = fit(scale)
        assert_array_equal(policy.thresholds_, reference.thresholds_)
        assert_array_equal(policy.predict_exit(X_test), reference.predict_exit(X_test))
        assert within_budget(policy.expected_cost(X), budget * scale)


def test_subnormal_costs_work_through_their_exact_ratios(fashion_small, make_eenet):
    """Float64 costs as small as 1e-320 (subnormal) are positive and accepted: when their
    ratios are exact, as for small multiples of one subnormal, decisions are unchanged."""
    X, y, X_test, _ = fashion_small
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    reference = fit_quietly(make_eenet(costs=costs, budget=2.0), X, y)
    tiny = costs * 1e-320
    assert np.all(tiny > 0) and tiny[0] < np.finfo(np.float64).tiny
    policy = fit_quietly(make_eenet(costs=tiny, budget=float(tiny[1])), X, y)
    assert_array_equal(policy.predict_exit(X_test), reference.predict_exit(X_test))
    assert policy.expected_cost(X) <= tiny[1]


# --- fitting sets too small for the budget to hold on new data ---------------------------------


def two_exit_logits(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct confidences at exit 0, so that quotas are met exactly."""
    X = np.zeros((n_samples, 2, 2))
    X[:, 0, 0] = np.linspace(0.01, 5.0, n_samples)
    X[:, 1, 1] = 1.0
    return X, np.arange(n_samples) % 2


def test_small_fitting_set_rule_by_hand():
    # Costs 1 and 3, budget 2: half the samples at each exit, mean 2, standard deviation 1.
    # New data's mean cost has a standard error of 1 / sqrt(n); it passes 1.02 * 2 = 2.04
    # with probability above 5% while 2 + 1.645 / sqrt(n) > 2.04, that is for n up to
    # (1.645 / 0.04)**2 = 1691.3: 1690 samples warn and name 1692, 1692 do not.
    X, y = two_exit_logits(1690)
    policy = MaxProbPolicy(costs=[1.0, 3.0], budget=2.0)
    with pytest.warns(SmallFittingSetWarning, match=r"fitted on 1690 samples.* about 1692 samples") as record:
        policy.fit(X, y)
    assert_array_equal(policy.exit_fractions_, [0.5, 0.5])
    assert record[0].filename == __file__  # it points at the caller's fit
    X, y = two_exit_logits(1692)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallFittingSetWarning)
        policy.fit(X, y)
    assert_array_equal(policy.exit_fractions_, [0.5, 0.5])


def test_small_fitting_set_warning_needs_a_spread_of_costs():
    # Every sample at one exit (the budget reaches the last exit's cost, or only the first
    # exit's): the cost on new data is that exit's, whatever the fitting set's size.
    X, y = two_exit_logits(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallFittingSetWarning)
        for budget in (1.0, 3.0, 5.0):
            MaxProbPolicy(costs=[1.0, 3.0], budget=budget).fit(X, y)
        # Settings, not quotas: no warning either.
        PatiencePolicy(costs=[1.0, 3.0], budget=2.0).fit(X, y)
        FixedExitPolicy(costs=[1.0, 3.0], budget=2.0).fit(X, y)


def test_eenet_warns_on_a_small_fitting_set_and_not_on_a_large_one(fashion_small, make_eenet):
    X, y, _, costs = fashion_small
    budget = float(budget_at_position(costs, 0.5))
    with pytest.warns(SmallFittingSetWarning, match="fitted on 200 samples"):
        make_eenet(costs=costs, budget=budget).fit(X[:200], y[:200])
    # Exits spread over fashion_cnn4's costs need a few thousand samples; at the first
    # exit's cost nobody needs to go deeper, at any size.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallFittingSetWarning)
        make_eenet(costs=costs, budget=float(costs[0])).fit(X[:200], y[:200])

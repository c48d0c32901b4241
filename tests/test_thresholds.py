"""Quota thresholds, exit assignment and budget-meeting quotas against hand-worked cases."""

import numpy as np
import pytest

from eenet_sklearn._thresholds import (
    assign_exits,
    exit_fractions,
    geometric_fractions,
    gpu_available,
    quota_thresholds,
    tilt_to_budget,
)

USE_GPU = [
    False,
    pytest.param(True, marks=pytest.mark.skipif(not gpu_available(), reason="CuPy sees no usable GPU")),
]

INF = np.inf


def _mid(below: float, lowest: float) -> float:
    """Where a quota threshold lies: halfway between the highest score left out and the
    lowest admitted, so that no fitting sample sits on it."""
    return below / 2 + lowest / 2


# 10 samples, 3 exits. Exit 0 ranks samples 0, 2, 4 first; among the samples left
# (1, 3, 5, 6, 7, 8, 9) exit 1 ranks 3, 6, 8 first. Sample 4 has the best exit-1 score
# of all but has already left at exit 0, so it must not set exit 1's threshold.
SCORES = np.array(
    [
        [0.90, 0.99, 0.0],
        [0.10, 0.60, 0.0],
        [0.80, 0.00, 0.0],
        [0.20, 0.90, 0.0],
        [0.70, 0.99, 0.0],
        [0.30, 0.20, 0.0],
        [0.60, 0.80, 0.0],
        [0.40, 0.10, 0.0],
        [0.50, 0.70, 0.0],
        [0.05, 0.30, 0.0],
    ]
)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_quota_thresholds_by_hand(use_gpu):
    thresholds, exits = quota_thresholds(SCORES, np.array([0.3, 0.3, 0.4]), use_gpu=use_gpu)
    # Halfway between the last admitted score and the first left out (0.6 at both exits).
    np.testing.assert_array_equal(thresholds, [_mid(0.6, 0.7), _mid(0.6, 0.7), -INF])
    np.testing.assert_array_equal(exits, [0, 2, 0, 1, 0, 2, 1, 2, 1, 2])
    assert isinstance(thresholds, np.ndarray)
    assert isinstance(exits, np.ndarray)
    np.testing.assert_allclose(exit_fractions(exits, 3), [0.3, 0.3, 0.4])


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_tied_block_leaves_whole_when_that_lands_nearer_the_target(use_gpu):
    # Exit 0 should admit 4; the 4th best score (0.7) is shared by 3 samples: admitting
    # the block gives 5 (1 over), leaving it out 2 (2 under), so all 5 leave. Exit 1's
    # cumulative target is 7, so it admits 2 more (samples 6 and 5).
    scores = np.column_stack(
        [
            [0.9, 0.8, 0.7, 0.7, 0.7, 0.1, 0.2, 0.3, 0.4, 0.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.9, 0.1, 0.2, 0.3],
            np.zeros(10),
        ]
    )
    thresholds, exits = quota_thresholds(scores, np.array([0.4, 0.3, 0.3]), use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [_mid(0.5, 0.7), _mid(0.3, 0.5), -INF])
    np.testing.assert_array_equal(exits, [0, 0, 0, 0, 0, 1, 1, 2, 2, 2])


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_tied_block_stays_when_that_lands_nearer_the_target(use_gpu):
    # Exit 0 should admit 3; admitting the 0.7 block gives 5 (2 over), leaving it out 2
    # (1 under), so only samples 0 and 1 leave (threshold 0.8). Exit 1's cumulative
    # target is 6: it admits the 4 best of the rest at exit 1 (0.9, 0.5, 0.3, 0.2).
    scores = np.column_stack(
        [
            [0.9, 0.8, 0.7, 0.7, 0.7, 0.1, 0.2, 0.3, 0.4, 0.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.9, 0.1, 0.2, 0.3],
            np.zeros(10),
        ]
    )
    thresholds, exits = quota_thresholds(scores, np.array([0.3, 0.3, 0.4]), use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [_mid(0.7, 0.8), _mid(0.1, 0.2), -INF])
    np.testing.assert_array_equal(exits, [0, 0, 2, 2, 2, 1, 1, 2, 1, 1])


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_a_tied_block_at_the_top_can_empty_a_quota(use_gpu):
    # 7 samples tie at the top of exit 0 (quota 3): admitting them is 4 over, leaving
    # them out 3 under, so exit 0 admits nobody (+inf) and exit 1 (cumulative target 6)
    # takes its 6 best; the last exit takes the other 4.
    scores = np.zeros((10, 3))
    scores[:7, 0] = 1.0
    scores[:, 1] = np.linspace(1, 0, 10)
    thresholds, exits = quota_thresholds(scores, np.array([0.3, 0.3, 0.4]), use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [INF, _mid(scores[6, 1], scores[5, 1]), -INF])
    np.testing.assert_array_equal(exits, [1] * 6 + [2] * 4)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_empty_quota_gives_plus_inf(use_gpu):
    thresholds, exits = quota_thresholds(SCORES, np.array([0.0, 0.3, 0.7]), use_gpu=use_gpu)
    assert thresholds[0] == INF
    assert thresholds[2] == -INF
    # Exit 1 ranks everybody: 0.99 (samples 0 and 4) then 0.9 (sample 3).
    assert thresholds[1] == _mid(0.8, 0.9)
    np.testing.assert_array_equal(np.flatnonzero(exits == 1), [0, 3, 4])
    assert not np.any(exits == 0)
    thresholds, exits = quota_thresholds(SCORES, np.array([0.3, 0.0, 0.7]), use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [_mid(0.6, 0.7), INF, -INF])
    np.testing.assert_array_equal(exits, [0, 2, 0, 2, 0, 2, 2, 2, 2, 2])


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_quota_taking_everybody_left_gives_minus_inf(use_gpu):
    thresholds, exits = quota_thresholds(SCORES, np.array([0.3, 0.7, 0.0]), use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [_mid(0.6, 0.7), -INF, -INF])
    np.testing.assert_array_equal(exits, [0, 1, 0, 1, 0, 1, 1, 1, 1, 1])
    # A sample scoring below everything seen still leaves at exit 1 at inference.
    assert assign_exits(np.array([[0.0, -1e300, 5.0]]), thresholds)[0] == 1

    thresholds, exits = quota_thresholds(SCORES, np.array([1.0, 0.0, 0.0]), use_gpu=use_gpu)
    assert thresholds[0] == -INF
    assert thresholds[-1] == -INF
    np.testing.assert_array_equal(exits, np.zeros(10))


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_last_threshold_is_minus_inf_and_nobody_is_left_behind(use_gpu):
    rng = np.random.default_rng(0)
    for fractions in ([0.0, 0.0, 0.0, 1.0], [0.25] * 4, [0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]):
        scores = rng.random((101, 4))
        thresholds, exits = quota_thresholds(scores, np.array(fractions), use_gpu=use_gpu)
        assert thresholds[-1] == -INF
        assert exits.min() >= 0
        assert exits.max() <= 3
        assert len(exits) == 101


@pytest.mark.parametrize("use_gpu", USE_GPU)
@pytest.mark.parametrize("ties", [False, True])
def test_quota_properties_on_random_scores(use_gpu, ties):
    """Cumulative counts meet the rounded cumulative targets (exactly without ties, at
    least with ties), and the fitting exits are the ones the inference rule gives."""
    rng = np.random.default_rng(3)
    n, n_exits = 997, 5
    for _ in range(5):
        scores = rng.random((n, n_exits))
        if ties:
            scores = np.round(scores, 1)
        fractions = rng.dirichlet(np.ones(n_exits))
        thresholds, exits = quota_thresholds(scores, fractions, use_gpu=use_gpu)
        np.testing.assert_array_equal(assign_exits(scores, thresholds), exits)
        targets = np.rint(n * np.cumsum(fractions))
        counts = np.cumsum(np.bincount(exits, minlength=n_exits))
        if ties:
            # A tied block is never split: each cumulative count misses its target by
            # at most half the largest block of equal scores at that exit.
            for k in range(n_exits - 1):
                largest_block = np.unique(scores[:, k], return_counts=True)[1].max()
                assert abs(counts[k] - targets[k]) <= largest_block / 2
        else:
            np.testing.assert_array_equal(counts, targets)


@pytest.mark.skipif(not gpu_available(), reason="CuPy sees no usable GPU")
def test_gpu_and_numpy_agree_on_random_tied_scores():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random((5000, 4)), 2)
    fractions = np.array([0.4, 0.3, 0.2, 0.1])
    t_cpu, e_cpu = quota_thresholds(scores, fractions, use_gpu=False)
    t_gpu, e_gpu = quota_thresholds(scores, fractions, use_gpu=True)
    np.testing.assert_array_equal(t_cpu, t_gpu)
    np.testing.assert_array_equal(e_cpu, e_gpu)


def test_assign_exits_by_hand():
    thresholds = np.array([0.8, 0.5, INF, -INF])
    scores = np.array(
        [
            [0.9, 0.0, 0.0, 0.0],  # leaves at 0
            [0.8, 0.0, 0.0, 0.0],  # exactly at threshold: leaves at 0
            [0.1, 0.6, 0.0, 0.0],  # 1
            [0.1, 0.1, 1e308, 0.0],  # exit 2 is closed (+inf): falls to 3
            [0.79, 0.49, 0.0, -1e308],  # 3: the last exit takes everybody
            [0.1, 0.5, 0.0, 0.0],  # 1
        ]
    )
    np.testing.assert_array_equal(assign_exits(scores, thresholds), [0, 0, 1, 3, 3, 1])
    # The scores are not modified.
    assert scores[4, 3] == -1e308


def test_assign_exits_last_exit_takes_all_even_with_a_finite_threshold():
    scores = np.array([[0.1, 0.2], [0.0, 0.0]])
    np.testing.assert_array_equal(assign_exits(scores, np.array([0.5, 0.9])), [1, 1])


COSTS = np.array([0.1161975, 0.240677, 0.3560185, 0.557783])  # fashion_cnn4, ms


def _expected_cost(fractions, costs=COSTS):
    return float(np.asarray(fractions) @ costs)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.35, 0.55, 0.75, 0.99])
def test_tilt_to_budget_meets_the_budget(alpha):
    rng = np.random.default_rng(5)
    budget = COSTS[0] + alpha * (COSTS[-1] - COSTS[0])
    for _ in range(5):
        log_weights = rng.normal(scale=3.0, size=4)
        fractions = tilt_to_budget(log_weights, COSTS, budget)
        assert fractions.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(fractions >= 0)
        assert _expected_cost(fractions) == pytest.approx(budget, abs=1e-9)


def test_tilt_to_budget_keeps_zero_weight_exits_at_zero():
    log_weights = np.array([0.0, -INF, 0.0, 0.0])
    budget = 0.3
    fractions = tilt_to_budget(log_weights, COSTS, budget)
    assert fractions[1] == 0.0
    assert _expected_cost(fractions) == pytest.approx(budget, abs=1e-9)


def test_tilt_to_budget_is_a_tilt_of_the_weights():
    """The result is softmax(log_weights + t * costs / costs[-1]) for some t."""
    log_weights = np.array([0.3, -1.0, 2.0, 0.5])
    fractions = tilt_to_budget(log_weights, COSTS, 0.3)
    t = np.diff(np.log(fractions) - log_weights) / np.diff(COSTS / COSTS[-1])
    np.testing.assert_allclose(t, t[0], rtol=1e-8)


@pytest.mark.parametrize("function", ["tilt", "geometric"])
def test_limiting_budgets(function):
    def quotas(budget):
        if function == "tilt":
            return tilt_to_budget(np.array([1.0, -2.0, 0.5, 0.0]), COSTS, budget)
        return geometric_fractions(COSTS, budget)

    np.testing.assert_array_equal(quotas(COSTS[0]), [1, 0, 0, 0])
    np.testing.assert_array_equal(quotas(COSTS[-1]), [0, 0, 0, 1])
    np.testing.assert_array_equal(quotas(2 * COSTS[-1]), [0, 0, 0, 1])
    # Just inside the range the budget is still met, with almost everything at one end.
    eps = 1e-6
    low, high = quotas(COSTS[0] + eps), quotas(COSTS[-1] - eps)
    assert _expected_cost(low) == pytest.approx(COSTS[0] + eps, abs=1e-9)
    assert _expected_cost(high) == pytest.approx(COSTS[-1] - eps, abs=1e-9)
    assert low[0] > 0.999
    assert high[-1] > 0.999


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.5, 0.8, 0.95])
def test_geometric_fractions_are_geometric_and_meet_the_budget(alpha):
    budget = COSTS[0] + alpha * (COSTS[-1] - COSTS[0])
    fractions = geometric_fractions(COSTS, budget)
    assert fractions.sum() == pytest.approx(1.0, abs=1e-12)
    assert _expected_cost(fractions) == pytest.approx(budget, abs=1e-9)
    ratios = fractions[1:] / fractions[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    # A low budget front-loads the quotas (rho < 1), a high one back-loads them.
    uniform_cost = COSTS.mean()
    assert (ratios[0] < 1) == (budget < uniform_cost)


def test_geometric_fractions_with_a_uniform_budget_are_uniform():
    costs = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(geometric_fractions(costs, 2.0), [1 / 3] * 3, atol=1e-9)


@pytest.mark.parametrize("function", ["tilt", "geometric"])
def test_larger_budget_never_lowers_expected_cost(function):
    budgets = np.linspace(COSTS[0], COSTS[-1], 41)
    log_weights = np.array([0.0, 1.0, -1.0, 0.5])
    costs = []
    for budget in budgets:
        if function == "tilt":
            fractions = tilt_to_budget(log_weights, COSTS, budget)
        else:
            fractions = geometric_fractions(COSTS, budget)
        costs.append(_expected_cost(fractions))
    assert np.all(np.diff(costs) >= -1e-12)
    np.testing.assert_allclose(costs, budgets, atol=1e-9)


def test_tilt_falls_back_to_an_end_exit_when_the_weighted_exits_cannot_meet_the_budget():
    costs = np.array([1.0, 2.0, 3.0])
    # Only exits 1 and 2 carry weight, and both cost more than 1.5: everything goes to exit 0.
    np.testing.assert_array_equal(tilt_to_budget(np.array([-INF, 0.0, 0.0]), costs, 1.5), [1, 0, 0])
    # Only exits 0 and 1 carry weight, and both cost less than 2.5: everything goes to the last.
    np.testing.assert_array_equal(tilt_to_budget(np.array([0.0, 0.0, -INF]), costs, 2.5), [0, 0, 1])
    # Reachable budgets keep a zero-weight exit at zero.
    fractions = tilt_to_budget(np.array([-INF, 0.0, 0.0]), costs, 2.5)
    assert fractions[0] == 0.0
    assert fractions @ costs == pytest.approx(2.5, abs=1e-9)


# --- with a budget: the quotas' path ------------------------------------------------------------


def _first_or_last(cost: float) -> np.ndarray:
    """Quotas that mix the first and last of costs 1, 2, 3: expected cost ``cost``, and
    the share leaving at exit 0, ``(3 - cost) / 2``, falls as the cost rises."""
    return np.array([(3.0 - cost) / 2, 0.0, (cost - 1.0) / 2])


def _first_or_last_path(share: float) -> np.ndarray:
    """:func:`_first_or_last` as ``quota_thresholds`` takes it: the mean cost in units
    of the last exit's (3)."""
    return _first_or_last(3.0 * share)


@pytest.mark.parametrize("use_gpu", USE_GPU)
def test_rounded_quotas_that_overspend_fall_back_along_their_path(use_gpu):
    # 10 samples, costs 1, 2, 3, budget 1.95 (19.5 in all). The quotas are 0.525 / 0 /
    # 0.475: 5.25 samples by exit 0 round to 5, which spend 5 + 5 * 3 = 20 > 19.5.
    costs = np.array([1.0, 2.0, 3.0])
    scores = np.column_stack([np.linspace(0.9, 0.0, 10), np.linspace(0.0, 0.9, 10), np.zeros(10)])
    fractions = _first_or_last(1.95)
    # Along the path, the last mean cost within the budget rounds 6 samples to exit 0
    # (from 10 * (3 - b) / 2 >= 5.5, b <= 1.9): 6 + 4 * 3 = 18, the 6 best at exit 0.
    thresholds, exits = quota_thresholds(
        scores, fractions, costs=costs, budget=1.95, quotas=_first_or_last_path, use_gpu=use_gpu
    )
    np.testing.assert_array_equal(thresholds, [_mid(0.3, 0.4), INF, -INF])
    np.testing.assert_array_equal(exits, [0] * 6 + [2] * 4)
    # Without the path, the costliest setting with at least 5 by exits 0 and 1 that fits:
    # 5 at exit 0, and 1 at exit 1 (sample 9, the best left there): 5 + 2 + 12 = 19.
    thresholds, exits = quota_thresholds(scores, fractions, costs=costs, budget=1.95, use_gpu=use_gpu)
    np.testing.assert_array_equal(thresholds, [_mid(0.4, 0.5), _mid(0.8, 0.9), -INF])
    np.testing.assert_array_equal(exits, [0] * 5 + [2, 2, 2, 2, 1])
    # Quotas that fit the budget are kept as they are, path or not (budget 2.05: 5 by
    # exit 0 again, 5 + 5 * 3 = 20 <= 20.5).
    for quotas in (_first_or_last_path, None):
        thresholds, exits = quota_thresholds(
            scores, _first_or_last(2.05), costs=costs, budget=2.05, quotas=quotas, use_gpu=use_gpu
        )
        np.testing.assert_array_equal(thresholds, [_mid(0.4, 0.5), INF, -INF])
        np.testing.assert_array_equal(exits, [0] * 5 + [2] * 5)

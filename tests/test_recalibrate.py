"""Label-free recalibration: new thresholds from unlabeled outputs, the learned scores kept."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.metrics import budget_at_position

QUOTA_POLICIES = ["maxprob", "entropy", "learned", "eenet"]

#: Fast EENet settings (a few seconds per fit on 5000 samples).
EENET = {"max_epochs": 8, "hidden_size": 16, "random_state": 0, "device": "cpu"}


def make_policy(name: str, **params: object):
    return {
        "maxprob": MaxProbPolicy,
        "entropy": EntropyPolicy,
        "learned": LearnedScorePolicy,
        "eenet": lambda **p: EarlyExitPolicy(**EENET, **p),
    }[name](**params)


def fitted_state(policy) -> tuple:
    return (policy.thresholds_.copy(), policy.exit_fractions_.copy(), policy.budget_, policy.target_cost_)


def assert_same_state(before: tuple, after: tuple) -> None:
    assert_array_equal(before[0], after[0])
    assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


@pytest.fixture(scope="module")
def fitted(fashion: Bunch) -> dict:
    """Each quota policy fitted on clean logits at 30% of the way from the first exit's cost."""
    budget = float(budget_at_position(fashion.costs, 0.3))
    return {
        name: make_policy(name, costs=fashion.costs, budget=budget).fit(fashion.X, fashion.y)
        for name in QUOTA_POLICIES
    }


def _shift(X: np.ndarray, kind: str) -> np.ndarray:
    """Drifted traffic: less confident (logits scaled down), over-confident, or noisy logits."""
    if kind == "scaled down":
        return (0.3 * X).astype(X.dtype)
    if kind == "scaled up":
        return (3.0 * X).astype(X.dtype)
    noise = np.random.default_rng(0).normal(0.0, 4.0, X.shape)
    return (X + noise).astype(X.dtype)


# --- a hand-worked case ----------------------------------------------------------------------


# Three fitting samples are far too few for the budget to hold on new data, as fit warns.
@pytest.mark.filterwarnings("ignore::eenet_sklearn.base.SmallFittingSetWarning")
@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
def test_recalibrating_on_a_hand_worked_case(policy_class) -> None:
    # Costs 1, 2, 3 and budget 2: MSDNet's geometric quotas give each exit a third. Two
    # classes, logits (m, 0): both confidences grow with the margin m.
    def logits(margins: list[list[float]]) -> np.ndarray:
        margins = np.asarray(margins, dtype=np.float64)
        return np.stack([margins, np.zeros_like(margins)], axis=-1)

    X_fit = logits([[4.0, 4.0, 4.0], [0.1, 3.0, 4.0], [0.0, 0.2, 1.0]])
    policy = policy_class(costs=[1.0, 2.0, 3.0], budget=2.0).fit(X_fit, [0, 1, 0])
    assert_array_equal(policy.predict_exit(X_fit), [0, 1, 2])
    # Six new samples, margins at exit 0 of 5..0: the two most confident leave there; of
    # the other four, the two with the largest margins at exit 1 (3 and 2) leave there.
    X_new = logits([[5, 9, 9], [4, 9, 9], [3, 0.5, 9], [2, 3, 9], [1, 0.1, 9], [0, 2, 9]])
    before = policy.predict_exit(X_new)
    assert policy.recalibrate(X_new) is policy
    assert_array_equal(policy.predict_exit(X_new), [0, 0, 2, 1, 2, 1])
    assert not np.array_equal(before, [0, 0, 2, 1, 2, 1])  # the fitted thresholds decided otherwise
    assert_array_equal(policy.exit_fractions_, [1 / 3, 1 / 3, 1 / 3])
    assert policy.expected_cost(X_new) == 2.0
    assert policy.budget_ == policy.target_cost_ == 2.0
    # A new budget of 1.5: quotas p proportional to rho**k with p0 + 2 p1 + 3 p2 = 1.5
    # give 3.7, 1.6 and 0.7 of the six samples, rounded cumulatively to 4, 5, 6: the four
    # largest margins at exit 0 leave there, the larger of the last two at exit 1.
    policy.recalibrate(X_new, budget=1.5)
    assert_array_equal(policy.predict_exit(X_new), [0, 0, 0, 0, 2, 1])
    assert policy.budget_ == policy.target_cost_ == 1.5
    assert policy.expected_cost(X_new) <= 1.5


# --- the fitting data itself -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["maxprob", "entropy", "learned"])
def test_recalibrating_on_the_fitting_data_gives_the_fitted_thresholds(name, fashion, fitted) -> None:
    policy = pickle.loads(pickle.dumps(fitted[name]))
    before = fitted_state(policy)
    policy.recalibrate(fashion.X)
    assert_same_state(before, fitted_state(policy))


def test_eenet_recalibrated_on_its_fitting_data_gives_the_fitted_thresholds(fashion, fitted) -> None:
    # Whether EENet spends its whole budget or less (target_cost_), the quotas of its
    # operating point are its mean exit distribution tilted to that cost: the same again.
    policy = pickle.loads(pickle.dumps(fitted["eenet"]))
    before = fitted_state(policy)
    policy.recalibrate(fashion.X)
    assert_same_state(before, fitted_state(policy))
    assert policy.expected_cost(fashion.X) <= policy.target_cost_ * (1 + 1e-9)


# --- drifted traffic ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["scaled down", "scaled up", "noise"])
@pytest.mark.parametrize("name", QUOTA_POLICIES)
def test_recalibrated_on_drifted_traffic_the_budget_holds_on_more_of_it(name, kind, fashion, fitted) -> None:
    policy = pickle.loads(pickle.dumps(fitted[name]))
    drifted = _shift(fashion.X_test, kind)
    unlabeled, held_out = drifted[:5000], drifted[5000:]
    target = policy.target_cost_
    static = policy.expected_cost(held_out) / target
    assert not 0.95 <= static <= 1.02, "the shift must move the static policy's cost"
    policy.recalibrate(unlabeled)
    assert policy.expected_cost(unlabeled) <= target * (1 + 1e-9)  # the ceiling, on X itself
    assert 0.95 <= policy.expected_cost(held_out) / target <= 1.02
    assert policy.target_cost_ == target  # the operating point stays
    counts = np.bincount(policy.predict_exit(unlabeled), minlength=4)
    assert_array_equal(policy.exit_fractions_, counts / 5000)


@pytest.mark.parametrize("name", QUOTA_POLICIES)
def test_a_new_budget_moves_the_operating_point(name, fashion, fitted) -> None:
    policy = pickle.loads(pickle.dumps(fitted[name]))
    scores = policy.exit_scores(fashion.X_test)
    drifted = _shift(fashion.X_test, "scaled down")
    costs = []
    for budget in budget_at_position(fashion.costs, [0.0, 0.1, 0.3, 0.5, 0.8, 1.0]):
        policy.recalibrate(drifted, budget=budget)
        assert policy.budget_ == policy.target_cost_ == budget
        cost = policy.expected_cost(drifted)
        assert cost <= budget * (1 + 1e-9)
        assert cost >= 0.99 * budget
        costs.append(cost)
    assert np.all(np.diff(costs) > 0)
    # The learned scores are kept: only the thresholds moved.
    assert_array_equal(policy.exit_scores(fashion.X_test), scores)


def test_eenet_quotas_for_a_new_budget_tilt_its_mean_exit_distribution(fitted) -> None:
    policy = fitted["eenet"]
    costs = policy.costs_
    weights = np.exp(policy.quota_log_weights_)
    assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)
    for budget in budget_at_position(costs, [0.2, 0.6]):
        fractions = policy._quota_fractions(budget)
        assert fractions @ costs == pytest.approx(budget, rel=1e-9)
        # softmax(log w + t * direction): the log-ratio to the weights is linear in the costs.
        log_ratio = np.log(fractions / weights)
        slope = np.diff(log_ratio) / np.diff(costs)
        assert slope == pytest.approx(np.full(3, slope[0]), rel=1e-6)


# --- what it refuses, and that a refusal changes nothing ------------------------------------------


def test_recalibrate_needs_a_fitted_policy() -> None:
    with pytest.raises(NotFittedError):
        MaxProbPolicy(costs=[1.0, 2.0], budget=1.5).recalibrate(np.zeros((4, 2, 3)))


@pytest.mark.parametrize(
    "policy", [PatiencePolicy(patience=2), FixedExitPolicy(exit=1)], ids=["patience", "fixed"]
)
def test_rules_without_quotas_refuse_to_recalibrate(policy, fashion) -> None:
    policy.set_params(costs=fashion.costs).fit(fashion.X[:500], fashion.y[:500])
    name = type(policy).__name__
    with pytest.raises(TypeError, match=rf"recalibrate needs .*quotas.*{name} sets its thresholds"):
        policy.recalibrate(fashion.X_test[:500])


@pytest.mark.parametrize(
    ("X", "budget", "error", "match"),
    [
        (np.full((10, 4, 10), np.nan), None, ValueError, "NaN"),
        (np.zeros((10, 3, 10)), None, ValueError, "exits"),
        (np.zeros((10, 4, 7)), None, ValueError, "classes"),
        (np.zeros((0, 4, 10)), None, ValueError, "0 sample"),
        (np.full((10, 4, 10), "1"), None, TypeError, "strings"),
        (None, 0.05, ValueError, r"budget=0.05 is below the first exit's cost 0.116198"),
        (None, float("inf"), ValueError, "budget must be finite"),
        (None, "0.3", TypeError, "budget must be a real number"),
    ],
)
def test_a_failed_recalibration_leaves_the_policy_as_it_was(X, budget, error, match, fashion, fitted) -> None:
    policy = fitted["maxprob"]
    before = fitted_state(policy)
    with pytest.raises(error, match=match):
        policy.recalibrate(fashion.X_test[:100] if X is None else X, budget=budget)
    assert_same_state(before, fitted_state(policy))


def test_recalibrate_after_pickling_and_on_flattened_outputs(fashion, fitted) -> None:
    policy = pickle.loads(pickle.dumps(fitted["eenet"]))
    flat = fashion.X_test[:3000].reshape(3000, -1)
    budget = float(budget_at_position(fashion.costs, 0.5))
    policy.recalibrate(flat, budget=budget)
    assert policy.expected_cost(flat) <= budget * (1 + 1e-9)
    assert policy.expected_cost(fashion.X_test[:3000]) == policy.expected_cost(flat)


def test_recalibrating_on_too_few_samples_warns_as_fit_does(fashion):
    policy = MaxProbPolicy(costs=fashion.costs, budget=budget_at_position(fashion.costs, 0.5))
    policy.fit(fashion.X, fashion.y)
    with pytest.warns(SmallFittingSetWarning, match="recalibrated on 50 samples"):
        policy.recalibrate(fashion.X_test[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallFittingSetWarning)
        policy.recalibrate(fashion.X_test)

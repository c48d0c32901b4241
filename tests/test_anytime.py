"""AnytimeEnsemble: exit k predicts from exits 0..k, causally, in every path a policy decides in."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime
import pytest
import torch
from scipy.optimize import check_grad
from scipy.special import log_softmax, softmax
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_sklearn_api import EXPECTED_FAILED_CHECKS
from torch import nn

from eenet_sklearn import (
    AnytimeEnsemble,
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    MaxProbPolicy,
    PatiencePolicy,
    export_onnx,
    load_policy,
    save_policy,
)
from eenet_sklearn._anytime import _row_objective, fit_anytime_weights, uniform_anytime_weights
from eenet_sklearn.datasets import load_exit_logits
from eenet_sklearn.metrics import oracle_accuracy
from eenet_sklearn.nn import MultiExitNetwork, early_exit_predict
from eenet_sklearn.online import BudgetController

FAST_EENET = {"max_epochs": 2, "hidden_size": 8, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def reviews():
    """Six exits of MiniLM on movie reviews: 2,000 rows to fit on, 2,000 to test on."""
    data = load_exit_logits("reviews_minilm6")
    costs = data.costs.astype(np.float64)
    budget = float(costs[0] + 0.3 * (costs[-1] - costs[0]))
    return data.val_logits[:2000], data.val_labels[:2000], data.test_logits[:2000], costs, budget


def _policies(costs, budget):
    return {
        "maxprob": MaxProbPolicy(costs, budget),
        "entropy": EntropyPolicy(costs, budget),
        "patience": PatiencePolicy(costs, budget),
        "eenet": EarlyExitPolicy(costs, budget, **FAST_EENET),
    }


def _fit(policy, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting sets: not what is tested here
        return policy.fit(X, y)


# --- the arithmetic, against hand-worked values ----------------------------------------------


def test_hand_worked_weights_give_the_weighted_geometric_mean():
    # Exit 1 with weights (0.25, 0.75): p ~ 0.9**0.25 * 0.4**0.75 = 0.4899 against
    # 0.1**0.25 * 0.6**0.75 = 0.3834, normalised: 0.5610, 0.4390.
    X = np.log([[[0.9, 0.1], [0.4, 0.6]]])
    policy = AnytimeEnsemble(FixedExitPolicy(exit=1), weights=[[1.0, 0.0], [0.25, 0.75]], costs=[1.0, 2.0])
    policy = policy.fit(np.concatenate([X, X]), [0, 1])
    np.testing.assert_allclose(policy.predict_proba(X)[0], [0.5610, 0.4390], atol=1e-4)
    assert policy.predict(X).tolist() == [0]  # exit 1 alone predicts class 1
    # The ensembled logits are the weighted log-probabilities themselves.
    expected = 0.25 * np.log([0.9, 0.1]) + 0.75 * np.log([0.4, 0.6])
    np.testing.assert_allclose(policy.ensembled_logits(X)[0, 1], expected, rtol=1e-14)


def test_uniform_weights_are_the_running_mean_of_log_probabilities(reviews):
    X, y, X_test, costs, _ = reviews
    policy = _fit(AnytimeEnsemble(FixedExitPolicy(costs, exit=3), weights="uniform"), X, y)
    log_p = log_softmax(X_test.astype(np.float64), axis=-1)
    running_mean = np.cumsum(log_p, axis=1) / np.arange(1, log_p.shape[1] + 1)[None, :, None]
    np.testing.assert_allclose(policy.ensembled_logits(X_test), running_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(policy.predict_proba(X_test), softmax(running_mean[:, 3], axis=-1), rtol=1e-12)
    assert uniform_anytime_weights(3).tolist() == [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]


@pytest.mark.parametrize("name", ["maxprob", "entropy", "patience", "eenet"])
def test_one_hot_weights_on_the_current_exit_give_the_plain_policy(reviews, name):
    X, y, X_test, costs, budget = reviews
    plain = _fit(_policies(costs, budget)[name], X, y)
    ensemble = _fit(AnytimeEnsemble(_policies(costs, budget)[name], weights=np.eye(len(costs))), X, y)
    np.testing.assert_array_equal(ensemble.predict_exit(X_test), plain.predict_exit(X_test))
    np.testing.assert_array_equal(ensemble.predict(X_test), plain.predict(X_test))
    np.testing.assert_allclose(ensemble.predict_proba(X_test), plain.predict_proba(X_test), rtol=1e-12)
    np.testing.assert_allclose(ensemble.exit_scores(X_test), plain.exit_scores(X_test), rtol=1e-6, atol=1e-9)


def test_fitted_weights_minimise_the_penalised_likelihood_and_recycle_an_informative_exit():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    signal = 3.0 * np.eye(3)[y]
    # Exit 0 is informative, exit 1 half as much with independent noise: combining helps.
    X = np.stack([signal + rng.normal(size=(600, 3)), 0.5 * signal + rng.normal(size=(600, 3))], axis=1)
    log_p = log_softmax(X, axis=-1)
    weights = fit_anytime_weights(log_p, y, alpha=1.0)
    assert weights[0, 1] == 0 and np.all(weights >= 0)
    assert weights[1, 0] > 0.3  # exit 1 leans on exit 0
    rows, prior = np.arange(600), np.array([0.0, 1.0])
    lp = np.ascontiguousarray(log_p)
    fitted = _row_objective(weights[1], lp, rows, y, prior, 1 / 600)[0]
    for other in ([0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [1.0, 1.0]):
        assert fitted <= _row_objective(np.array(other), lp, rows, y, prior, 1 / 600)[0]
    # The gradient is that of the objective (finite differences).
    error = check_grad(
        lambda w: _row_objective(w, lp, rows, y, prior, 0.1)[0],
        lambda w: _row_objective(w, lp, rows, y, prior, 0.1)[1],
        np.array([0.3, 0.8]),
    )
    assert error < 1e-5
    # A strong prior keeps each exit alone (the default for tiny fitting sets).
    np.testing.assert_allclose(fit_anytime_weights(log_p[:20], y[:20], alpha=1e6), np.eye(2), atol=1e-3)
    ensembled = (np.einsum("kj,njc->nkc", weights, log_p).argmax(-1) == y[:, None]).mean(axis=0)
    assert ensembled[1] > (X[:, 1].argmax(-1) == y).mean()


# --- causality and batch invariance ----------------------------------------------------------


@pytest.mark.parametrize("name", ["maxprob", "eenet"])
def test_exit_k_never_reads_later_exits(reviews, name):
    X, y, X_test, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(_policies(costs, budget)[name]), X, y)
    assert not np.triu(policy.weights_, 1).any()
    rng = np.random.default_rng(1)
    exits, scores = policy.predict_exit(X_test), policy.exit_scores(X_test)
    proba, logits = policy.predict_proba(X_test), policy.ensembled_logits(X_test)
    for k in range(len(costs) - 1):
        changed = X_test.copy()
        changed[:, k + 1 :] = rng.normal(scale=5.0, size=changed[:, k + 1 :].shape)
        np.testing.assert_array_equal(policy.exit_scores(changed)[:, : k + 1], scores[:, : k + 1])
        np.testing.assert_array_equal(policy.ensembled_logits(changed)[:, : k + 1], logits[:, : k + 1])
        early = exits <= k
        np.testing.assert_array_equal(policy.predict_exit(changed)[early], exits[early])
        np.testing.assert_array_equal(policy.predict_proba(changed)[early], proba[early])


def test_the_decider_exit_by_exit_decides_as_predict_and_rows_are_independent(reviews):
    X, y, X_test, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(EarlyExitPolicy(costs, budget, **FAST_EENET)), X, y)
    X_test = X_test[:500]
    decider = policy.exit_decider()
    assert decider.state_names[-1] == "ensemble_sums"
    rows, state = np.arange(len(X_test)), decider.initial_state(len(X_test))
    exits, proba = np.full(len(X_test), -1), np.zeros((len(X_test), 2))
    for k in range(decider.n_exits):
        leave, chosen, state = decider.decide(k, X_test[rows, k], state)
        exits[rows[leave]], proba[rows[leave]] = k, chosen[leave]
        rows, state = rows[~leave], decider.keep(state, ~leave)
    np.testing.assert_array_equal(exits, policy.predict_exit(X_test))
    np.testing.assert_array_equal(proba, policy.predict_proba(X_test))
    one_by_one = np.concatenate([policy.predict_proba(X_test[i : i + 1]) for i in range(0, 500, 7)])
    np.testing.assert_array_equal(one_by_one, policy.predict_proba(X_test[::7]))
    np.testing.assert_array_equal(policy.predict_exit(X_test.astype(np.float64)), exits)


def test_early_exit_inference_and_the_budget_controller_use_the_ensemble():
    torch.manual_seed(0)
    network = MultiExitNetwork(
        stages=[nn.Linear(4, 8), *(nn.Sequential(nn.ReLU(), nn.Linear(8, width)) for width in (8, 6))],
        heads=[nn.Linear(8, 3), nn.Linear(8, 3), nn.Linear(6, 3)],
    )
    inputs = torch.randn(300, 4)
    with torch.inference_mode():
        logits = np.concatenate([network.eval()(inputs[i : i + 1]).numpy() for i in range(300)])
    y = np.random.default_rng(0).integers(0, 3, size=300)  # an untrained network: any labels
    policy = _fit(AnytimeEnsemble(MaxProbPolicy([1.0, 2.0, 3.0], 2.0), weights="uniform"), logits, y)
    result = early_exit_predict(network, policy, inputs, batch_size=1)
    np.testing.assert_array_equal(result.exits, policy.predict_exit(logits))
    np.testing.assert_array_equal(result.labels, policy.predict(logits))
    controller = BudgetController(policy)
    np.testing.assert_array_equal(controller.predict(logits), policy.predict(logits))


# --- persistence, ONNX, scikit-learn ----------------------------------------------------------


def test_policy_file_round_trip(reviews, tmp_path):
    X, y, X_test, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(EarlyExitPolicy(costs, budget, **FAST_EENET)), X, y)
    save_policy(policy, tmp_path / "policy.npz")
    loaded = load_policy(tmp_path / "policy.npz")
    assert type(loaded) is AnytimeEnsemble and type(loaded.policy_) is EarlyExitPolicy
    np.testing.assert_array_equal(loaded.weights_, policy.weights_)
    np.testing.assert_array_equal(loaded.predict_exit(X_test), policy.predict_exit(X_test))
    np.testing.assert_array_equal(loaded.predict_proba(X_test), policy.predict_proba(X_test))


def _serve(folder, X):
    """Exits and probabilities from the ONNX graphs, exit by exit, leaving rows dropped."""
    manifest = json.loads((folder / "manifest.json").read_text())
    sessions = [
        onnxruntime.InferenceSession(folder / name, providers=["CPUExecutionProvider"])
        for name in manifest["files"]
    ]
    exits, proba = np.full(len(X), -1), np.zeros((len(X), X.shape[2]))
    rows, state = np.arange(len(X)), {}
    for k, session in enumerate(sessions):
        leave, _, chosen, *carried = session.run(None, {manifest["input_type"]: X[rows, k], **state})
        exits[rows[leave]], proba[rows[leave]] = k, chosen[leave]
        rows = rows[~leave]
        state = {name: value[~leave] for name, value in zip(manifest["state"], carried, strict=True)}
        if not len(rows):
            break
    return exits, proba, manifest


@pytest.mark.parametrize("name", ["maxprob", "eenet"])
def test_onnx_graphs_decide_as_the_ensemble(reviews, name, tmp_path):
    X, y, X_test, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(_policies(costs, budget)[name]), X, y)
    export_onnx(policy, tmp_path, input_dtype="float32")
    exits, proba, manifest = _serve(tmp_path, X_test)
    assert manifest["state"][-1] == "ensemble_sums"
    np.testing.assert_array_equal(exits, policy.predict_exit(X_test))
    np.testing.assert_allclose(proba, policy.predict_proba(X_test), rtol=1e-9)


def test_onnx_graphs_read_probabilities_with_zeros(reviews, tmp_path):
    X, y, X_test, costs, budget = reviews
    fit, test = (_with_zeros(softmax(logits.astype(np.float64), axis=-1)) for logits in (X, X_test))
    ensemble = AnytimeEnsemble(MaxProbPolicy(costs, budget), weights="uniform", input_type="proba")
    policy = _fit(ensemble, fit, y)
    assert np.all(np.isfinite(policy.ensembled_logits(test)))
    export_onnx(policy, tmp_path, input_dtype="float64")
    exits, chosen, _ = _serve(tmp_path, test)
    np.testing.assert_array_equal(exits, policy.predict_exit(test))
    np.testing.assert_allclose(chosen, policy.predict_proba(test), rtol=1e-9)


def _with_zeros(proba: np.ndarray) -> np.ndarray:
    """Probabilities with the small ones set to exactly 0 (their log is -inf), renormalised."""
    proba[proba < 0.05] = 0.0
    return proba / proba.sum(axis=-1, keepdims=True)


@parametrize_with_checks(
    [AnytimeEnsemble(MaxProbPolicy(costs=[1.0, 2.0], budget=1.5))],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,  # the policies' own reasons
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_clone_and_grid_search_over_the_budget_and_the_weights(reviews):
    X, y, X_test, costs, budget = reviews
    ensemble = AnytimeEnsemble(MaxProbPolicy(costs), alpha=2.0)
    copy = clone(ensemble)
    assert copy.get_params()["alpha"] == 2.0 and copy.get_params()["policy__costs"] is not None
    search = GridSearchCV(ensemble, {"budget": [budget, 1.5 * budget], "weights": ["fit", "uniform"]}, cv=2)
    _fit(search, X, y)
    assert set(search.cv_results_["param_weights"]) == {"fit", "uniform"}
    assert search.best_estimator_.expected_cost(X_test) <= 1.1 * search.best_params_["budget"]
    assert not hasattr(ensemble, "policy_")  # the estimator given is not fitted


def test_recalibrate_moves_the_wrapped_policys_thresholds(reviews):
    X, y, X_test, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(MaxProbPolicy(costs, budget)), X, y)
    weights = policy.weights_.copy()
    policy = policy.recalibrate(X_test, budget=1.5 * budget)
    assert policy.expected_cost(X_test) <= 1.5 * budget
    np.testing.assert_array_equal(policy.thresholds_, policy.policy_.thresholds_)
    np.testing.assert_array_equal(policy.weights_, weights)


def test_ensembled_oracle(reviews):
    X, y, _, costs, budget = reviews
    policy = _fit(AnytimeEnsemble(MaxProbPolicy(costs, budget)), X, y)
    plain = oracle_accuracy(X, y, costs, budget)
    assert oracle_accuracy(X, y, costs, budget, weights=np.eye(len(costs))) == plain
    ensembled = oracle_accuracy(X, y, costs, budget, weights=policy.weights_)
    assert policy.score(X, y) <= ensembled <= 1.0
    with pytest.raises(ValueError, match="weights must be"):
        oracle_accuracy(X, y, costs, budget, weights=np.ones((len(costs), len(costs))))


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"weights": "mean"}, ValueError, "weights must be"),
        ({"weights": np.eye(2)}, ValueError, r"got shape \(2, 2\)"),
        ({"weights": np.triu(np.ones((3, 3)))}, ValueError, "above the diagonal"),
        ({"weights": -np.eye(3)}, ValueError, "negative or non-finite"),
        ({"weights": np.diag([1.0, 0.0, 1.0])}, ValueError, r"rows \[1\] are all 0"),
        ({"weights": [["a"] * 3] * 3}, TypeError, "weights must be"),
        ({"alpha": -1.0}, ValueError, "alpha must be"),
        ({"alpha": "1"}, TypeError, "alpha must be"),
        ({"policy": "eenet"}, TypeError, "policy must be an eenet_sklearn exit policy"),
        ({"policy": AnytimeEnsemble()}, TypeError, "not an AnytimeEnsemble"),
    ],
)
def test_bad_parameters_are_named(mnist, params, error, match):
    ensemble = AnytimeEnsemble(MaxProbPolicy(mnist.costs, mnist.costs[1])).set_params(**params)
    with pytest.raises(error, match=match):
        ensemble.fit(mnist.X, mnist.y)
    assert not hasattr(ensemble, "policy_")


def test_unfitted_and_user_input_untouched(mnist):
    ensemble = AnytimeEnsemble(MaxProbPolicy(mnist.costs, mnist.costs[1]), weights=np.eye(3))
    with pytest.raises(NotFittedError):
        ensemble.predict(mnist.X)
    weights = ensemble.weights.copy()
    ensemble.fit(mnist.X, mnist.y)  # mnist's arrays are read-only: a write would raise
    np.testing.assert_array_equal(ensemble.weights, weights)
    with pytest.raises(ValueError, match="costs"):
        AnytimeEnsemble(MaxProbPolicy()).fit(mnist.X, mnist.y)


def test_risk_control_certifies_the_ensembles_predictions_not_the_plain_exits():
    # The risk of the chosen point, recomputed by hand from what the wrapped ensemble
    # serves: its predictions at the chosen exits against its own last exit's.
    from eenet_sklearn import RiskControlledPolicy

    data = load_exit_logits("fashion_cnn4")
    X, y = data.val_logits[:3000], data.val_labels[:3000]
    ensemble = AnytimeEnsemble(MaxProbPolicy(), weights="uniform", costs=data.costs)
    safe = RiskControlledPolicy(ensemble, max_risk=0.02, confidence_level=0.9, random_state=0)
    safe.fit(X, y)
    cal = safe.calibration_indices_
    served = safe.predict(X[cal])
    last = safe.policy_.ensembled_logits(X[cal])[:, -1].argmax(axis=1)
    plain_last = X[cal, -1].argmax(axis=1)
    assert np.any(last != plain_last)  # the ensemble changes some last-exit answers
    expected = np.mean((last == y[cal]) & (served != y[cal]))
    assert safe.risk_ == pytest.approx(expected, abs=1e-12)

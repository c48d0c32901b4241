"""scikit-learn citizenship: params, clone, Pipeline, model selection and the common checks."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import softmax
from sklearn.base import BaseEstimator, clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import Bunch
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import eenet_sklearn.base
from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn.base import FitParameterOverrideWarning
from eenet_sklearn.metrics import make_cost_aware_scorer, smallest_budget_within

# --- sklearn's common checks -------------------------------------------------------------
# With costs=[1.0, 2.0] a 2-D X of shape (n, 2 * C) is read as 2 exits x C class columns.
# The checks below fit on generic tabular data that cannot be read that way, and fit
# rightly raises ValueError; each reason says why for the data that check fits on, and
# names the test that checks the same property on real per-exit logits.
_ODD_WIDTH = "X has {} features, not a multiple of the 2 exits: not per-exit outputs; see {}"
_ONE_COLUMN = "X has 2 features = 2 exits x 1 column, but an exit needs a column per class; see {}"
_COLUMNS_VS_LABELS = "X has {} features = 2 exits x {} class columns, but y has {} labels; see {}"
EXPECTED_FAILED_CHECKS = {
    "check_fit_score_takes_y": _ODD_WIDTH.format(3, "test_pipeline_fits_and_predicts"),
    "check_dont_overwrite_parameters": _ODD_WIDTH.format(3, "test_fit_keeps_params"),
    "check_pipeline_consistency": _ODD_WIDTH.format(3, "test_pipeline_fits_and_predicts"),
    "check_estimators_nan_inf": _ODD_WIDTH.format(3, "test_validation::test_non_finite_logits"),
    "check_estimators_pickle": _ODD_WIDTH.format(3, "test_persistence"),
    "check_f_contiguous_array_estimator": _ODD_WIDTH.format(3, "test_input_containers"),
    "check_supervised_y_2d": _ODD_WIDTH.format(3, "test_column_vector_y"),
    "check_methods_sample_order_invariance": _ODD_WIDTH.format(3, "test_order_and_batching"),
    "check_methods_subset_invariance": _ODD_WIDTH.format(3, "test_order_and_batching"),
    "check_dict_unchanged": _ODD_WIDTH.format(3, "test_prediction_keeps_state"),
    "check_fit2d_predict1d": _ODD_WIDTH.format(3, "test_validation::test_x_ndim"),
    "check_estimators_dtypes": _ODD_WIDTH.format(5, "test_input_containers"),
    "check_estimators_overwrite_params": _ONE_COLUMN.format("test_fit_keeps_params"),
    "check_estimators_fit_returns_self": _ONE_COLUMN.format("test_fit_is_deterministic"),
    "check_readonly_memmap_input": _ONE_COLUMN.format("test_input_containers"),
    "check_classifier_data_not_an_array": _ONE_COLUMN.format("test_input_containers"),
    "check_classifiers_classes": _ONE_COLUMN.format("test_validation::test_string_labels"),
    "check_classifiers_train": _ONE_COLUMN.format("test_predictions_are_consistent"),
    "check_fit_idempotent": _ONE_COLUMN.format("test_fit_is_deterministic"),
    "check_fit_check_is_fitted": _ONE_COLUMN.format("test_fit_is_deterministic"),
    "check_n_features_in": _ONE_COLUMN.format("test_n_features_in"),
    "check_n_features_in_after_fitting": _COLUMNS_VS_LABELS.format(
        4, 2, 3, "test_validation::test_exits_differ_from_fit"
    ),
    "check_positive_only_tag_during_fit": _COLUMNS_VS_LABELS.format(
        4, 2, 3, "real logits, which are negative, in every fit here"
    ),
    "check_dtype_object": _COLUMNS_VS_LABELS.format(10, 5, 4, "test_input_containers"),
}

CHECKED_ESTIMATORS = [
    EarlyExitPolicy(
        costs=[1.0, 2.0], budget=1.5, max_epochs=2, hidden_size=4, random_state=0, device="cpu"
    ),
    MaxProbPolicy(costs=[1.0, 2.0], budget=1.5),
    EntropyPolicy(costs=[1.0, 2.0], budget=1.5),
    # The other baselines share the base class, so the same checks and exclusions apply.
    LearnedScorePolicy(costs=[1.0, 2.0], budget=1.5),
    PatiencePolicy(costs=[1.0, 2.0], budget=1.5),
    FixedExitPolicy(costs=[1.0, 2.0], budget=1.5),
]


@parametrize_with_checks(
    CHECKED_ESTIMATORS, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS
)
def test_sklearn_compatible(estimator: BaseEstimator, check: Callable) -> None:
    check(estimator)


# --- params, clone, fitted state -------------------------------------------------------------
ALL_POLICIES = [EarlyExitPolicy, MaxProbPolicy, EntropyPolicy]


@pytest.mark.parametrize("policy_class", ALL_POLICIES)
def test_params_round_trip_and_clone(policy_class: type, mnist: Bunch) -> None:
    costs = np.array([1.0, 2.5, 4.0])
    policy = policy_class(costs=costs, budget=2.0, classes=list("abcdefghij"))
    params = policy.get_params()
    assert params["costs"] is costs and params["budget"] == 2.0
    assert params["classes"] == list("abcdefghij")
    # A policy rebuilt from its params has the same params.
    assert policy_class(**params).get_params() == params

    assert policy.set_params(budget=3.0, input_type="proba") is policy
    assert policy.get_params()["budget"] == 3.0 and policy.input_type == "proba"
    with pytest.raises(ValueError, match="Invalid parameter"):
        policy.set_params(not_a_parameter=1)

    cloned = clone(policy)
    assert cloned is not policy
    assert_array_equal(cloned.costs, costs)
    assert {k: v for k, v in cloned.get_params().items() if k != "costs"} == {
        k: v for k, v in policy.get_params().items() if k != "costs"
    }


def test_eenet_params_round_trip(make_eenet: Callable[..., EarlyExitPolicy]) -> None:
    policy = make_eenet(confidence=("margin",), hidden_size=5, lr=0.1, n_restarts=2)
    params = policy.get_params()
    assert (params["confidence"], params["hidden_size"], params["lr"]) == (("margin",), 5, 0.1)
    policy.set_params(hidden_size=7, temperature=2.0)
    assert clone(policy).get_params()["hidden_size"] == 7
    assert clone(policy).get_params()["temperature"] == 2.0


def test_clone_of_fitted_is_unfitted(fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    cloned = clone(fitted_eenet)
    assert not [name for name in vars(cloned) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        cloned.predict(mnist.X_test)
    check_is_fitted(fitted_eenet)  # the original stays fitted


@pytest.mark.parametrize("policy_class", ALL_POLICIES)
@pytest.mark.parametrize(
    "method", ["predict", "predict_exit", "predict_proba", "exit_scores", "expected_cost", "score"]
)
def test_unfitted_raises_not_fitted(policy_class: type, method: str, mnist: Bunch) -> None:
    policy = policy_class(costs=mnist.costs, budget=mnist.costs[1])
    args = (mnist.X_test, mnist.y_test) if method == "score" else (mnist.X_test,)
    with pytest.raises(NotFittedError):
        getattr(policy, method)(*args)


def test_failed_fit_leaves_policy_unfitted(make_eenet: Callable, mnist: Bunch) -> None:
    # Bad hyperparameters must be caught before fit sets any fitted attribute.
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1], hidden_size=0)
    with pytest.raises(ValueError, match="hidden_size"):
        policy.fit(mnist.X, mnist.y)
    with pytest.raises(NotFittedError):
        policy.predict(mnist.X_test)


def test_html_repr_names_the_policy(make_eenet: Callable, mnist: Bunch) -> None:
    assert "EarlyExitPolicy" in make_eenet(costs=mnist.costs, budget=0.03)._repr_html_()


# --- composition with Pipeline and model selection -------------------------------------------
def _flatten(X: np.ndarray) -> np.ndarray:
    """(n, K, C) -> (n, K * C): a module-level function so that the pipeline pickles."""
    return np.asarray(X).reshape(len(X), -1)


def test_pipeline_fits_and_predicts(make_eenet: Callable, mnist: Bunch) -> None:
    pipe = make_pipeline(
        FunctionTransformer(_flatten), make_eenet(costs=mnist.costs, budget=mnist.costs[1])
    )
    assert pipe.fit(mnist.X, mnist.y) is pipe
    exits = pipe[-1].predict_exit(_flatten(mnist.X_test))
    # The label is the argmax of the logits of the exit the sample leaves at.
    expected = mnist.X_test[np.arange(len(exits)), exits].argmax(axis=1)
    assert_array_equal(pipe.predict(mnist.X_test), expected)
    assert pipe.score(mnist.X_test, mnist.y_test) == pytest.approx(
        np.mean(expected == mnist.y_test)
    )
    assert_array_equal(pickle.loads(pickle.dumps(pipe)).predict(mnist.X_test), expected)


def test_grid_search_over_budget_refits_best(make_eenet: Callable, mnist: Bunch) -> None:
    costs = mnist.costs
    search = GridSearchCV(
        make_eenet(costs=costs), {"budget": [costs[0], costs[-1]]}, cv=2, error_score="raise"
    )
    search.fit(mnist.X, mnist.y)

    # At the first exit's cost every sample leaves at exit 0, at the last exit's cost at
    # the last exit: the fold scores are those exits' accuracies, computed here directly.
    folds = StratifiedKFold(n_splits=2).split(mnist.X, mnist.y)
    accuracy = np.array(
        [[np.mean(mnist.X[test, k].argmax(axis=1) == mnist.y[test]) for k in (0, -1)]
         for _, test in folds]
    )
    assert_allclose(search.cv_results_["mean_test_score"], accuracy.mean(axis=0))
    # The last exit is the more accurate one on this network, so the largest budget wins.
    assert search.best_params_ == {"budget": costs[-1]}

    best = search.best_estimator_
    check_is_fitted(best)
    assert best.budget_ == costs[-1] and best.get_params()["budget"] == costs[-1]
    assert_array_equal(best.predict_exit(mnist.X_test), np.full(len(mnist.X_test), 2))
    # Refit on every row: the fitted exit fractions count len(X) samples.
    assert_allclose(best.exit_fractions_ * len(mnist.X), [0, 0, len(mnist.X)])


def _triple(X: np.ndarray) -> np.ndarray:
    """Logits times 3: sharper probabilities, so decisions differ from the raw logits'."""
    return np.asarray(X) * 3.0


def _by_hand(policy, X: np.ndarray, y: np.ndarray, penalty: float) -> float:
    """The cost-aware score from the policy's own predictions, without the scorer."""
    exits = policy.predict_exit(X)
    accuracy = np.mean(policy.predict(X) == y)
    overspend = policy.costs_[exits].mean() / policy.budget_ - 1.0
    return accuracy - penalty * max(overspend, 0.0)


@pytest.mark.parametrize("first_step", [FunctionTransformer(), FunctionTransformer(_triple)])
def test_budget_search_over_a_pipeline_ending_in_a_policy(first_step, mnist: Bunch) -> None:
    """The set-up the user guide recommends, with the policy as a Pipeline's last step."""
    costs = mnist.costs
    budgets = [costs[0], 0.5 * (costs[0] + costs[1]), costs[1], costs[-1]]
    pipe = Pipeline([("identity", first_step), ("policy", MaxProbPolicy(costs=costs))])
    search = GridSearchCV(
        pipe,
        {"policy__budget": budgets},
        cv=StratifiedKFold(2),
        scoring=make_cost_aware_scorer(penalty=2.0),
        refit=smallest_budget_within(0.005, param="policy__budget"),
        error_score="raise",
    )
    search.fit(mnist.X, mnist.y)

    # Each candidate's fold scores, computed from policies fitted by hand on the
    # transformed logits: the scorer must transform X and read the last step.
    transform = first_step.func or (lambda X: X)
    expected = np.zeros(len(budgets))
    for train, test in StratifiedKFold(2).split(mnist.X, mnist.y):
        for i, budget in enumerate(budgets):
            policy = MaxProbPolicy(costs=costs, budget=budget)
            policy.fit(transform(mnist.X[train]), mnist.y[train])
            expected[i] += _by_hand(policy, transform(mnist.X[test]), mnist.y[test], 2.0) / 2
    scores = search.cv_results_["mean_test_score"]
    assert not np.isnan(scores).any()
    assert_allclose(scores, expected)
    # The refit picks the smallest budget scoring within 0.005 of the best.
    chosen = min(b for b, score in zip(budgets, expected, strict=True) if score >= expected.max() - 0.005)
    assert search.best_params_ == {"policy__budget": chosen}
    best = search.best_estimator_
    assert isinstance(best, Pipeline) and best[-1].budget_ == chosen
    # Scoring the refitted pipeline equals scoring its policy on transformed logits.
    scorer = make_cost_aware_scorer(penalty=2.0)
    assert scorer(best, mnist.X_test, mnist.y_test) == pytest.approx(
        _by_hand(best[-1], transform(mnist.X_test), mnist.y_test, 2.0)
    )
    # The same search with the bare policy scores the same (with the identity step).
    if first_step.func is None:
        bare = GridSearchCV(
            MaxProbPolicy(costs=costs), {"budget": budgets}, cv=StratifiedKFold(2),
            scoring=make_cost_aware_scorer(penalty=2.0), refit=smallest_budget_within(0.005),
        ).fit(mnist.X, mnist.y)
        assert_allclose(bare.cv_results_["mean_test_score"], scores)
        assert bare.best_params_ == {"budget": chosen}


def test_cost_aware_scorer_names_what_it_cannot_score(mnist: Bunch) -> None:
    not_a_policy = DummyClassifier().fit(mnist.X[:, 0], mnist.y)
    with pytest.raises(TypeError, match=r"an exit policy .* or a Pipeline ending in one, got DummyClass"):
        make_cost_aware_scorer()(not_a_policy, mnist.X[:, 0], mnist.y)
    with pytest.raises(NotFittedError):
        make_cost_aware_scorer()(make_pipeline(MaxProbPolicy(costs=mnist.costs)), mnist.X, mnist.y)


def test_refit_names_the_pipeline_budget_parameter() -> None:
    results = {"param_policy__budget": [1.0, 2.0], "mean_test_score": [0.5, 0.6]}
    with pytest.raises(ValueError, match=r"no 'param_budget'.*'policy__budget': pass param=\.\.\."):
        smallest_budget_within(0.01)(results)
    failed = {"param_budget": [1.0, 2.0], "mean_test_score": [np.nan, np.nan]}
    with pytest.raises(ValueError, match="error_score='raise'"):
        smallest_budget_within(0.01)(failed)


def test_fit_time_budget_in_a_grid_search_warns(mnist: Bunch) -> None:
    """A fit-time budget overrides every candidate: all score the same, and a warning says so."""
    costs = mnist.costs
    search = GridSearchCV(MaxProbPolicy(costs=costs), {"budget": [costs[0], costs[-1]]}, cv=2)
    with pytest.warns(FitParameterOverrideWarning, match="In a GridSearchCV over budget"):
        search.fit(mnist.X, mnist.y, budget=float(costs[1]))
    # Exit 0 and the last exit differ in accuracy, yet both candidates score alike.
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] == scores[1]
    assert search.best_estimator_.budget_ == costs[1]


def test_no_override_warning_when_nothing_is_overridden(mnist: Bunch) -> None:
    costs, budget = mnist.costs, mnist.costs[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitParameterOverrideWarning)
        MaxProbPolicy().fit(mnist.X, mnist.y, costs=costs, budget=budget)  # nothing set
        MaxProbPolicy(costs=costs, budget=budget).fit(mnist.X, mnist.y)  # nothing at fit
        # The same values, in other containers and types.
        MaxProbPolicy(costs=costs, budget=budget).fit(
            mnist.X, mnist.y, costs=list(costs), budget=np.float64(budget)
        )
        GridSearchCV(MaxProbPolicy(), {"budget": [costs[0], costs[-1]]}, cv=2).fit(
            mnist.X, mnist.y, costs=costs
        )


def _neg_expected_cost(estimator: EarlyExitPolicy, X: np.ndarray, y: np.ndarray) -> float:
    return -estimator.expected_cost(X)


def test_cross_val_score_meets_budget_on_held_out_folds(
    make_eenet: Callable, mnist: Bunch
) -> None:
    budget = mnist.costs[1]
    policy = make_eenet(costs=mnist.costs, budget=budget)
    accuracy = cross_val_score(policy, mnist.X, mnist.y, cv=2, error_score="raise")
    # Far above chance (0.1) and no better than perfect.
    assert accuracy.shape == (2,) and np.all((accuracy > 0.6) & (accuracy <= 1.0))
    cost = -cross_val_score(
        policy, mnist.X, mnist.y, cv=2, scoring=_neg_expected_cost, error_score="raise"
    )
    # Thresholds set on one half meet the budget on the other, up to sampling noise.
    assert np.all(cost <= budget * 1.03)
    assert np.all(cost > mnist.costs[0])


# --- what the excluded common checks test, on real per-exit logits ----------------------------
def test_fit_is_deterministic(make_eenet: Callable, mnist: Bunch) -> None:
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1])
    assert policy.fit(mnist.X, mnist.y) is policy
    check_is_fitted(policy)
    first = (policy.thresholds_.copy(), policy.exit_scores(mnist.X_test))
    policy.fit(mnist.X, mnist.y)
    assert_array_equal(policy.thresholds_, first[0])
    assert_array_equal(policy.exit_scores(mnist.X_test), first[1])
    # The seed is really used: another one trains another scorer.
    other = clone(policy).set_params(random_state=1).fit(mnist.X, mnist.y)
    assert not np.array_equal(other.exit_scores(mnist.X_test), first[1])


def test_fit_keeps_params(make_eenet: Callable, mnist: Bunch) -> None:
    policy = make_eenet(costs=np.array(mnist.costs), budget=mnist.costs[1])
    before = joblib.hash(policy.get_params())
    public_before = {name for name in vars(policy) if not name.startswith("_")}
    policy.fit(mnist.X, mnist.y)
    assert joblib.hash(policy.get_params()) == before
    added = {name for name in vars(policy) if not name.startswith("_")} - public_before
    assert added and all(name.endswith("_") for name in added)


def test_prediction_keeps_state(fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    before = joblib.hash(fitted_eenet.__dict__)
    for method in ("predict", "predict_exit", "predict_proba", "exit_scores", "expected_cost"):
        getattr(fitted_eenet, method)(mnist.X_test)
    fitted_eenet.score(mnist.X_test, mnist.y_test)
    assert joblib.hash(fitted_eenet.__dict__) == before


def test_order_and_batching(
    fitted_eenet: EarlyExitPolicy, mnist: Bunch, monkeypatch: pytest.MonkeyPatch
) -> None:
    X = mnist.X_test
    exits, scores = fitted_eenet.predict_exit(X), fitted_eenet.exit_scores(X)
    order = np.random.RandomState(0).permutation(len(X))
    assert_array_equal(fitted_eenet.predict_exit(X[order]), exits[order])
    assert_allclose(fitted_eenet.exit_scores(X[order]), scores[order], rtol=1e-6)
    batches = np.array_split(np.arange(len(X)), 7)
    assert_array_equal(np.concatenate([fitted_eenet.predict_exit(X[b]) for b in batches]), exits)
    # Chunked prediction inside the policy gives the same answers as one chunk.
    monkeypatch.setattr(eenet_sklearn.base, "_CHUNK_SIZE", 300)
    assert_array_equal(fitted_eenet.predict_exit(X), exits)
    assert_allclose(fitted_eenet.exit_scores(X), scores, rtol=1e-6)


def test_input_containers(
    fitted_eenet: EarlyExitPolicy, mnist: Bunch, tmp_path, make_eenet: Callable
) -> None:
    # Fitting on a read-only memmap gives the session policy's thresholds exactly.
    path = tmp_path / "logits.npy"
    np.save(path, mnist.X)
    memmap = np.load(path, mmap_mode="r")
    refit = make_eenet(costs=mnist.costs, budget=mnist.costs[1]).fit(memmap, mnist.y)
    assert_array_equal(refit.thresholds_, fitted_eenet.thresholds_)

    rows = mnist.X_test[:300]
    expected = fitted_eenet.predict_exit(rows)
    for container in (
        rows.tolist(),
        rows.astype(object),
        np.asfortranarray(rows),
        _flatten(rows).tolist(),
    ):
        assert_array_equal(fitted_eenet.predict_exit(container), expected)
    # float64 logits work; rounding may move the rare sample sitting on a threshold.
    agree = fitted_eenet.predict_exit(rows.astype(np.float64)) == expected
    assert agree.mean() >= 0.99


def test_column_vector_y(fitted_eenet: EarlyExitPolicy, mnist: Bunch, make_eenet: Callable):
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1])
    with pytest.warns(DataConversionWarning):
        policy.fit(mnist.X, mnist.y[:, None])
    assert_array_equal(policy.thresholds_, fitted_eenet.thresholds_)


def test_n_features_in(fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    n_exits, n_classes = mnist.X.shape[1:]
    assert fitted_eenet.n_features_in_ == n_exits * n_classes == _flatten(mnist.X).shape[1]
    assert (fitted_eenet.n_exits_, fitted_eenet.n_classes_) == (n_exits, n_classes)
    assert_array_equal(fitted_eenet.classes_, np.arange(n_classes))


def test_predictions_are_consistent(fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    X = mnist.X_test
    exits = fitted_eenet.predict_exit(X)
    assert exits.shape == (len(X),) and set(np.unique(exits)) <= {0, 1, 2}
    proba = fitted_eenet.predict_proba(X)
    # The probabilities are the softmax of the logits at each sample's exit.
    assert_allclose(proba, softmax(X[np.arange(len(X)), exits], axis=1), rtol=1e-5, atol=1e-7)
    assert_array_equal(fitted_eenet.predict(X), fitted_eenet.classes_[proba.argmax(axis=1)])
    assert fitted_eenet.exit_scores(X).shape == (len(X), 3)
    assert fitted_eenet.expected_cost(X) == pytest.approx(mnist.costs[exits].mean())
    assert fitted_eenet.score(X, mnist.y_test) > 0.6  # chance is 0.1

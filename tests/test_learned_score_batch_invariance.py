"""LearnedScorePolicy scores each row from that row alone: with its default classifier, a
sample's score, exit and probabilities do not depend on the other rows of the call."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from eenet_sklearn import AnytimeEnsemble, LearnedScorePolicy
from eenet_sklearn._baselines import _positive_proba, _score_form
from eenet_sklearn._decider import one_thread, row_product
from eenet_sklearn._features import exit_log_proba_and_proba
from eenet_sklearn.datasets import load_exit_logits
from eenet_sklearn.metrics import budget_at_position

N_FIT = 3000

#: The reviewer's row (fashion_cnn4, fitted on the first 3000 val samples at budget
#: position 0.4): its exit-0 score lay an ulp from the threshold, and the classifier's BLAS
#: product put it above alone (exit 0, label 9) and below as the first of 101 rows (exit 2).
REVIEWERS_ROW = [
    [-3.9088257652027547, -4.901025106867056, -1.7842936975865993, -1.8596749099903143,
     -0.5083671091852309, -0.4011899089704678, -1.1951998158555666, -0.4790190978043465,
     0.3573767779713948, 2.9349623630091113],
    [-1.142041563987732, -6.24500846862793, 1.6252912282943726, -2.4321393966674805,
     0.13205544650554657, -7.108235836029053, 0.431070476770401, -6.867985725402832,
     -0.5714601874351501, -5.202301979064941],
    [-1.4333808422088623, -7.199456691741943, 5.237977027893066, -4.15342903137207,
     -0.5820373892784119, -9.15697193145752, 0.6723173260688782, -8.220918655395508,
     -2.9675369262695312, -7.710887908935547],
    [-0.5943800806999207, -9.504903793334961, 7.4356608390808105, -4.497242450714111,
     -0.3919876217842102, -10.06380844116211, 1.795737624168396, -8.341474533081055,
     -3.3122284412384033, -8.04534912109375],
]  # fmt: skip


@pytest.fixture(scope="module")
def fashion():
    return load_exit_logits("fashion_cnn4")


@pytest.fixture(scope="module")
def fitted(fashion):
    """LearnedScorePolicy and AnytimeEnsemble(LearnedScorePolicy()), fitted as the reviewer did."""
    costs, budget = fashion.costs, budget_at_position(fashion.costs, 0.4)
    X, y = fashion.val_logits[:N_FIT], fashion.val_labels[:N_FIT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence on unscaled features
        learned = LearnedScorePolicy(costs=costs, budget=budget).fit(X, y)
        anytime = AnytimeEnsemble(LearnedScorePolicy(), costs=costs, budget=budget).fit(X, y)
    return {"learned": learned, "anytime": anytime}


def _everything(policy, X) -> tuple[np.ndarray, ...]:
    return policy.exit_scores(X), policy.predict_exit(X), policy.predict(X), policy.predict_proba(X)


@pytest.mark.parametrize("name", ["learned", "anytime"])
def test_single_rows_and_subsets_give_the_full_call_bit_for_bit(fashion, fitted, name) -> None:
    policy = fitted[name]
    X = np.concatenate([fashion.val_logits[:N_FIT], fashion.test_logits[:2000]])
    full = _everything(policy, X)
    rng = np.random.default_rng(0)
    # The rows scored nearest each threshold, where an ulp decides, and random ones.
    scores = full[0]
    nearest = [np.argsort(np.abs(scores[:, k] - t))[:10] for k, t in enumerate(policy.thresholds_[:-1])]
    for row in np.concatenate([*nearest, rng.choice(len(X), 40, replace=False)]):
        for got, expected in zip(_everything(policy, X[row : row + 1]), full, strict=True):
            assert_array_equal(got[0], expected[row], err_msg=f"{name}, row {row}")
    for size in (3, 101, 1000):
        subset = rng.choice(len(X), size, replace=False)
        for got, expected in zip(_everything(policy, X[subset]), full, strict=True):
            assert_array_equal(got, expected[subset], err_msg=f"{name}, {size} rows")


def test_the_reviewers_row_leaves_where_it_leaves_in_any_call(fashion, fitted) -> None:
    policy = fitted["learned"]
    x = np.array([REVIEWERS_ROW])
    batch = np.concatenate([x, fashion.test_logits[:100].astype(np.float64)])
    for alone, in_batch in zip(_everything(policy, x), _everything(policy, batch), strict=True):
        assert_array_equal(alone[0], in_batch[0])
    decider = policy.exit_decider()
    alone = decider.decide(0, x[:, 0], decider.initial_state(1))
    in_batch = decider.decide(0, batch[:, 0], decider.initial_state(len(batch)))
    assert alone[0][0] == in_batch[0][0]
    assert_array_equal(alone[2]["scores"][0], in_batch[2]["scores"][0])


def _classifier_inputs(policy, X) -> list[np.ndarray]:
    """What each exit's classifier reads of ``X`` at prediction (with the scores exit_scores gives)."""
    scores = policy.exit_scores(X)
    log_proba, proba = exit_log_proba_and_proba(np.asarray(X, dtype=np.float64), "logits")
    state = policy._step_initial_state(len(X))
    inputs = []
    for k in range(policy.n_exits_):
        exit_inputs, state = policy._step_inputs(k, log_proba[:, k], proba[:, k], state)
        state["scores"][:, k] = scores[:, k]
        inputs.append(exit_inputs)
    return inputs


def test_scores_are_logistic_regressions_predict_proba(fashion, fitted) -> None:
    # The library's expit of a row product: scikit-learn's predict_proba to float precision.
    policy = fitted["learned"]
    X = fashion.test_logits[:2000]
    scores = policy.exit_scores(X)
    for k, inputs in enumerate(_classifier_inputs(policy, X)):
        estimator = policy.estimators_[k]
        assert type(estimator) is LogisticRegression
        assert_allclose(scores[:, k], estimator.predict_proba(inputs)[:, 1], rtol=1e-13, atol=1e-15)


def test_fitting_feeds_later_exits_the_scores_prediction_gives(fashion, monkeypatch) -> None:
    # Each classifier is fitted on the earlier exits' scores as exit_scores gives them, bit for bit.
    seen: list[np.ndarray] = []
    fit = LogisticRegression.fit

    def recording_fit(self, X, y, sample_weight=None):
        seen.append(np.array(X))
        return fit(self, X, y, sample_weight)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    X, y = fashion.val_logits[:N_FIT], fashion.val_labels[:N_FIT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = LearnedScorePolicy(costs=fashion.costs, budget=budget_at_position(fashion.costs, 0.4))
        policy.fit(X, y)
    scores = policy.exit_scores(X)
    assert len(seen) == policy.n_exits_
    for k, inputs in enumerate(seen):
        assert_array_equal(inputs[:, inputs.shape[1] - k :], scores[:, :k])


def test_a_constant_exit_scores_its_prior_and_other_classifiers_their_predict_proba() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=400)
    X = rng.normal(size=(400, 3, 3))
    X[np.arange(400), 2, y] += 20.0  # the last exit is always right: a DummyClassifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = LearnedScorePolicy(costs=[1.0, 2.0, 3.0], budget=2.0).fit(X, y)
        other = LearnedScorePolicy(costs=[1.0, 2.0, 3.0], budget=2.0, estimator=GaussianNB()).fit(X, y)
    assert type(policy.estimators_[2]) is DummyClassifier
    assert_array_equal(policy.exit_scores(X)[:, 2], 1.0)
    assert_array_equal(policy.exit_scores(X[:1])[0], policy.exit_scores(X)[0])
    # Another classifier is asked for its own probabilities.
    gaussian = other.estimators_[0]
    assert _score_form(gaussian) is gaussian
    inputs = _classifier_inputs(other, X)[0]
    assert_allclose(other.exit_scores(X)[:, 0], gaussian.predict_proba(inputs)[:, 1], rtol=1e-12)


def test_a_subclass_of_logistic_regression_is_asked_for_its_predict_proba() -> None:
    class Tempered(LogisticRegression):
        def predict_proba(self, X):
            return super().predict_proba(X) ** 2  # not expit of the decision value

    X = np.random.default_rng(0).normal(size=(50, 4))
    target = (X[:, 0] > 0).astype(np.int64)
    tempered = Tempered().fit(X, target)
    assert _score_form(tempered) is tempered
    assert_array_equal(_positive_proba(tempered, X), tempered.predict_proba(X)[:, 1])
    plain = LogisticRegression().fit(X, target)
    assert_allclose(_positive_proba(_score_form(plain), X), plain.predict_proba(X)[:, 1], rtol=1e-13)


@pytest.mark.parametrize("limit", ["default", "one thread"])
def test_a_weight_column_product_is_computed_per_row_as_alone(limit) -> None:
    # What the logistic regressions' decision values rest on: row_product with a
    # (n_inputs, 1) column, a BLAS matrix-vector product, at every row count.
    rng = np.random.default_rng(0)
    for n_inputs in (13, 16, 40):
        X = rng.normal(size=(3100, n_inputs)) * 10.0 ** rng.uniform(-3, 3, size=(3100, n_inputs))
        column = rng.normal(size=(n_inputs, 1))
        alone = np.array([row_product(row[None], column)[0, 0] for row in X[:300]])
        with one_thread() if limit == "one thread" else warnings.catch_warnings():
            for n_rows in (*range(1, 20), 257, 1000, 1025, 3001):
                for start in (0, 3):
                    stop = min(n_rows, 300 - start)
                    got = row_product(X[start : start + n_rows], column)[:stop, 0]
                    assert_array_equal(got, alone[start : start + stop], err_msg=f"{n_rows} rows")

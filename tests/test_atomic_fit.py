"""Fitting is atomic: a fit that fails or is interrupted part-way leaves the policy as it was.

Failures are real, not mocked: a warning turned into an error where a policy raises it
after its scores or scorer are fitted, a scikit-learn classifier that fails on the third
exit, and a real Ctrl-C (``_thread.interrupt_main``) during an ``EarlyExitPolicy`` fit,
which must abort the fit rather than return a half-trained scorer.
"""

from __future__ import annotations

import _thread
import threading
import time
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._features import n_features
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import make_exit_logits

COSTS = np.array([1.0, 2.0, 3.0, 4.0])
CLASSES = np.arange(10)  # small subsets may miss a class
X, Y = make_exit_logits(1200, 4, 10, random_state=3)
X_TEST = make_exit_logits(300, 4, 10, random_state=4)[0]
#: A small, fast scorer (as tests/conftest.py's make_eenet).
FAST_EENET = {"max_epochs": 2, "hidden_size": 8, "random_state": 0, "device": "cpu"}


def policies() -> dict[str, tuple]:
    """Per policy: an unfitted instance, and a refit that raises part-way (parameters, rows, warning).

    The quota rules raise ``SmallFittingSetWarning`` (as an error) from their thresholds,
    after their scores, classifiers or scorer are fitted; ``PatiencePolicy`` and
    ``FixedExitPolicy`` raise their over-budget warning after choosing their setting.
    """
    small = (slice(0, 40), SmallFittingSetWarning)
    return {
        "maxprob": (MaxProbPolicy(COSTS, 2.5, classes=CLASSES), {"budget": 2.0}, *small),
        "entropy": (EntropyPolicy(COSTS, 2.5, classes=CLASSES), {"budget": 2.0}, *small),
        "learned": (LearnedScorePolicy(COSTS, 2.5, classes=CLASSES), {"budget": 2.0}, *small),
        "eenet": (EarlyExitPolicy(COSTS, 2.5, classes=CLASSES, **FAST_EENET), {"budget": 2.0}, *small),
        "patience": (
            PatiencePolicy(COSTS, 2.5, classes=CLASSES),
            {"budget": 2.0, "patience": 1, "min_exit": 3},
            slice(0, 600),
            UserWarning,
        ),
        "fixed": (
            FixedExitPolicy(COSTS, 2.5, classes=CLASSES),
            {"budget": 2.0, "exit": 3},
            slice(0, 600),
            UserWarning,
        ),
    }


def snapshot(policy) -> tuple[dict, dict]:
    """The attribute dictionary (the objects themselves) and deep copies of its arrays."""
    state = dict(vars(policy))
    arrays = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
    return state, arrays


def assert_unchanged(policy, before: tuple[dict, dict], decisions: tuple) -> None:
    """Same attributes, holding the same objects with the same contents; same decisions."""
    state, arrays = before
    assert set(vars(policy)) == set(state)
    for name, value in state.items():
        assert vars(policy)[name] is value, name
    for name, value in arrays.items():
        assert_array_equal(vars(policy)[name], value, err_msg=name)
    exits, proba = decisions
    assert_array_equal(policy.predict_exit(X_TEST), exits)
    assert_array_equal(policy.predict_proba(X_TEST), proba)


def fit_quietly(policy, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return policy.fit(X, y)


@pytest.mark.parametrize("name", list(policies()))
def test_failed_refit_keeps_the_previous_fit(name):
    policy, params, rows, warning = policies()[name]
    fit_quietly(policy, X, Y)
    before = snapshot(policy)
    decisions = (policy.predict_exit(X_TEST), policy.predict_proba(X_TEST))
    policy.set_params(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", warning)
        with pytest.raises(warning):
            policy.fit(X[rows], Y[rows])
    policy.set_params(**{k: before[0][k] for k in params})
    assert_unchanged(policy, before, decisions)
    # The policy still refits, and the refit is the one a fresh policy gets.
    fit_quietly(policy.set_params(**params), X, Y)
    fresh = fit_quietly(policies()[name][0].set_params(**params), X, Y)
    assert_array_equal(policy.predict_exit(X_TEST), fresh.predict_exit(X_TEST))
    assert_array_equal(policy.thresholds_, fresh.thresholds_)


@pytest.mark.parametrize("name", list(policies()))
def test_failed_first_fit_leaves_the_policy_unfitted(name):
    policy, params, rows, warning = policies()[name]
    policy.set_params(**params)
    parameters = policy.get_params(deep=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", warning)
        with pytest.raises(warning):
            policy.fit(X[rows], Y[rows])
    with pytest.raises(NotFittedError):
        check_is_fitted(policy)
    with pytest.raises(NotFittedError):
        policy.predict_exit(X_TEST)
    # Nothing but the parameters, as after construction.
    assert set(vars(policy)) == set(parameters)


class FailsOnWideInputs(LogisticRegression):
    """A logistic regression whose ``fit`` raises on inputs of ``n_columns`` or more columns.

    ``LearnedScorePolicy`` gives exit ``k``'s classifier the exit's features and the
    scores of the ``k`` exits before it, so this fails from a chosen exit on.
    """

    def __init__(self, n_columns=1, error=RuntimeError, max_iter=1000):
        super().__init__(max_iter=max_iter)
        self.n_columns = n_columns
        self.error = error

    def fit(self, X, y, sample_weight=None):
        if X.shape[1] >= self.n_columns:
            raise self.error(f"refusing {X.shape[1]} columns")
        return super().fit(X, y, sample_weight)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_learned_score_policy_failing_at_exit_2_of_4(error):
    # The third classifier (exit 2) reads the exit's features and two earlier scores.
    policy = fit_quietly(LearnedScorePolicy(COSTS, 2.5, classes=CLASSES), X, Y)
    before = snapshot(policy)
    decisions = (policy.predict_exit(X_TEST), policy.predict_proba(X_TEST))
    width = n_features(10, ("max_prob", "entropy", "voting"), True)
    failing = FailsOnWideInputs(n_columns=width + 2, error=error)
    with pytest.raises(error, match="refusing"):
        policy.set_params(estimator=failing).fit(X[:600], Y[:600])
    policy.set_params(estimator=None)
    assert_unchanged(policy, before, decisions)
    # Scores are the previous classifiers' probabilities, not uninitialised memory.
    scores = policy.exit_scores(X_TEST)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    # A classifier that fails at exit 3 of 4 on a policy never fitted leaves it unfitted.
    fresh = LearnedScorePolicy(COSTS, 2.5, estimator=FailsOnWideInputs(n_columns=width + 3, error=error))
    with pytest.raises(error, match="refusing"):
        fresh.fit(X, Y)
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)


def interrupted_fit(policy, X, y, after_s: float) -> pytest.ExceptionInfo:
    """Fit with a real Ctrl-C (SIGINT's ``KeyboardInterrupt`` in this thread) after ``after_s``."""
    timer = threading.Timer(after_s, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as excinfo:
            policy.fit(X, y)
    finally:
        timer.cancel()
    # Aborted at once: the fit asked for would take minutes.
    assert time.perf_counter() - start < after_s + 20.0
    return excinfo


# Thousands of epochs (and no step budget): minutes of training unless interrupted.
LONG_TRAINING = {"max_epochs": 100_000, "max_steps": None}


def test_ctrl_c_aborts_an_eenet_fit_and_keeps_the_previous_fit():
    policy = fit_quietly(EarlyExitPolicy(COSTS, 2.5, classes=CLASSES, **FAST_EENET), X, Y)
    before = snapshot(policy)
    decisions = (policy.predict_exit(X_TEST), policy.predict_proba(X_TEST))
    policy.set_params(budget=2.0, **LONG_TRAINING)
    excinfo = interrupted_fit(policy, X[:600], Y[:600], after_s=1.0)
    # It landed in the scorer's training, where skorch's partial_fit would swallow it.
    assert "fit_loop" in [entry.name for entry in excinfo.traceback]
    policy.set_params(budget=2.5, max_epochs=FAST_EENET["max_epochs"], max_steps=before[0]["max_steps"])
    assert_unchanged(policy, before, decisions)


def test_ctrl_c_leaves_a_never_fitted_eenet_unfitted():
    policy = EarlyExitPolicy(COSTS, 2.0, classes=CLASSES, **{**FAST_EENET, **LONG_TRAINING})
    excinfo = interrupted_fit(policy, X[:600], Y[:600], after_s=1.0)
    assert "fit_loop" in [entry.name for entry in excinfo.traceback]
    with pytest.raises(NotFittedError):
        policy.predict_exit(X_TEST)
    assert set(vars(policy)) == set(policy.get_params(deep=False))

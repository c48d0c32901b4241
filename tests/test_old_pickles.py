"""EarlyExitPolicy objects pickled before a parameter existed still load, predict and refit."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from eenet_sklearn import EarlyExitPolicy, load_policy, save_policy
from eenet_sklearn.datasets import make_exit_logits

X, Y = make_exit_logits(700, n_exits=3, n_classes=4, random_state=0)
COSTS = [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def policy() -> EarlyExitPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting set
        return EarlyExitPolicy(
            COSTS, 2.0, max_epochs=1, max_steps=123, hidden_size=8, random_state=0, device="cpu"
        ).fit(X[:500], Y[:500])


def _pickled_without(policy: EarlyExitPolicy, *names: str) -> bytes:
    """The pickle an older version wrote: the same policy, without the newer parameters."""
    old = pickle.loads(pickle.dumps(policy))
    for name in names:
        delattr(old, name)
    data = pickle.dumps(old)
    for name in names:
        assert name.encode() not in data
    return data


def test_a_policy_pickled_before_max_steps_predicts_and_refits_as_before(policy, tmp_path) -> None:
    loaded = pickle.loads(_pickled_without(policy, "max_steps", "spend_less"))
    np.testing.assert_array_equal(loaded.predict_exit(X[500:]), policy.predict_exit(X[500:]))
    np.testing.assert_array_equal(loaded.predict_proba(X[500:]), policy.predict_proba(X[500:]))
    # The values that reproduce how such a policy was fitted: no step budget, the whole
    # budget spent.
    params = loaded.get_params()
    assert params["max_steps"] is None and params["spend_less"] is False
    assert "max_steps=None" in repr(loaded)
    assert clone(loaded).get_params() == params
    save_policy(loaded, tmp_path / "old.npz")
    reloaded = load_policy(tmp_path / "old.npz")
    np.testing.assert_array_equal(reloaded.predict_exit(X[500:]), policy.predict_exit(X[500:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting set
        refitted = clone(loaded).fit(X[:500], Y[:500])
    assert refitted.max_steps is None and refitted.target_cost_ == refitted.budget_


def test_a_current_pickle_keeps_its_parameters(policy) -> None:
    loaded = pickle.loads(pickle.dumps(policy))
    assert loaded.get_params()["max_steps"] == 123 and loaded.get_params()["spend_less"] is True

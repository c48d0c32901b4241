"""Persistence: pickle / joblib round trips, CPU-only fitted state, flattened input."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.utils import Bunch

from eenet_sklearn import EarlyExitPolicy, MaxProbPolicy
from eenet_sklearn.base import BaseExitPolicy

METHODS = ("predict_exit", "predict", "predict_proba", "exit_scores")


@pytest.fixture(scope="module")
def auto_eenet(make_eenet: Callable, mnist: Bunch) -> EarlyExitPolicy:
    """Fitted with device="auto": on a GPU machine it trains on CUDA and sorts with CuPy."""
    return make_eenet(costs=mnist.costs, budget=mnist.costs[1], device="auto").fit(
        mnist.X, mnist.y
    )


@pytest.fixture(scope="module")
def fitted_policies(auto_eenet: EarlyExitPolicy, mnist: Bunch) -> dict[str, BaseExitPolicy]:
    maxprob = MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(mnist.X, mnist.y)
    return {"eenet": auto_eenet, "maxprob": maxprob}


def _pickle_round_trip(policy: BaseExitPolicy, tmp_path: Path) -> BaseExitPolicy:
    return pickle.loads(pickle.dumps(policy))


def _joblib_round_trip(policy: BaseExitPolicy, tmp_path: Path) -> BaseExitPolicy:
    joblib.dump(policy, tmp_path / "policy.joblib")
    return joblib.load(tmp_path / "policy.joblib")


@pytest.mark.parametrize("round_trip", [_pickle_round_trip, _joblib_round_trip])
@pytest.mark.parametrize("name", ["eenet", "maxprob"])
def test_round_trip_gives_identical_outputs(
    round_trip: Callable,
    name: str,
    fitted_policies: dict[str, BaseExitPolicy],
    mnist: Bunch,
    tmp_path: Path,
) -> None:
    policy = fitted_policies[name]
    loaded = round_trip(policy, tmp_path)
    assert loaded is not policy and type(loaded) is type(policy)
    for method in METHODS:
        assert_array_equal(getattr(loaded, method)(mnist.X_test), getattr(policy, method)(mnist.X_test))
    assert loaded.expected_cost(mnist.X_test) == policy.expected_cost(mnist.X_test)
    for attribute in ("thresholds_", "exit_fractions_", "classes_", "costs_"):
        assert_array_equal(getattr(loaded, attribute), getattr(policy, attribute))
    assert loaded.budget_ == policy.budget_


def _walk(obj: object, seen: set[int] | None = None) -> Iterator[object]:
    """Every object reachable from ``obj`` through containers and instance attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    leaves = (str, bytes, int, float, complex, type, types.ModuleType, types.FunctionType,
              types.BuiltinFunctionType, types.MethodType, torch.Tensor)
    if obj is None or isinstance(obj, leaves):
        return
    children: list[object] = []
    if isinstance(obj, np.ndarray):
        children = list(obj.flat) if obj.dtype == object else []
    elif isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    if isinstance(obj, torch.nn.Module):
        children.append(obj.state_dict())
    if hasattr(obj, "__dict__"):
        children.append(vars(obj))
    for child in children:
        yield from _walk(child, seen)


def _is_cupy_array(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "cupy"


def test_fitted_state_is_cpu_only(auto_eenet: EarlyExitPolicy) -> None:
    scorer = auto_eenet.scorer_
    # Trimmed for prediction: no criterion or optimiser (nor their state) is kept.
    assert scorer.criterion_ is None and scorer.optimizer_ is None
    reachable = [*_walk(vars(auto_eenet)), *_walk(scorer.module_.state_dict())]
    tensors = [obj for obj in reachable if isinstance(obj, torch.Tensor)]
    # Not vacuous: the walk reaches the scorer's weights, and a tensor off the CPU
    # hidden in an attribute of an object in a list is found.
    hidden = [types.SimpleNamespace(deep={"x": torch.empty(1, device="meta")})]
    assert any(isinstance(obj, torch.Tensor) and obj.is_meta for obj in _walk(hidden))
    n_weights = len(scorer.module_.state_dict())
    assert len(tensors) >= n_weights > 0
    assert {tensor.device.type for tensor in tensors} == {"cpu"}
    assert not [obj for obj in reachable if _is_cupy_array(obj)]
    for attribute in ("thresholds_", "exit_fractions_", "classes_", "costs_"):
        assert type(getattr(auto_eenet, attribute)) is np.ndarray


def test_scorer_weights_are_pickled_once(auto_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    # The bytes of each head's first weight matrix occur once in the pickle: with the
    # scorer, and not again as the NumPy copies prediction reads.
    data = pickle.dumps(auto_eenet)
    for head in auto_eenet.scorer_.module_.heads:
        weight = head[0].weight.detach().numpy().tobytes()
        assert len(weight) >= 64 and data.count(weight) == 1
    loaded = pickle.loads(data)
    # The copies are rebuilt on loading: scores equal, bit for bit.
    assert_array_equal(loaded.exit_scores(mnist.X_test), auto_eenet.exit_scores(mnist.X_test))
    # Pickling does not drop them from the policy it pickles.
    assert_array_equal(auto_eenet.exit_scores(mnist.X_test), loaded.exit_scores(mnist.X_test))


def test_loads_and_predicts_without_cuda_or_cupy(
    auto_eenet: EarlyExitPolicy, mnist: Bunch, tmp_path: Path
) -> None:
    """The deployment story: dump where it was fitted, load where there is no GPU and no CuPy."""
    joblib.dump(auto_eenet, tmp_path / "policy.joblib")
    np.save(tmp_path / "X.npy", mnist.X_test)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cupy"] = None  # "import cupy" now fails, as where it is not installed
        import joblib, numpy as np, torch
        assert not torch.cuda.is_available()
        policy = joblib.load(sys.argv[1])
        np.save(sys.argv[3], policy.predict_exit(np.load(sys.argv[2])))
        """
    )
    subprocess.run(
        [sys.executable, "-c", script, tmp_path / "policy.joblib", tmp_path / "X.npy",
         tmp_path / "exits.npy"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=True,
        timeout=300,
    )
    assert_array_equal(np.load(tmp_path / "exits.npy"), auto_eenet.predict_exit(mnist.X_test))


def test_flattened_input_gives_the_same_policy(
    make_eenet: Callable, fitted_eenet: EarlyExitPolicy, mnist: Bunch
) -> None:
    flat = make_eenet(costs=mnist.costs, budget=mnist.costs[1]).fit(
        mnist.X.reshape(len(mnist.X), -1), mnist.y
    )
    assert (flat.n_exits_, flat.n_classes_) == (fitted_eenet.n_exits_, fitted_eenet.n_classes_)
    assert_array_equal(flat.thresholds_, fitted_eenet.thresholds_)
    flat_test = mnist.X_test.reshape(len(mnist.X_test), -1)
    for method in METHODS:
        expected = getattr(fitted_eenet, method)(mnist.X_test)
        assert_array_equal(getattr(flat, method)(flat_test), expected)
        assert_array_equal(getattr(flat, method)(mnist.X_test), expected)


def test_fits_in_threads_are_reproducible(mnist, make_eenet) -> None:
    """Seeded fits running side by side in threads give the same policy as alone."""
    budgets = [0.025, 0.03, 0.035, 0.04]

    def fit(budget: float) -> np.ndarray:
        policy = make_eenet(budget=budget, costs=mnist.costs, max_epochs=3)
        return policy.fit(mnist.X, mnist.y).thresholds_

    alone = [fit(budget) for budget in budgets]
    threaded = joblib.Parallel(n_jobs=2, backend="threading")(joblib.delayed(fit)(b) for b in budgets)
    for expected, got in zip(alone, threaded, strict=True):
        np.testing.assert_array_equal(got, expected)

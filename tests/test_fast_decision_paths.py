"""The fast paths of prediction decide as the plain arithmetic does, row by row.

Class-major per-exit values, the column-pass argmax, ``ExitDecider.keep`` through
``np.take``, EENet's last product as a matrix-vector one, and ``predict_exit`` leaving
out the probabilities it does not return.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._decider import one_thread, padded_rows, row_product
from eenet_sklearn._features import _class_argmax, _log_softmax_inplace, exit_log_proba
from eenet_sklearn.datasets import make_exit_logits

COSTS = [1.0, 2.0, 3.0, 4.0]
X, Y = make_exit_logits(1200, n_exits=4, n_classes=6, random_state=5)


@pytest.mark.parametrize("limit", ["default", "one thread"])
@pytest.mark.parametrize("n_inputs", [32, 17])
def test_a_one_column_product_computes_each_row_as_alone(limit, n_inputs) -> None:
    # EENet's last layer: (rows, hidden) @ (hidden, 1), a matrix-vector product (BLAS
    # gemv) on row_product's zero-padded row blocks.
    rng = np.random.default_rng(n_inputs)
    inputs = rng.normal(size=(3100, n_inputs)) * 10.0 ** rng.uniform(-6, 6, size=(3100, n_inputs))
    weight = rng.normal(size=(n_inputs, 1))
    alone = np.concatenate([row_product(row[None], weight)[:1] for row in inputs[:100]])
    np.testing.assert_allclose(alone, inputs[:100] @ weight, rtol=1e-10, atol=1e-300)
    with one_thread() if limit == "one thread" else warnings.catch_warnings():
        for n_rows in [*range(1, 20), 33, 257, 1025, 3001]:
            for start in (0, 3):
                got = row_product(inputs[start : start + n_rows], weight)
                assert got.shape == (padded_rows(n_rows), 1)
                stop = min(n_rows, 100 - start)
                assert_array_equal(got[:stop], alone[start : start + stop], err_msg=f"{n_rows} rows")
        whole, shifted = row_product(inputs[:3000], weight), row_product(inputs[1:3001], weight)
        assert_array_equal(whole[1:3000], shifted[:2999])


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("n_rows", [1, 5, 64, 700])
def test_the_column_pass_argmax_is_the_first_largest_value(order, n_rows) -> None:
    rng = np.random.default_rng(n_rows)
    # Few distinct values: many rows reach their largest value at several classes.
    values = np.array(rng.integers(0, 3, size=(n_rows, 7)), dtype=np.float64, order=order)
    expected = [int(np.flatnonzero(row == row.max())[0]) for row in values]
    assert_array_equal(_class_argmax(values), expected)


@pytest.mark.parametrize("n_classes", [2, 10, 64, 65, 300])
def test_class_major_exit_values_are_the_row_major_bits(n_classes) -> None:
    rng = np.random.default_rng(n_classes)
    logits = (rng.normal(size=(500, n_classes)) * 30).astype(np.float32)
    got = exit_log_proba(logits)
    assert got.flags.f_contiguous == (n_classes <= 64)
    # The same arithmetic on row-major values.
    assert_array_equal(got, _log_softmax_inplace(np.array(logits, dtype=np.float64), finite=True))
    # A single row, a strided view of (n, K, C) logits, float64 input: the same bits.
    assert_array_equal(exit_log_proba(logits[7:8]), got[7:8])
    stacked = np.stack([logits, logits[::-1]], axis=1)
    assert_array_equal(exit_log_proba(stacked[:, 0]), got)
    assert_array_equal(exit_log_proba(logits.astype(np.float64)), got)


@pytest.fixture(scope="module")
def fitted() -> dict:
    policies = {
        "maxprob": MaxProbPolicy(COSTS, 2.2),
        "entropy": EntropyPolicy(COSTS, 2.2),
        "patience": PatiencePolicy(COSTS, patience=2),
        "fixed": FixedExitPolicy(COSTS, exit=2),
        "learned": LearnedScorePolicy(COSTS, 2.2),
        "eenet": EarlyExitPolicy(COSTS, 2.2, max_epochs=2, hidden_size=8, random_state=0, device="cpu"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting set
        return {name: policy.fit(X[:800], Y[:800]) for name, policy in policies.items()}


@pytest.mark.parametrize("name", ["maxprob", "entropy", "patience", "fixed", "learned", "eenet"])
def test_exits_without_probabilities_are_the_first_threshold_reached(fitted, name) -> None:
    policy = fitted[name]
    X_test = X[800:]
    exits = policy.predict_exit(X_test)  # computes no probabilities it does not return
    # Independently: the first exit whose score reaches its threshold, from every score.
    reached = policy.exit_scores(X_test) >= policy.thresholds_
    reached[:, -1] = True
    assert_array_equal(exits, reached.argmax(axis=1))
    # And the exits that come with the probabilities (predict_proba's path).
    decider = policy.exit_decider()
    with_proba, chosen, _ = decider._run(X_test.astype(np.float64))
    assert_array_equal(with_proba, exits)
    assert chosen is not None and chosen.shape == (len(X_test), policy.n_classes_)
    assert_array_equal(chosen, policy.predict_proba(X_test))


def test_keep_checks_the_length_of_a_mask(fitted) -> None:
    decider = fitted["patience"].exit_decider()
    state = decider.initial_state(4)
    state["run"] = np.arange(4.0)
    mask = np.array([True, False, True, True])
    kept = decider.keep(state, mask)
    assert_array_equal(kept["run"], [0.0, 2.0, 3.0])
    assert_array_equal(decider.keep(state, [3, 0])["run"], [3.0, 0.0])
    with pytest.raises(IndexError, match="boolean mask of shape"):
        decider.keep(state, mask[:3])

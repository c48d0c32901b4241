"""Row-invariant arithmetic: sums over the classes (``_features._class_sum``) and EENet's
matrix product (``_decider.row_product``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import EarlyExitPolicy
from eenet_sklearn._decider import one_thread, padded_rows, row_product
from eenet_sklearn._features import _class_max, _class_sum, exit_log_proba
from eenet_sklearn.datasets import make_exit_logits

#: Row counts: single rows, every count over a few padding blocks, and large ragged ones
#: (large enough for a multi-threaded BLAS to split the product).
COUNTS = [*range(1, 41), 257, 1000, 1025, 3001]


def _inputs(n_rows: int, n_inputs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Magnitudes over twelve decades: rounding differences would show.
    return rng.normal(size=(n_rows, n_inputs)) * 10.0 ** rng.uniform(-6, 6, size=(n_rows, n_inputs))


@pytest.mark.parametrize("limit", ["default", "one thread"])
@pytest.mark.parametrize(("n_inputs", "n_outputs"), [(17, 32), (5, 8), (40, 3)])
def test_each_row_is_computed_as_alone(limit, n_inputs, n_outputs) -> None:
    X = _inputs(3100, n_inputs, seed=n_inputs)
    weight = np.random.default_rng(1).normal(size=(n_inputs, n_outputs))
    alone = np.stack([row_product(row[None], weight)[0] for row in X[:200]])
    # Independent check of the values: the product itself, to float precision.
    np.testing.assert_allclose(alone, X[:200] @ weight, rtol=1e-10, atol=1e-300)
    with one_thread() if limit == "one thread" else warnings.catch_warnings():
        for n_rows in COUNTS:
            for start in (0, 3, 5):
                got = row_product(X[start : start + n_rows], weight)
                assert got.shape == (padded_rows(n_rows), n_outputs)
                stop = min(n_rows, 200 - start)
                assert_array_equal(got[:stop], alone[start : start + stop], err_msg=f"{n_rows} rows")
            # Large calls against a differently aligned large call, beyond the first rows.
            if n_rows > 200:
                first = row_product(X[:n_rows], weight)
                shifted = row_product(X[1 : n_rows + 1], weight)
                assert_array_equal(first[1:n_rows], shifted[: n_rows - 1])


def test_padded_rows() -> None:
    assert [padded_rows(n) for n in (0, 1, 7, 8, 9, 16, 17)] == [8, 8, 8, 8, 16, 16, 24]
    X = _inputs(5, 3, seed=0)
    got = row_product(X, np.eye(3))
    assert_array_equal(got[:5], X)
    assert_array_equal(got[5:], 0.0)  # the padding rows
    assert_array_equal(X, _inputs(5, 3, seed=0))  # input left alone


def test_eenet_scores_of_single_rows_match_the_full_call_bit_for_bit() -> None:
    # Scores, not only decisions: a decision can hide an ulp that a score shows.
    X, y = make_exit_logits(1500, n_exits=4, n_classes=6, random_state=3)
    policy = EarlyExitPolicy(
        costs=[1.0, 2.0, 3.0, 4.0], budget=2.0, max_epochs=1, hidden_size=16,
        random_state=0, device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting set
        policy.fit(X[:1000], y[:1000])
    scores = policy.exit_scores(X)
    rows = np.random.default_rng(0).choice(len(X), 60, replace=False)
    for row in rows:
        assert_array_equal(policy.exit_scores(X[row : row + 1])[0], scores[row])
    for size in (3, 9, 17):
        part = policy.exit_scores(X[100 : 100 + size])
        assert_array_equal(part, scores[100 : 100 + size])
    # The incremental decider scores one row as the full call does.
    decider = policy.exit_decider()
    state = decider.initial_state(1)
    for k in range(policy.n_exits_):
        score, _, state = decider.score(k, X[rows[0] : rows[0] + 1, k], state)
        assert score[0] == scores[rows[0], k]


@pytest.mark.parametrize("n_classes", [1, 2, 3, 10, 64, 65, 1000])
def test_class_sums_add_the_classes_in_order_whatever_the_rows(n_classes) -> None:
    rng = np.random.default_rng(n_classes)
    values = rng.normal(size=(300, n_classes)) * 10.0 ** rng.uniform(-8, 8, size=(300, n_classes))
    # Independent expectation: Python floats (IEEE doubles) added left to right.
    expected = np.array([sum(map(float, row[1:]), float(row[0])) for row in values])
    assert_array_equal(_class_sum(values), expected)
    assert_array_equal(_class_max(values), values.max(axis=1))
    for rows in (slice(0, 1), slice(5, 7), slice(3, 70), slice(None, None, -1)):
        assert_array_equal(_class_sum(values[rows]), expected[rows])
    # Any layout and leading shape: Fortran order, a 3-D block.
    assert_array_equal(_class_sum(np.asfortranarray(values)), expected)
    assert_array_equal(_class_sum(values.reshape(3, 100, n_classes)), expected.reshape(3, 100))


def test_log_softmax_of_a_row_is_the_same_alone() -> None:
    logits = _inputs(500, 10, seed=4) * 1e-6
    full = exit_log_proba(logits)
    for row in (0, 7, 63, 64, 499):
        assert_array_equal(exit_log_proba(logits[row : row + 1]), full[row : row + 1])

"""Confidence measures and per-exit features, checked against hand-worked values."""

import numpy as np
import pytest

from eenet_sklearn._features import (
    entropy_confidence,
    exit_features,
    margin,
    max_prob,
    n_features,
    softmax,
    voting,
)

# A tiny hand-made example: N=2 samples, K=3 exits, C=3 classes.
#   sample 0: exit argmaxes 0, 0, 1 (exit 1 is a one-hot)
#   sample 1: exit argmaxes 0, 1, 2, all different (exit 0 is uniform: argmax takes the first)
PROBA = np.array(
    [
        [[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.2, 0.45, 0.35]],
        [[1 / 3, 1 / 3, 1 / 3], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7]],
    ]
)


def _entropy_conf(p):
    """1 - H(p) / log C written out term by term, with 0 log 0 = 0."""
    h = -sum(pi * np.log(pi) for pi in p if pi > 0)
    return 1.0 - h / np.log(len(p))


def test_softmax_rows_sum_to_one_and_match_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(5, 4, 7))
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype):
    logits = np.array([[[1e30, 0.0, -1e30], [1000.0, 1000.0, 999.0], [-1e4, -1e4, -1e4]]], dtype=dtype)
    p = softmax(logits)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p[0, 0], [1.0, 0.0, 0.0], atol=1e-6)
    e = np.exp(-1.0)
    np.testing.assert_allclose(p[0, 1], [1 / (2 + e), 1 / (2 + e), e / (2 + e)], rtol=1e-5)
    np.testing.assert_allclose(p[0, 2], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)


def test_max_prob_by_hand():
    np.testing.assert_allclose(max_prob(PROBA), [[0.5, 1.0, 0.45], [1 / 3, 0.6, 0.7]])


def test_margin_by_hand():
    np.testing.assert_allclose(margin(PROBA), [[0.2, 1.0, 0.1], [0.0, 0.3, 0.5]], atol=1e-12)


def test_entropy_confidence_by_hand():
    expected = [[_entropy_conf(p) for p in sample] for sample in PROBA]
    got = entropy_confidence(PROBA)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # Limits: a one-hot is fully confident, the uniform vector not at all.
    assert got[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert got[1, 0] == pytest.approx(0.0, abs=1e-12)
    # And one value worked out numerically: p = (0.5, 0.3, 0.2), C = 3.
    h = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2))
    assert h == pytest.approx(1.0296530140645737)
    assert got[0, 0] == pytest.approx(1 - 1.0296530140645737 / np.log(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropy_confidence_is_safe_with_exact_zeros(dtype):
    proba = np.array([[[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4]], dtype=dtype)
    with np.errstate(all="raise"):  # 0 * log 0 must not produce a warning or a NaN
        got = entropy_confidence(proba)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [[1.0, 0.5, 0.0]], atol=1e-6)  # log 2 / log 4 = 1/2


def test_voting_by_hand():
    # sample 0: argmaxes 0, 0, 1 -> 1/1, 2/2, 2/3; sample 1: 0, 1, 2 -> 1/1, 1/2, 1/3
    np.testing.assert_allclose(voting(PROBA), [[1.0, 1.0, 2 / 3], [1.0, 0.5, 1 / 3]])


def test_voting_counts_the_most_common_not_the_latest():
    # argmaxes 0, 1, 0, 1, 1: the mode among exits 0..k
    labels = [0, 1, 0, 1, 1]
    proba = np.full((1, 5, 2), 0.2)
    proba[0, np.arange(5), labels] = 0.8
    np.testing.assert_allclose(voting(proba), [[1.0, 0.5, 2 / 3, 0.5, 3 / 5]])


def test_exit_features_layout_by_hand():
    features = exit_features(PROBA, ("max_prob", "entropy", "voting", "margin"), class_scores=True)
    assert features.shape == (2, 3, n_features(3, ("a", "b", "c", "d"), True)) == (2, 3, 7)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features[..., 0], max_prob(PROBA), rtol=1e-6)
    np.testing.assert_allclose(features[..., 1], entropy_confidence(PROBA), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(features[..., 2], voting(PROBA), rtol=1e-6)
    np.testing.assert_allclose(features[..., 3], margin(PROBA), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(features[..., 4:], PROBA, rtol=1e-6)
    assert exit_features(PROBA, ("voting",), class_scores=False).shape == (2, 3, 1)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_exit_features_are_causal(k):
    """Column k of the features must not change when exits after k change."""
    rng = np.random.default_rng(1)
    n, n_exits, n_classes = 200, 4, 5
    proba = softmax(rng.normal(scale=2.0, size=(n, n_exits, n_classes)))
    altered = proba.copy()
    altered[:, k + 1 :] = softmax(rng.normal(scale=5.0, size=(n, n_exits - k - 1, n_classes)))
    names = ("max_prob", "entropy", "voting", "margin")
    before = exit_features(proba, names)
    after = exit_features(altered, names)
    np.testing.assert_array_equal(before[:, : k + 1], after[:, : k + 1])
    # The alteration is real: later columns do change.
    assert not np.array_equal(before[:, k + 1 :], after[:, k + 1 :])

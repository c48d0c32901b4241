"""Confidence measures and per-exit features, checked against hand-worked values."""

import numpy as np
import pytest
from scipy.special import entr, expit, logsumexp, xlogy
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import softmax as scipy_softmax

from eenet_sklearn._features import (
    entropy_confidence,
    entropy_log_confidence,
    exit_features,
    exit_log_proba,
    exit_log_proba_and_proba,
    exit_proba,
    exit_step_inputs,
    initial_feature_state,
    log_softmax,
    margin,
    max_prob,
    max_prob_logit,
    n_features,
    softmax,
    step_exit_features,
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


def _voting(proba):
    return exit_features(proba, "proba", ("voting",), class_scores=False)[..., 0]


def test_voting_by_hand():
    # sample 0: argmaxes 0, 0, 1 -> 1/1, 2/2, 2/3; sample 1: 0, 1, 2 -> 1/1, 1/2, 1/3
    np.testing.assert_allclose(_voting(PROBA), [[1.0, 1.0, 2 / 3], [1.0, 0.5, 1 / 3]])


def test_voting_counts_the_most_common_not_the_latest():
    # argmaxes 0, 1, 0, 1, 1: the mode among exits 0..k
    labels = [0, 1, 0, 1, 1]
    proba = np.full((1, 5, 2), 0.2)
    proba[0, np.arange(5), labels] = 0.8
    np.testing.assert_allclose(_voting(proba), [[1.0, 0.5, 2 / 3, 0.5, 3 / 5]], rtol=1e-7)


def test_exit_features_layout_by_hand():
    # The features are probabilities, computed from the outputs as the policies read them.
    features = exit_features(PROBA, "proba", ("max_prob", "entropy", "voting", "margin"), class_scores=True)
    assert features.shape == (2, 3, n_features(3, ("a", "b", "c", "d"), True)) == (2, 3, 7)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features[..., 0], max_prob(PROBA), rtol=1e-6)
    np.testing.assert_allclose(features[..., 1], entropy_confidence(PROBA), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(features[..., 2], [[1.0, 1.0, 2 / 3], [1.0, 0.5, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(features[..., 3], margin(PROBA), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(features[..., 4:], PROBA, rtol=1e-6)
    assert exit_features(PROBA, "proba", ("voting",), class_scores=False).shape == (2, 3, 1)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_exit_features_are_causal(k):
    """Column k of the features must not change when exits after k change."""
    rng = np.random.default_rng(1)
    n, n_exits, n_classes = 200, 4, 5
    logits = rng.normal(scale=2.0, size=(n, n_exits, n_classes))
    altered = logits.copy()
    altered[:, k + 1 :] = rng.normal(scale=5.0, size=(n, n_exits - k - 1, n_classes))
    names = ("max_prob", "entropy", "voting", "margin")
    before = exit_features(logits, "logits", names)
    after = exit_features(altered, "logits", names)
    np.testing.assert_array_equal(before[:, : k + 1], after[:, : k + 1])
    # The alteration is real: later columns do change.
    assert not np.array_equal(before[:, k + 1 :], after[:, k + 1 :])


@pytest.mark.parametrize("n_rows", [1, 63, 64, 500])
def test_training_features_are_the_prediction_features_rounded(n_rows):
    """EENet trains on exit_features; prediction computes each exit's features from that
    exit's outputs alone (exit_step_inputs, step_exit_features): the same float64 values
    before the training copy is rounded to float32, whatever the number of rows."""
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(n_rows, 4, 6)).astype(np.float32)
    logits[0, 1] = [2.0, 2.0, 0.0, 0.0, -1.0, 1.0]  # a tie at the top
    names = ("max_prob", "entropy", "voting", "margin")
    features = exit_features(logits, "logits", names, class_scores=True)
    state = initial_feature_state(n_rows, 6, names)
    for k in range(4):
        log_proba, proba = exit_step_inputs(logits[:, k], "logits", proba=True)
        step, state = step_exit_features(k, proba, log_proba, state, names, True)
        np.testing.assert_array_equal(features[:, k], step.astype(np.float32))


# --- Log-domain exit scores: confidences that do not saturate ------------------------------

# Small cases, one (sample, exit) row each: a generic vector, a tie at the top, the uniform
# vector, a large margin, and a margin where the float64 max-probability is exactly 1.0.
LOGITS = np.array(
    [
        [[2.0, 1.0, -0.5, 0.3], [3.0, 3.0, 0.0, -1.0], [0.7, 0.7, 0.7, 0.7]],
        [[12.0, -3.0, 1.0, 0.5], [50.0, 0.0, -2.0, 1.0], [-4.0, 1.0, 1.0, 2.5]],
    ]
)


def _logit_max_prob_reference(logits):
    """log p_max - log(1 - p_max) = -logsumexp over the other classes of l_j - l_max (scipy)."""
    out = np.empty(logits.shape[:2])
    for index in np.ndindex(*logits.shape[:2]):
        row = logits[index]
        a = int(np.argmax(row))
        out[index] = -logsumexp(np.delete(row, a) - row[a])
    return out


def test_log_softmax_matches_scipy_and_softmax_is_its_exp():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=4.0, size=(6, 3, 5))
    expected = scipy_log_softmax(logits, axis=-1)
    np.testing.assert_allclose(log_softmax(logits), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(np.exp(log_softmax(logits)), softmax(logits))
    before = logits.copy()
    log_softmax(logits)
    np.testing.assert_array_equal(logits, before)  # the input is left alone


def test_exit_proba_is_the_softmax_from_the_same_exponentials_as_exit_log_proba():
    rng = np.random.default_rng(3)
    outputs = (rng.normal(scale=6.0, size=(50, 3, 7))).astype(np.float32)
    as_float64 = outputs.astype(np.float64)
    proba = exit_proba(outputs)
    # exp(z - max) / sum: scipy's softmax (whose pairwise sum may round the total
    # differently); exp(log_softmax) carries the rounding of the log, relative |log p| ulps.
    np.testing.assert_allclose(proba, scipy_softmax(as_float64, axis=-1), rtol=1e-15, atol=0)
    np.testing.assert_allclose(proba, np.exp(exit_log_proba(outputs)), rtol=1e-14, atol=0)
    # One pass of exponentials gives both, bit for bit, in every layout.
    log_proba, same_proba = exit_log_proba_and_proba(outputs)
    np.testing.assert_array_equal(log_proba, exit_log_proba(outputs))
    np.testing.assert_array_equal(same_proba, proba)
    one_exit_log_proba, one_exit_proba = exit_log_proba_and_proba(outputs[:, 1])
    assert one_exit_proba.flags.f_contiguous  # class-major, as prediction lays out an exit
    np.testing.assert_array_equal(one_exit_proba, proba[:, 1])
    np.testing.assert_array_equal(one_exit_log_proba, log_proba[:, 1])
    # Float64 whatever the input dtype: identical values give identical probabilities.
    np.testing.assert_array_equal(exit_proba(as_float64), proba)
    assert proba.dtype == np.float64
    # Probabilities given as such are returned as given.
    given = scipy_softmax(as_float64, axis=-1)
    np.testing.assert_array_equal(exit_proba(given, "proba"), given)
    np.testing.assert_array_equal(exit_log_proba_and_proba(given, "proba")[1], given)


def test_max_prob_logit_by_hand_against_scipy():
    got = max_prob_logit(log_softmax(LOGITS))
    np.testing.assert_allclose(got, _logit_max_prob_reference(LOGITS), rtol=1e-12, atol=1e-12)
    # Worked values: a tie at the top of two classes with the rest far below gives
    # p_max just under 1/2, and the uniform vector over 4 classes p_max = 1/4: -log 3.
    assert got[0, 2] == pytest.approx(-np.log(3.0), abs=1e-12)
    assert got[0, 1] == pytest.approx(-np.log(1 + np.exp(-3.0) + np.exp(-4.0)), abs=1e-12)
    # Logits (50, 0, -2, 1): p_max is 1.0 in float64, and the logit is -log(e^-49 + e^-50 +
    # e^-52) = 49 - log(1 + e^-1 + e^-3).
    assert scipy_softmax(LOGITS[1, 1]).max() == 1.0
    assert got[1, 1] == pytest.approx(49.0 - np.log(1 + np.exp(-1.0) + np.exp(-3.0)), abs=1e-12)
    # Where p_max does not round to 1, expit gives it back.
    p_max = scipy_softmax(LOGITS, axis=-1).max(axis=-1)
    np.testing.assert_allclose(expit(got), p_max, rtol=1e-12)


def _entropy_reference(row):
    """H(softmax(row)) written out with E = (1 - p_max) / p_max, so that nothing saturates:
    p_j = e^(l_j - l_a) / (1 + E) and -log p_j = l_a - l_j + log1p(E)."""
    a = int(np.argmax(row))
    gaps = row[a] - row  # 0 at the argmax
    log1p_e = np.log1p(np.exp(logsumexp(-np.delete(gaps, a))))
    p = np.exp(-gaps) / np.exp(log1p_e)
    return float(np.sum(p * (gaps + log1p_e)))


def test_entropy_log_confidence_by_hand_against_scipy():
    p = scipy_softmax(LOGITS, axis=-1)
    entropy = np.array([[_entropy_reference(row) for row in sample] for sample in LOGITS])
    got = entropy_log_confidence(log_softmax(LOGITS))
    np.testing.assert_allclose(got, -np.log(entropy / np.log(4)), rtol=1e-12, atol=1e-12)
    assert got[0, 2] == pytest.approx(0.0, abs=1e-12)  # uniform: H = log C
    # scipy's entr agrees except at logits (50, 0, -2, 1), where p_max rounds to 1.0 in
    # float64 and entr drops its term p_max * log1p(E) ~ E, 2% of H there.
    scipy_entropy = entr(p).sum(axis=-1)
    np.testing.assert_allclose(scipy_entropy, -xlogy(p, p).sum(axis=-1))
    saturated = np.zeros(got.shape, dtype=bool)
    saturated[1, 1] = True
    np.testing.assert_allclose(scipy_entropy[~saturated], entropy[~saturated], rtol=1e-12)
    assert scipy_entropy[1, 1] == pytest.approx(entropy[1, 1] * (1 - 1 / 50.4), rel=1e-3)
    # The confidence 1 - H / log C comes back as -expm1(-score).
    np.testing.assert_allclose(-np.expm1(-got), entropy_confidence(p), rtol=1e-9, atol=1e-12)


def test_entropy_log_confidence_where_the_entropy_underflows():
    """H ~ (margin + 1) e^-margin for one runner-up: log H = log(margin + 1) - margin."""
    for dtype in (np.float32, np.float64):
        for gap in (200.0, 700.0, 5000.0):
            logits = np.array([[[gap, 0.0]]], dtype=dtype)
            # H = p1 (-log p1) + p0 (-log p0) with p1 = e^-m / (1 + e^-m): ~ e^-m (m + 1).
            expected = np.log(np.log(2.0)) - (np.log(gap + 1.0) - gap)
            got = entropy_log_confidence(log_softmax(logits))[0, 0]
            assert got == pytest.approx(expected, rel=1e-6), (dtype, gap)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_domain_scores_keep_ordering_samples_that_saturate(dtype):
    """Margins of 40, 41, 200 and 700 between the two largest logits: max-probability
    and entropy confidence tie them all at 1.0 in float32 (and the largest in float64),
    the log-domain scores keep them apart, in the order of the margins."""
    margins = np.array([40.0, 41.0, 200.0, 700.0])
    logits = np.zeros((4, 1, 5), dtype=dtype)
    logits[:, 0, 0] = margins
    logits[:, 0, 1:] = [0.0, -1.0, -2.0, -3.0]
    proba = softmax(logits)
    if dtype == np.float32:
        assert np.all(max_prob(proba) == 1.0)
        assert np.all(entropy_confidence(proba)[2:] == 1.0)
    log_proba = log_softmax(logits)
    for score in (max_prob_logit(log_proba), entropy_log_confidence(log_proba)):
        assert score.dtype == dtype
        assert np.all(np.isfinite(score))
        assert np.all(np.diff(score[:, 0]) > 0)
    # And to float precision, the logit is the margin minus log(1 + e^-1 + e^-2 + e^-3).
    expected = margins - np.log(1 + np.exp(-1.0) + np.exp(-2.0) + np.exp(-3.0))
    np.testing.assert_allclose(max_prob_logit(log_proba)[:, 0], expected, rtol=1e-6)


def test_log_domain_scores_are_monotone_in_the_classic_confidences():
    """Strictly increasing transforms: sorting by the new score sorts the classic one."""
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3.0, size=(2000, 1, 6))
    proba, log_proba = softmax(logits), log_softmax(logits)
    for new, old in ((max_prob_logit, max_prob), (entropy_log_confidence, entropy_confidence)):
        order = np.argsort(new(log_proba)[:, 0], kind="stable")
        assert np.all(np.diff(old(proba)[order, 0]) >= -1e-12)


def test_probabilities_with_exact_zeros_give_finite_scores_without_warnings():
    proba = np.array([[[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4, [0.9, 0.1, 0.0, 0.0]]])
    with np.errstate(divide="raise", over="raise", invalid="raise"):
        log_proba = exit_log_proba(proba, "proba")
        max_logit, entropy_score = max_prob_logit(log_proba), entropy_log_confidence(log_proba)
    assert log_proba.min() == -np.inf
    np.testing.assert_allclose(np.exp(log_proba), proba, rtol=1e-15, atol=0)
    assert np.all(np.isfinite(max_logit)) and np.all(np.isfinite(entropy_score))
    # The one-hot is the most confident; then 0.9 / 0.1; then the two-way tie; the uniform last.
    np.testing.assert_allclose(max_logit[0, 1:], [0.0, -np.log(3.0), np.log(9.0)], atol=1e-12)
    assert max_logit[0, 0] > max_logit[0, 3] and entropy_score[0, 0] > entropy_score[0, 3]
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(
        entropy_score[0, 1:], [-np.log(np.log(2) / np.log(4)), 0.0, -np.log(h / np.log(4))], atol=1e-12
    )

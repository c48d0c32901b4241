"""Confidence measures and the causal per-exit features the EENet scorers read.

Every function here takes per-exit class probabilities ``proba`` of shape
``(n_samples, n_exits, n_classes)`` and returns values whose entry at exit ``k``
depends on exits ``0..k`` only, so that the features are available at the moment
an early-exit network reaches exit ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import log_softmax, xlogy

#: Confidence measures the scorers can combine, in the order they are stacked.
CONFIDENCE_MEASURES = ("max_prob", "entropy", "voting", "margin")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in the input's float dtype."""
    return np.exp(log_softmax(logits, axis=-1))


def max_prob(proba: np.ndarray) -> np.ndarray:
    """Largest class probability at each exit, shape ``(n_samples, n_exits)``."""
    return proba.max(axis=-1)


def entropy_confidence(proba: np.ndarray) -> np.ndarray:
    """``1 - H(p) / log C`` at each exit: 1 for a one-hot, 0 for a uniform vector.

    ``xlogy`` makes zero probabilities contribute exactly zero.
    """
    n_classes = proba.shape[-1]
    entropy = -xlogy(proba, proba).sum(axis=-1)
    return 1.0 - entropy / np.log(n_classes)


def margin(proba: np.ndarray) -> np.ndarray:
    """Difference between the two largest class probabilities at each exit."""
    top2 = np.partition(proba, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def voting(proba: np.ndarray) -> np.ndarray:
    """Agreement among the exits seen so far.

    Entry ``[n, k]`` is the fraction of exits ``0..k`` whose argmax equals the most
    common argmax among them (1 when all agree; ``1 / (k + 1)`` when all differ).
    """
    n_samples, n_exits, n_classes = proba.shape
    predictions = proba.argmax(axis=-1)
    votes = np.zeros((n_samples, n_exits, n_classes), dtype=np.int32)
    np.put_along_axis(votes, predictions[..., None], 1, axis=-1)
    np.cumsum(votes, axis=1, out=votes)
    seen = np.arange(1, n_exits + 1, dtype=proba.dtype)
    return votes.max(axis=-1) / seen


_MEASURE_FUNCTIONS = {
    "max_prob": max_prob,
    "entropy": entropy_confidence,
    "voting": voting,
    "margin": margin,
}


def exit_features(
    proba: np.ndarray,
    confidence: Sequence[str] = ("max_prob", "entropy", "voting"),
    class_scores: bool = True,
) -> np.ndarray:
    """Stack the chosen confidence measures and class-wise scores per exit.

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class probabilities.
    confidence : sequence of str
        Names from :data:`CONFIDENCE_MEASURES`, stacked in the given order.
    class_scores : bool
        Append the whole probability vector of the exit (the class-wise scores).

    Returns
    -------
    ndarray of shape (n_samples, n_exits, n_features)
        ``float32`` features; entry ``[:, k]`` depends on exits ``0..k`` only.
    """
    parts = [_MEASURE_FUNCTIONS[name](proba)[..., None] for name in confidence]
    if class_scores:
        parts.append(proba)
    return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)


def n_features(n_classes: int, confidence: Sequence[str], class_scores: bool) -> int:
    """Width of :func:`exit_features` for one exit."""
    return len(confidence) + (n_classes if class_scores else 0)

"""Confidence measures and the causal per-exit features the EENet scorers read.

Every function here takes per-exit class probabilities ``proba`` of shape
``(n_samples, n_exits, n_classes)`` and returns values whose entry at exit ``k``
depends on exits ``0..k`` only, so that the features are available at the moment
an early-exit network reaches exit ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Confidence measures the scorers can combine, in the order they are stacked.
CONFIDENCE_MEASURES = ("max_prob", "entropy", "voting", "margin")

# Speed notes. These functions accept any memory layout of ``proba`` and keep it.
# Prediction hands them "class-major" views (classes outermost in memory), on which a
# reduction over the few classes is a handful of fast elementwise passes rather than
# one short reduction per (sample, exit); so no argmax or partition over classes here.


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in the input's float dtype.

    ``exp(log_softmax(logits))`` as scipy computes it, with fewer temporaries; the
    result has the memory layout of ``logits``.
    """
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    shift = logits.max(axis=-1, keepdims=True)
    shift[~np.isfinite(shift)] = 0
    shifted = logits - shift
    proba = np.exp(shifted)
    with np.errstate(divide="ignore"):
        log_total = np.log(proba.sum(axis=-1, keepdims=True))
    np.subtract(shifted, log_total, out=shifted)
    return np.exp(shifted, out=shifted)


def exit_proba(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """Per-exit class probabilities of validated outputs, laid out class-major.

    Classes outermost in memory: reductions over the classes (softmax, confidence
    measures) then run as fast elementwise passes over (samples, exits) rows instead
    of one short reduction per (sample, exit). Every policy and the oracle go through
    here, so they all see the same probabilities (and the same argmax) for a sample.
    """
    by_class = np.ascontiguousarray(outputs.transpose(2, 0, 1)).transpose(1, 2, 0)
    return by_class if input_type == "proba" else softmax(by_class)


def _argmax(proba: np.ndarray) -> np.ndarray:
    """``proba.argmax(axis=-1)`` (the first maximum), fast on class-major views too."""
    n_classes = proba.shape[-1]
    if proba.strides[-1] == proba.itemsize or n_classes > np.iinfo(np.int16).max:
        return proba.argmax(axis=-1)
    # The first maximum has the largest "reversed index" (C - c) among the maxima.
    dtype = np.min_scalar_type(n_classes)
    is_max = (proba == proba.max(axis=-1, keepdims=True)).view(np.uint8).astype(dtype, copy=False)
    first = (is_max * np.arange(n_classes, 0, -1, dtype=dtype)).max(axis=-1)
    return np.minimum(n_classes - first.astype(np.intp), n_classes - 1)


def max_prob(proba: np.ndarray) -> np.ndarray:
    """Largest class probability at each exit, shape ``(n_samples, n_exits)``."""
    return proba.max(axis=-1)


def entropy_confidence(proba: np.ndarray) -> np.ndarray:
    """``1 - H(p) / log C`` at each exit: 1 for a one-hot, 0 for a uniform vector.

    Zero probabilities contribute exactly zero, as with ``xlogy`` (which is several
    times slower on the class-major views prediction uses).
    """
    n_classes = proba.shape[-1]
    # Zeros raised to the smallest subnormal: 0 * log(0) becomes an exact 0.
    plogp = np.maximum(proba, np.finfo(proba.dtype).smallest_subnormal)
    np.log(plogp, out=plogp)
    plogp *= proba
    entropy = -plogp.sum(axis=-1)
    return 1.0 - entropy / np.log(n_classes)


def margin(proba: np.ndarray) -> np.ndarray:
    """Difference between the two largest class probabilities at each exit."""
    top = proba.max(axis=-1, keepdims=True)
    is_top = proba == top
    second = np.where(is_top, -np.inf, proba).max(axis=-1)
    # A maximum reached twice has margin 0.
    tied = is_top.sum(axis=-1) > 1
    top = top[..., 0]
    return top - np.where(tied, top, second)


def voting(proba: np.ndarray) -> np.ndarray:
    """Agreement among the exits seen so far.

    Entry ``[n, k]`` is the fraction of exits ``0..k`` whose argmax equals the most
    common argmax among them (1 when all agree; ``1 / (k + 1)`` when all differ).
    """
    n_samples, n_exits, _ = proba.shape
    predictions = _argmax(proba)
    # agree[j]: among the exits seen so far, how many predict what exit j predicts.
    agree = np.zeros((n_exits, n_samples), dtype=np.int32)
    votes = np.empty((n_samples, n_exits), dtype=np.int32)
    for k in range(n_exits):
        agree[k] = 1
        for j in range(k):
            same = predictions[:, j] == predictions[:, k]
            agree[j] += same
            agree[k] += same
        votes[:, k] = agree[: k + 1].max(axis=0)
    seen = np.arange(1, n_exits + 1, dtype=proba.dtype)
    return votes / seen


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
    *,
    out: np.ndarray | None = None,
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
    out : ndarray of shape (n_samples, n_exits, n_features), dtype float32, optional
        Where to write the features (any memory layout, e.g. a transposed view).

    Returns
    -------
    ndarray of shape (n_samples, n_exits, n_features)
        ``float32`` features (``out`` when given); entry ``[:, k]`` depends on exits
        ``0..k`` only.
    """
    n_samples, n_exits, n_classes = proba.shape
    if out is None:
        width = n_features(n_classes, confidence, class_scores)
        out = np.empty((n_samples, n_exits, width), dtype=np.float32)
    for i, name in enumerate(confidence):
        out[..., i] = _MEASURE_FUNCTIONS[name](proba)
    if class_scores:
        out[..., len(confidence) :] = proba
    return out


def n_features(n_classes: int, confidence: Sequence[str], class_scores: bool) -> int:
    """Width of :func:`exit_features` for one exit."""
    return len(confidence) + (n_classes if class_scores else 0)


def check_confidence(confidence: str | Sequence[str], class_scores: bool) -> tuple[str, ...]:
    """Validate the ``confidence`` and ``class_scores`` parameters of a feature-reading policy.

    Returns the measure names as a tuple (a single name may be given as a string).
    Raises ``ValueError`` on an unknown or repeated name, or when nothing would be read.
    """
    names = (confidence,) if isinstance(confidence, str) else tuple(confidence)
    unknown = [name for name in names if name not in CONFIDENCE_MEASURES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"confidence must hold distinct names from {CONFIDENCE_MEASURES}, got {confidence!r}."
        )
    if not names and not class_scores:
        raise ValueError(
            "confidence is empty and class_scores=False: the scorers would read nothing."
        )
    return names

"""Confidence measures and the causal per-exit features the exit policies read.

The policies read per-exit *log*-probabilities ``log_proba`` of shape
``(n_samples, n_exits, n_classes)`` (:func:`exit_log_proba`): in the log domain a
confidence does not saturate where the logits still order the samples (a float32
max-probability is exactly 1.0 from a margin of about 17 on, a float64 one from
about 37 on). The exit scores of the threshold rules (:func:`max_prob_logit`,
:func:`entropy_log_confidence`) are computed there; the features the learned scorers
read (:func:`exit_features`) are probabilities, computed from it. Every value at exit
``k`` depends on exits ``0..k`` only, so that it is available at the moment an
early-exit network reaches exit ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Confidence measures the scorers can combine, in the order they are stacked.
CONFIDENCE_MEASURES = ("max_prob", "entropy", "voting", "margin")

# Speed notes. These functions accept any memory layout of their input and keep it.
# Prediction hands them "class-major" views (classes outermost in memory), on which a
# reduction over the few classes is a handful of fast elementwise passes rather than
# one short reduction per (sample, exit); so no argmax or partition over classes here.


def _log_softmax_inplace(values: np.ndarray, finite: bool = False) -> np.ndarray:
    """Log-softmax over the last axis, written into the float array ``values``.

    ``finite``: the values are known to be finite (validated outputs), so the row
    maximum needs no guard.
    """
    shift = values.max(axis=-1, keepdims=True)
    if not finite:
        shift[~np.isfinite(shift)] = 0
    values -= shift
    total = np.exp(values).sum(axis=-1, keepdims=True)
    if finite:  # total >= 1
        values -= np.log(total, out=total)
        return values
    with np.errstate(divide="ignore"):
        values -= np.log(total, out=total)
    return values


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in the input's float dtype.

    ``logits - max - log(sum(exp(logits - max)))``, as :func:`scipy.special.log_softmax`
    computes it, with fewer temporaries; the result has the memory layout of ``logits``
    (integer logits give float64).
    """
    logits = np.asarray(logits)
    dtype = logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float64
    return _log_softmax_inplace(np.array(logits, dtype=dtype, order="K"))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in the input's float dtype.

    ``exp(log_softmax(logits))`` as scipy computes it; the result has the memory
    layout of ``logits``.
    """
    log_proba = log_softmax(logits)
    return np.exp(log_proba, out=log_proba)


def _class_major(outputs: np.ndarray) -> np.ndarray:
    """A copy of ``outputs`` with the classes outermost in memory, indexed as ``outputs``."""
    return np.ascontiguousarray(outputs.transpose(2, 0, 1)).transpose(1, 2, 0)


def exit_log_proba(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """Per-exit class log-probabilities of validated (finite) outputs, laid out class-major.

    What every policy reads (:meth:`BaseExitPolicy._exit_scores
    <eenet_sklearn.base.BaseExitPolicy._exit_scores>`): the log-softmax of logits, or
    the log of probabilities (``-inf`` for a probability of 0), in the dtype of
    ``outputs``. Classes outermost in memory: reductions over the classes then run as
    fast elementwise passes over (samples, exits) rows instead of one short reduction
    per (sample, exit).
    """
    by_class = _class_major(outputs)
    if input_type == "proba":
        with np.errstate(divide="ignore"):
            return np.log(by_class, out=by_class)
    return _log_softmax_inplace(by_class, finite=True)


def exit_proba(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """Per-exit class probabilities of validated (finite) outputs, laid out class-major.

    ``exp(exit_log_proba(outputs))`` bit for bit for logits; the probabilities as
    given for ``input_type="proba"``. What the policies predict from
    (:func:`exit_predictions`) and return (``predict_proba``).
    """
    by_class = _class_major(outputs)
    if input_type == "proba":
        return by_class
    return np.exp(_log_softmax_inplace(by_class, finite=True), out=by_class)


def exit_predictions(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """The class each exit predicts, shape ``(n_samples, n_exits)``.

    The argmax of :func:`exit_proba` (ties to the first class; softmax can round
    distinct logits to one value). Fitting (which exits are right) and the oracle
    bound both use this, so that they agree with ``predict`` sample for sample.
    """
    return _argmax(exit_proba(outputs, input_type))


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


def _odds_terms(log_proba: np.ndarray) -> tuple[np.ndarray, ...]:
    """What :func:`max_prob_logit` and :func:`entropy_log_confidence` share.

    With ``a`` the argmax and ``ref`` the largest log-probability among the other
    classes (the runner-up, or the top itself when it is reached twice), returns

    - ``rel``: ``exp(log_proba - ref)`` outside the top classes, 0 on them (a new array
      laid out as ``log_proba``);
    - ``n_top``: how many classes reach the top;
    - ``odds``: ``S = sum_{j != a} exp(log_proba[j] - ref) >= 1``;
    - ``ref``;
    - ``top``: the largest log-probability.

    The last four have shape ``(n_samples, n_exits, 1)``. ``(1 - p_max) / p_max =
    exp(ref - top) * S``, and nothing here underflows, however large the margin ``top -
    ref``. All in the dtype of ``log_proba``; ``-inf`` is allowed. Where every other
    class is at ``-inf`` (a one-hot given as probabilities), ``ref`` is about the lowest
    float and ``S = 1``: ``E`` is 0 to float precision, and nothing is NaN.
    """
    dtype = log_proba.dtype
    top = log_proba.max(axis=-1, keepdims=True)
    # 1 on the top classes, 0 elsewhere, as floats (a bool array, or np.where, would cost
    # an allocation more, and np.where lays its result out sample-major: slow here).
    rel = np.equal(log_proba, top, out=np.empty_like(log_proba), casting="unsafe")
    n_top = rel.sum(axis=-1, keepdims=True)
    # The top classes pushed to the lowest float, below every other class but -inf.
    rel *= np.finfo(dtype).min
    rel += log_proba
    ref = rel.max(axis=-1, keepdims=True)  # the runner-up
    np.copyto(ref, top, where=n_top > 1)
    rel -= ref
    np.exp(rel, out=rel)
    odds = rel.sum(axis=-1, keepdims=True)
    odds += n_top - 1
    return rel, n_top, odds, ref, top


def max_prob_logit(log_proba: np.ndarray) -> np.ndarray:
    """``logit(p_max) = log(p_max / (1 - p_max))`` at each exit, from log-probabilities.

    A strictly increasing function of the largest class probability ``p_max``
    (``p_max = expit(score)``), so that a threshold on it is a threshold on ``p_max``;
    computed as ``-logsumexp_{j != argmax}(log_proba[j] - log_proba[argmax])``, which
    stays distinct where ``p_max`` rounds to 1.0: about the margin between the two
    largest logits once that is large (float32 ``p_max`` is exactly 1.0 from a margin
    of about 17 on, float64 from about 37 on). At least ``-log(C - 1)`` (the uniform
    vector over ``C`` classes); 0 where ``p_max = 1/2``.

    Parameters
    ----------
    log_proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class log-probabilities (:func:`exit_log_proba`); ``-inf`` allowed.

    Returns
    -------
    ndarray of shape (n_samples, n_exits)
        In the dtype of ``log_proba``.

    References
    ----------
    MSDNet's budgeted rule thresholds ``p_max`` (G. Huang et al., "Multi-Scale Dense
    Networks for Resource Efficient Image Classification", ICLR 2018); this is the same
    rule on a strictly increasing transform of it.
    """
    _, _, odds, ref, top = _odds_terms(log_proba)
    score = top - ref
    score -= np.log(odds, out=odds)
    return score[..., 0]


def entropy_log_confidence(log_proba: np.ndarray) -> np.ndarray:
    """``-log(H(p) / log C)`` at each exit, from log-probabilities.

    A strictly increasing function of the entropy confidence ``c = 1 - H(p) / log C``
    of :func:`entropy_confidence` (``c = -expm1(-score)``): 0 for the uniform vector
    over ``C`` classes, growing without bound as the entropy ``H`` goes to 0.
    Computed in the log domain so that it stays distinct where ``c`` rounds to 1.0:
    with ``ref``, ``S`` and ``rel`` as in :func:`max_prob_logit`'s computation, ``E =
    (1 - p_max) / p_max = exp(ref - top) S`` and ``n_top`` classes at the top,

    ``H = exp(ref) * (sum_{j not top} rel_j (-log p_j) + n_top S log1p(E) / E)``,

    where the top classes' ``-log p_max = log1p(E)`` is taken from ``E`` rather than
    from ``log p_max``, which rounds to 0 once ``E`` is below the float epsilon.

    Parameters
    ----------
    log_proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class log-probabilities (:func:`exit_log_proba`); ``-inf`` allowed.

    Returns
    -------
    ndarray of shape (n_samples, n_exits)
        In the dtype of ``log_proba``.

    References
    ----------
    BranchyNet's rule thresholds the entropy (S. Teerapittayanon, B. McDanel and H. T.
    Kung, "BranchyNet: Fast Inference via Early Exiting from Deep Neural Networks",
    ICPR 2016); this is the same rule on a strictly increasing transform of it.
    """
    rel, n_top, odds, ref, top = _odds_terms(log_proba)
    with np.errstate(invalid="ignore"):
        rel *= log_proba  # rel_j log p_j; NaN for 0 * -inf, where p_j = 0
    bracket = rel.sum(axis=-1, keepdims=True)
    if np.isnan(bracket).any():  # terms of probability-0 classes are 0
        np.fmin(rel, 0, out=rel)
        bracket = rel.sum(axis=-1, keepdims=True)
    np.negative(bracket, out=bracket)
    excess = ref - top  # E = exp(ref - top) S <= C - 1
    excess += np.log(odds)
    np.exp(excess, out=excess)
    # log1p(E) / E, which is 1 in float for E below the smallest normal number.
    np.maximum(excess, np.finfo(excess.dtype).tiny, out=excess)
    ratio = np.log1p(excess)
    ratio /= excess
    ratio *= odds
    ratio *= n_top
    bracket += ratio  # > 0
    log_entropy = np.log(bracket, out=bracket)
    log_entropy += ref
    score = np.log(np.log(log_proba.dtype.type(log_proba.shape[-1]))) - log_entropy
    return score[..., 0]


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
    log_proba: np.ndarray,
    confidence: Sequence[str] = ("max_prob", "entropy", "voting"),
    class_scores: bool = True,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Stack the chosen confidence measures and class-wise scores per exit.

    The features the learned scorers read are probabilities (bounded, as a network's
    inputs should be), computed from the per-exit log-probabilities the policies read.

    Parameters
    ----------
    log_proba : ndarray of shape (n_samples, n_exits, n_classes)
        Per-exit class log-probabilities (:func:`exit_log_proba`); ``-inf`` allowed.
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
    n_samples, n_exits, n_classes = log_proba.shape
    if out is None:
        width = n_features(n_classes, confidence, class_scores)
        out = np.empty((n_samples, n_exits, width), dtype=np.float32)
    proba = np.exp(log_proba)
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

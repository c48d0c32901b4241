"""Confidence measures and the causal per-exit features the exit policies read.

The policies read per-exit *log*-probabilities ``log_proba`` of shape
``(n_samples, n_exits, n_classes)`` (:func:`exit_log_proba`): in the log domain a
confidence does not saturate where the logits still order the samples (a float32
max-probability is exactly 1.0 from a margin of about 17 on, a float64 one from
about 37 on). The exit scores of the threshold rules (:func:`max_prob_logit`,
:func:`entropy_log_confidence`) are computed there; the features the learned scorers
read (:func:`exit_features`, :func:`step_features` for one exit) are probabilities,
computed from it. Every value at exit ``k`` depends on exits ``0..k`` only, so that it is
available at the moment an early-exit network reaches exit ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: Confidence measures the scorers can combine, in the order they are stacked.
CONFIDENCE_MEASURES = ("max_prob", "entropy", "voting", "margin")

# Batch invariance. Prediction computes every value of a sample from that sample's row
# alone, in float64, and every sum over the classes adds them one by one in class order,
# ``((v0 + v1) + v2) + ...`` (:func:`_class_sum`), however the call lays out its rows and
# however many there are (NumPy's own ``sum`` adds a row pairwise, in an order that
# depends on the memory layout and, for a single row, on its length).

#: A reduction over at most this many classes, of at least ``_COLUMN_PASSES_FROM_ROWS``
#: rows, runs as one elementwise pass per class: several times faster than NumPy's
#: per-row reductions over a short last axis.
_COLUMN_PASSES_UP_TO = 64
_COLUMN_PASSES_FROM_ROWS = 64


def _exit_order(n_classes: int) -> Literal["C", "F"]:
    """Memory order of one exit's ``(n_rows, n_classes)`` values in prediction.

    Class-major (``"F"``: each class's column contiguous) where the reductions over the
    classes run as column passes: those passes, and the broadcasts of a per-row value
    over the classes, are then contiguous, about three times faster at ``C = 10``. The
    values, computed elementwise or in class order, are the same bits in either order.
    """
    return "F" if n_classes <= _COLUMN_PASSES_UP_TO else "C"


def _class_argmax(values: np.ndarray, top: np.ndarray | None = None) -> np.ndarray:
    """Index of the first largest value over the last axis of 2-D ``values``, as ``argmax``.

    ``top``: :func:`_class_max` of ``values`` when the caller has it. Class-major
    values are searched column by column, last to first (several times faster than
    NumPy's ``argmax`` over a strided axis).
    """
    if values.ndim != 2 or not values.flags.f_contiguous or not _by_columns(values):
        return values.argmax(axis=-1)
    if top is None:
        top = _class_max(values)
    n_classes = values.shape[1]
    index = np.full(values.shape[0], n_classes - 1, dtype=np.intp)
    for column in range(n_classes - 2, -1, -1):
        index[values[:, column] == top] = column
    return index


def _by_columns(values: np.ndarray) -> bool:
    n_classes = values.shape[-1]
    return n_classes <= _COLUMN_PASSES_UP_TO and values.size >= _COLUMN_PASSES_FROM_ROWS * n_classes


def _class_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last axis, adding the classes one by one in order: ``((v0 + v1) + v2) + ...``.

    The same bits whatever the shape, layout and number of rows (elementwise passes
    over the class columns, or ``np.add.accumulate`` along each row, which adds in
    that order by definition). Shape ``values.shape[:-1]``, a new array.
    """
    if values.shape[-1] == 0:
        return np.zeros(values.shape[:-1], dtype=values.dtype)
    if _by_columns(values):
        total = values[..., 0].copy()
        for column in range(1, values.shape[-1]):
            total += values[..., column]
        return total
    return np.add.accumulate(values, axis=-1)[..., -1].copy()


def _class_max(values: np.ndarray) -> np.ndarray:
    """Maximum over the last axis (exact in any order): shape ``values.shape[:-1]``, a new array."""
    if _by_columns(values) and values.shape[-1] > 0:
        top = values[..., 0].copy()
        for column in range(1, values.shape[-1]):
            np.maximum(top, values[..., column], out=top)
        return top
    return values.max(axis=-1)


def _log_softmax_inplace(values: np.ndarray, finite: bool = False) -> np.ndarray:
    """Log-softmax over the last axis, written into the float array ``values``.

    ``finite``: the values are known to be finite (validated outputs), so the row
    maximum needs no guard.
    """
    return _softmax_terms_inplace(values, finite)[0]


def _softmax_terms_inplace(
    values: np.ndarray, finite: bool = False, proba: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Log-softmax written into the float array ``values``; with ``proba``, the softmax too.

    Both from one pass of exponentials ``e = exp(values - max)`` and their sum ``s``:
    ``values - max - log(s)`` and ``e / s``, the definitions of
    :func:`scipy.special.log_softmax` and :func:`scipy.special.softmax`. (The softmax as
    ``exp`` of the log-softmax would cost a second pass of exponentials, the largest part
    of a decision's time; the two differ by an ulp or so.)
    """
    shift = _class_max(values)[..., None]
    if not finite:
        shift[~np.isfinite(shift)] = 0
    values -= shift
    exps = np.exp(values)
    total = _class_sum(exps)[..., None]
    if proba:
        exps /= total
    if finite:  # total >= 1
        values -= np.log(total, out=total)
    else:
        with np.errstate(divide="ignore"):
            values -= np.log(total, out=total)
    return values, exps if proba else None


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


def exit_log_proba(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """Class log-probabilities of validated (finite) outputs: float64, classes contiguous.

    What every policy reads (the per-exit steps of
    :meth:`BaseExitPolicy.exit_decider <eenet_sklearn.base.BaseExitPolicy.exit_decider>`):
    the log-softmax of logits, or the log of probabilities (``-inf`` for a probability
    of 0), of any shape ``(..., n_classes)``. A new float64 array whatever the dtype of ``outputs``, so
    that identical values give identical results in every dtype, and each row's values
    do not depend on the other rows (see the note above); C-ordered, except one exit's
    ``(n_rows, n_classes)`` values of at most ``_COLUMN_PASSES_UP_TO`` classes, which are
    class-major (:func:`_exit_order`).
    """
    return exit_step_inputs(outputs, input_type, proba=False)[0]


def exit_log_proba_and_proba(
    outputs: np.ndarray, input_type: str = "logits"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exit_log_proba` and :func:`exit_proba` of the same outputs, in one pass of exponentials.

    Bit for bit those two functions' results, in :func:`exit_log_proba`'s layout.
    """
    log_proba, proba = exit_step_inputs(outputs, input_type, proba=True)
    assert proba is not None
    return log_proba, proba


def exit_step_inputs(
    outputs: np.ndarray, input_type: str, proba: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """What a policy's step reads of one exit: :func:`exit_log_proba`, and :func:`exit_proba` or ``None``.

    ``proba``: whether the step reads the probabilities (``_step_reads_proba``); they
    come from the log-softmax's own exponentials, none spent where they are not read.
    """
    values = _float64_exit_values(outputs)
    if input_type == "proba":
        given = values.copy(order="K") if proba else None
        with np.errstate(divide="ignore"):
            return np.log(values, out=values), given
    return _softmax_terms_inplace(values, finite=True, proba=proba)


def _float64_exit_values(outputs: np.ndarray) -> np.ndarray:
    """A float64 copy of ``outputs`` in :func:`exit_log_proba`'s layout."""
    order: Literal["C", "F"] = _exit_order(outputs.shape[-1]) if np.ndim(outputs) == 2 else "C"
    return np.array(outputs, dtype=np.float64, order=order)


def exit_proba(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """Class probabilities of validated (finite) outputs: float64.

    The softmax of logits, ``exp(z - max) / sum(exp(z - max))`` (as
    :func:`scipy.special.softmax` defines it; within an ulp or so of
    ``exp(exit_log_proba(outputs))``), or the probabilities as given (in float64) for
    ``input_type="proba"``. What the policies predict from (:func:`exit_predictions`),
    return (``predict_proba``) and read as features; laid out as :func:`exit_log_proba`.
    """
    if input_type == "proba":  # as given: no logarithms to spend
        return _float64_exit_values(outputs)
    return exit_log_proba_and_proba(outputs, input_type)[1]


def exit_predictions(outputs: np.ndarray, input_type: str = "logits") -> np.ndarray:
    """The class each exit predicts, shape ``outputs.shape[:-1]``.

    The argmax of :func:`exit_proba` (ties to the first class; softmax can round
    distinct logits to one value). Fitting (which exits are right) and the oracle
    bound both use this, so that they agree with ``predict`` sample for sample.
    """
    return exit_proba(outputs, input_type).argmax(axis=-1)


def max_prob(proba: np.ndarray) -> np.ndarray:
    """Largest class probability at each exit, shape ``(n_samples, n_exits)``."""
    return _class_max(proba)


def entropy_confidence(proba: np.ndarray, log_proba: np.ndarray | None = None) -> np.ndarray:
    """``1 - H(p) / log C`` at each exit: 1 for a one-hot, 0 for a uniform vector.

    Zero probabilities contribute exactly zero, as with ``xlogy`` (which is several
    times slower). ``log_proba``: the log of ``proba`` when the caller has it
    (:func:`exit_log_proba`, ``-inf`` allowed), which saves a logarithm per class;
    otherwise ``log(proba)`` is taken here.
    """
    n_classes = proba.shape[-1]
    # Zeros raised to the smallest subnormal (their logs to its log): 0 * log(0) becomes
    # an exact 0.
    tiny = np.finfo(proba.dtype).smallest_subnormal
    if log_proba is None:
        plogp = np.maximum(proba, tiny)
        np.log(plogp, out=plogp)
    else:
        plogp = np.maximum(log_proba, np.log(tiny))
    plogp *= proba
    entropy = -_class_sum(plogp)
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
    top = _class_max(log_proba)[..., None]
    # 1 on the top classes, 0 elsewhere, as floats (a bool array, or np.where, would cost
    # an allocation more, and np.where lays its result out sample-major: slow here).
    rel = np.equal(log_proba, top, out=np.empty_like(log_proba), casting="unsafe")
    n_top = rel.sum(axis=-1, keepdims=True)  # a count: exact in any order
    # The top classes pushed to the lowest float, below every other class but -inf.
    rel *= np.finfo(dtype).min
    rel += log_proba
    ref = _class_max(rel)[..., None]  # the runner-up
    np.copyto(ref, top, where=n_top > 1)
    rel -= ref
    np.exp(rel, out=rel)
    odds = _class_sum(rel)[..., None]
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
    bracket = _class_sum(rel)[..., None]
    if np.isnan(bracket).any():  # terms of probability-0 classes are 0
        np.fmin(rel, 0, out=rel)
        bracket = _class_sum(rel)[..., None]
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


_MEASURE_FUNCTIONS = {
    "max_prob": max_prob,
    "entropy": entropy_confidence,
    "margin": margin,
}


def exit_features(
    outputs: np.ndarray,
    input_type: str = "logits",
    confidence: Sequence[str] = ("max_prob", "entropy", "voting"),
    class_scores: bool = True,
) -> np.ndarray:
    """Stack the chosen confidence measures and class-wise scores per exit.

    What EENet's scorer trains on (in float32, as torch trains): the features
    prediction computes exit by exit (:func:`step_exit_features`, in float64), exit
    after exit over all the rows, then rounded to float32. The scorer is so trained on
    exactly what it reads at prediction.

    Parameters
    ----------
    outputs : ndarray of shape (n_samples, n_exits, n_classes)
        Validated (finite) per-exit logits, or probabilities with
        ``input_type="proba"``.
    input_type : {"logits", "proba"}
        What ``outputs`` holds.
    confidence : sequence of str
        Names from :data:`CONFIDENCE_MEASURES`, stacked in the given order.
    class_scores : bool
        Append the whole probability vector of the exit (the class-wise scores).

    Returns
    -------
    ndarray of shape (n_samples, n_exits, n_features)
        ``float32`` features; entry ``[:, k]`` depends on exits ``0..k`` only.
    """
    log_proba, proba = exit_log_proba_and_proba(outputs, input_type)
    n_samples, n_exits, n_classes = log_proba.shape
    step = np.empty((n_samples, n_features(n_classes, confidence, class_scores)), dtype=np.float64)
    out = np.empty((n_samples, n_exits, step.shape[1]), dtype=np.float32)
    state = initial_feature_state(n_samples, n_classes, confidence)
    for k in range(n_exits):
        _, state = step_exit_features(
            k, proba[:, k], log_proba[:, k], state, confidence, class_scores, out=step
        )
        out[:, k] = step
    return out


def feature_state_names(confidence: Sequence[str]) -> tuple[str, ...]:
    """What :func:`step_exit_features` carries from exit to exit: the vote counts, if read."""
    return ("votes", "top_vote") if "voting" in confidence else ()


def initial_feature_state(
    n_samples: int, n_classes: int, confidence: Sequence[str]
) -> dict[str, np.ndarray]:
    """The state of :func:`step_exit_features` before exit 0: zero vote counts, if read."""
    if "voting" not in confidence:
        return {}
    return {
        "votes": np.zeros((n_samples, n_classes), dtype=np.int64),
        "top_vote": np.zeros(n_samples, dtype=np.int64),
    }


def step_exit_features(
    k: int,
    proba: np.ndarray,
    log_proba: np.ndarray,
    state: dict[str, np.ndarray],
    confidence: Sequence[str],
    class_scores: bool,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Exit ``k``'s features (:func:`step_features`) and the next state, the input left alone.

    ``state`` holds at least :func:`feature_state_names`' entries (the vote counts of
    exits ``0..k-1``); the returned state is a new dict with those entries updated to
    include exit ``k`` and every other entry as given. ``out``: as in :func:`step_features`.
    """
    state = dict(state)
    voting = top = None
    if "voting" in confidence:
        top = _class_max(proba)  # the largest probability, where the argmax is found
        voting, state["votes"], state["top_vote"] = step_votes(
            proba, k, state["votes"], state["top_vote"], _class_argmax(proba, top)
        )
    features = step_features(proba, voting, confidence, class_scores, log_proba, top, out)
    return features, state


def _row_picks(n_rows: int, n_classes: int, columns: np.ndarray) -> np.ndarray:
    """Indices into a flattened C-ordered ``(n_rows, n_classes)`` array of ``[i, columns[i]]``.

    Flat indexing is several times faster than ``array[np.arange(n), columns]``.
    """
    picks = np.arange(0, n_rows * n_classes, n_classes, dtype=np.intp)
    picks += columns
    return picks


def step_votes(
    proba: np.ndarray,
    k: int,
    votes: np.ndarray,
    top_vote: np.ndarray,
    predictions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voting measure at exit ``k`` from the carried vote counts, in constant time in ``k``.

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Class probabilities at exit ``k`` (:func:`exit_proba`).
    k : int
        The exit index (0-based).
    votes : ndarray of shape (n_samples, n_classes), dtype int64
        How many of exits ``0..k-1`` predict each class (zeros before exit 0).
    top_vote : ndarray of shape (n_samples,), dtype int64
        The largest entry of each row of ``votes``.
    predictions : ndarray of shape (n_samples,), optional
        ``proba.argmax(axis=-1)`` when the caller has it.

    Returns
    -------
    voting : ndarray of shape (n_samples,), float64
        The agreement among exits ``0..k``: the largest vote count (how many of
        them predict the most common class) divided by ``k + 1``; 1 when all agree,
        ``1 / (k + 1)`` when all differ.
    votes, top_vote : ndarray
        The counts including exit ``k`` (new arrays; the inputs are left alone).
    """
    if predictions is None:
        predictions = _class_argmax(proba)
    votes = np.array(votes, order="C")  # a new array, flattened below without a copy
    flat = votes.reshape(-1)
    picks = _row_picks(votes.shape[0], votes.shape[1], predictions)
    flat[picks] += 1
    top_vote = np.maximum(top_vote, flat[picks])
    return top_vote / np.float64(k + 1), votes, top_vote


def step_features(
    proba: np.ndarray,
    voting: np.ndarray | None,
    confidence: Sequence[str],
    class_scores: bool,
    log_proba: np.ndarray | None = None,
    top_proba: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`exit_features` of one exit, in float64, from that exit's probabilities.

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Class probabilities at the exit (:func:`exit_proba`), in any memory order.
    voting : ndarray of shape (n_samples,) or None
        The voting measure at the exit (:func:`step_votes`); needed only when
        ``"voting"`` is in ``confidence``.
    confidence : sequence of str
        Names from :data:`CONFIDENCE_MEASURES`, stacked in the given order.
    class_scores : bool
        Append the probability vector.
    log_proba : ndarray of shape (n_samples, n_classes), optional
        The log of ``proba`` (:func:`exit_log_proba`): the entropy then takes no
        logarithm of its own (:func:`entropy_confidence`).
    top_proba : ndarray of shape (n_samples,), optional
        :func:`max_prob` of ``proba``, when the caller has it.
    out : ndarray of shape (n_samples, n_features), float64, optional
        Where to write the features (a view into a larger array is fine, as EENet's
        scorer passes its input block); a new array by default.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
        Float64 (``out`` when given, else C-ordered); each row computed from its own
        row only.
    """
    n_samples, n_classes = proba.shape
    if out is None:
        out = np.empty((n_samples, n_features(n_classes, confidence, class_scores)), dtype=np.float64)
    for i, name in enumerate(confidence):
        if name == "voting":
            out[:, i] = voting
        elif name == "entropy":
            out[:, i] = entropy_confidence(proba, log_proba)
        elif name == "max_prob" and top_proba is not None:
            out[:, i] = top_proba
        else:
            out[:, i] = _MEASURE_FUNCTIONS[name](proba)
    if class_scores:
        out[:, len(confidence) :] = proba
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

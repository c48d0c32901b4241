"""Argument checks shared by every policy: clear errors that name the argument."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

INPUT_TYPES = ("logits", "proba")


def check_costs(costs: object, n_exits: int | None = None) -> np.ndarray:
    """Validate cumulative per-exit costs: 1-D, finite, positive, strictly increasing."""
    if costs is None:
        raise ValueError(
            "costs is required: pass the cumulative cost of each exit, e.g. "
            "EarlyExitPolicy(costs=[1.0, 2.0, 4.0]) or fit(X, y, costs=...)."
        )
    try:
        # A copy: costs_ must not change when the caller later edits their array.
        values = np.array(costs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"costs must be an array of numbers, got {costs!r}.") from exc
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(
            f"costs must be 1-D with one entry per exit (at least 2 exits), got shape {values.shape}."
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"costs must be finite and positive, got {values.tolist()}.")
    if np.any(np.diff(values) <= 0):
        raise ValueError(
            f"costs must be strictly increasing (cumulative cost up to each exit), got {values.tolist()}."
        )
    if n_exits is not None and len(values) != n_exits:
        raise ValueError(
            f"costs has {len(values)} entries but X has {n_exits} exits; they must match."
        )
    return values


def check_budget(budget: object, costs: np.ndarray) -> float:
    """Validate the average budget against the costs: finite and at least ``costs[0]``."""
    if budget is None:
        raise ValueError(
            "budget is required: pass the average cost per sample allowed, in the unit of "
            "costs, to the constructor or to fit."
        )
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise TypeError(f"budget must be a real number, got {budget!r} of type {type(budget).__name__}.")
    budget = float(budget)
    if not np.isfinite(budget):
        raise ValueError(f"budget must be finite, got {budget}.")
    if budget < costs[0]:
        raise ValueError(
            f"budget={budget} is below the first exit's cost {costs[0]}: no policy can meet it."
        )
    return budget


def check_input_type(input_type: object) -> str:
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}.")
    return input_type  # type: ignore[return-value]


def check_exit_outputs(
    X: object,
    n_exits: int,
    n_classes: int | None = None,
    input_type: str = "logits",
    estimator_name: str = "the policy",
) -> np.ndarray:
    """Return per-exit outputs as a ``(n_samples, n_exits, n_classes)`` float array.

    ``X`` may be 3-D or flattened to ``(n_samples, n_exits * n_classes)``. Values
    must be finite; with ``input_type="proba"`` each row must be a distribution.
    ``n_classes`` is given once fitted, and ``estimator_name`` then names the
    policy in errors. The input is never modified.
    """
    array = check_array(
        X,
        dtype=(np.float32, np.float64),
        allow_nd=True,
        ensure_2d=False,  # 1-D gets the error below, which says what X should be
        ensure_all_finite=False,
        input_name="X",
    )
    if array.ndim == 2:
        # Worded as sklearn's n_features_in_ check, which users and tools recognise.
        if n_classes is not None and array.shape[1] != n_exits * n_classes:
            raise ValueError(
                f"X has {array.shape[1]} features, but {estimator_name} is expecting "
                f"{n_exits * n_classes} features as input ({n_exits} exits x {n_classes} classes)."
            )
        if array.shape[1] % n_exits:
            raise ValueError(
                f"X has {array.shape[1]} feature(s), which is not a multiple of the "
                f"{n_exits} exits (one per entry of costs); expected (n_samples, "
                "n_exits * n_classes) or (n_samples, n_exits, n_classes)."
            )
        array = array.reshape(array.shape[0], n_exits, -1)
    elif array.ndim != 3:
        raise ValueError(
            f"X must be 3-D (n_samples, n_exits, n_classes) or 2-D flattened, got {array.ndim}-D"
            + (" (for a single sample, pass X[None])." if array.ndim < 2 else ".")
        )
    if array.shape[1] != n_exits:
        raise ValueError(
            f"X has {array.shape[1]} exits, expected {n_exits} (one per entry of costs)."
        )
    if array.shape[2] < 2:
        raise ValueError(f"X has {array.shape[2]} class column(s) per exit, expected at least 2.")
    if n_classes is not None and array.shape[2] != n_classes:
        raise ValueError(
            f"X has {array.shape[2]} classes per exit, but the policy was fitted with {n_classes}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("X contains NaN or infinity; per-exit outputs must be finite.")
    if input_type == "proba":
        if array.min() < 0 or array.max() > 1:
            raise ValueError('X holds values outside [0, 1] but input_type="proba".')
        sums = array.sum(axis=-1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            raise ValueError('X rows do not sum to 1 but input_type="proba"; pass logits instead.')
    return array


def check_exit_prefix(X: object, n_exits: int, n_classes: int, input_type: str) -> np.ndarray:
    """Return the outputs of exits ``0..k`` as a ``(n_samples, k + 1, n_classes)`` float array.

    What a fitted policy decides from at exit ``k`` during early-exit inference.
    """
    n_seen = np.shape(X)[1] if np.ndim(X) == 3 else None
    if n_seen is None or not 1 <= n_seen <= n_exits:
        raise ValueError(
            f"X must be 3-D (n_samples, k + 1, n_classes), the outputs of exits 0..k with "
            f"k < {n_exits}, got shape {np.shape(X)}."
        )
    return check_exit_outputs(X, n_seen, n_classes, input_type)


def check_target(y: object, estimator_name: str) -> np.ndarray:
    """Validate class labels before anything else: present, 1-D and categorical."""
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None."
        )
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)  # "Unknown label type: continuous" for real-valued y
    return y


def encode_labels(
    y: object, n_samples: int, n_classes: int, classes: object = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to logit columns.

    Returns ``classes_`` (the label of each column) and the column index of each label.
    Without ``classes``, the sorted distinct labels name the columns and must be as
    many as the columns.
    """
    y = column_or_1d(y)
    if len(y) != n_samples:
        raise ValueError(f"y has {len(y)} labels but X has {n_samples} samples.")
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(
            f"y holds 1 class ({present[0].item()!r}); a policy needs at least 2 classes."
        )
    if classes is None:
        if len(present) != n_classes:
            raise ValueError(
                f"y has {len(present)} distinct classes but X has {n_classes} class columns; "
                "pass classes=[...] to name the label of each column."
            )
        labels = present
    else:
        labels = np.array(classes)  # a copy, so that classes_ never aliases the caller's array
        if labels.ndim != 1 or len(labels) != n_classes or len(np.unique(labels)) != n_classes:
            raise ValueError(
                f"classes must list {n_classes} distinct labels, one per logit column, got {classes!r}."
            )
    order = np.argsort(labels, kind="stable")
    positions = np.searchsorted(labels[order], y).clip(max=n_classes - 1)
    columns = order[positions]
    unknown = labels[columns] != y
    if np.any(unknown):
        raise ValueError(f"y holds labels not in classes: {np.unique(y[unknown]).tolist()}.")
    return labels, columns

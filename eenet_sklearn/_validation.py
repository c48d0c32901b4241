"""Argument checks shared by every policy: clear errors that name the argument."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

INPUT_TYPES = ("logits", "proba")

#: Float dtypes whose every value float64 holds: validated without a conversion.
_FLOATS = (np.float16, np.float32, np.float64)

#: What per-exit outputs must be, in error messages.
EXIT_OUTPUTS = (
    "per-exit outputs, an array of real numbers of shape (n_samples, n_exits, n_classes) "
    "or (n_samples, n_exits * n_classes)"
)

_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 3

#: The longest an argument's value is shown in an error message, in characters.
_MAX_SHOWN = 120


def format_number(value: object) -> str:
    """A number for an error message: at most 6 significant digits (``1.0``, ``0.010824``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.number)):
        return _SHORT.repr(value)
    if isinstance(value, (Integral, np.integer)):
        return str(int(value))
    return repr(float(f"{float(value):.6g}"))


def format_values(values: object, max_items: int = 8) -> str:
    """An abbreviated list of an array's values: numbers at 6 significant digits,
    at most ``max_items`` entries (the first and last three of longer arrays)."""
    flat = np.ravel(np.asarray(values, dtype=object))
    shown = list(flat) if flat.size <= max_items else [*flat[:3], ..., *flat[-3:]]
    items = []
    for value in shown:
        if value is ...:
            items.append("...")
        elif isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_, complex)):
            items.append(format_number(value))
        elif isinstance(value, (complex, np.complexfloating)):
            items.append(repr(complex(float(f"{value.real:.6g}"), float(f"{value.imag:.6g}"))))
        else:
            items.append(_SHORT.repr(value.item() if isinstance(value, np.generic) else value))
    return "[" + ", ".join(items) + "]"


def describe(value: object) -> str:
    """An argument as error messages show it: short, never a whole array."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}: {format_values(value)}"
    shown = _SHORT.repr(value)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + " ..."


def as_real_array(value: object, name: str, expected: str, *, allow_bool: bool = True) -> np.ndarray:
    """``np.asarray(value)``, refusing what would silently turn into wrong numbers.

    Numeric strings (which NumPy would parse), complex numbers (which would lose their
    imaginary part), ragged nested sequences, sparse matrices and other non-numeric
    values raise an error naming the argument, the value (abbreviated) and ``expected``:
    a ``ValueError`` for ragged sequences and complex numbers (as scikit-learn raises),
    a ``TypeError`` otherwise.
    The array returned may share memory with ``value``: callers must not write into it.
    """
    if scipy.sparse.issparse(value):
        raise TypeError(
            f"{name} must be {expected}, got a sparse {type(value).__name__}; pass a dense array."
        )
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        # Ragged nested sequences (NumPy's "inhomogeneous shape"), tensors off the CPU, ...
        raise ValueError(f"{name} must be {expected}, got {describe(value)} ({exc})") from None
    kind = array.dtype.kind
    if kind == "O":
        # An object array (of Python numbers, say): judged by one value of each type in it.
        examples: dict[type, Any] = {}  # any Python objects
        for item in array.flat:
            examples.setdefault(type(item), item)
        if any(np.ndim(item) for item in examples.values()):
            raise ValueError(
                f"{name} must be {expected}, got a ragged nested sequence (rows of different "
                f"lengths): {describe(value)}."
            )
        kinds = {np.asarray(item).dtype.kind for item in examples.values()}
        kind = next((k for k in "USVMmcOb" if k in kinds), "f")
    accepted = "biuf" if allow_bool else "iuf"
    if kind in accepted:
        return array
    if kind == "c":  # a ValueError, worded as scikit-learn's (which its common checks expect)
        raise ValueError(
            f"{name} must be {expected}, got complex numbers (Complex data not supported: the "
            f"imaginary part would be lost): {describe(array)}."
        )
    if kind in "US":
        what = "strings (numeric strings are not parsed: convert them to numbers first)"
    elif kind == "b":
        what = "booleans"
    else:
        what = f"values of dtype {array.dtype}"
    raise TypeError(f"{name} must be {expected}, got {what}: {describe(array)}.")


def check_costs(costs: object, n_exits: int | None = None) -> np.ndarray:
    """Validate cumulative per-exit costs: 1-D, finite, positive, strictly increasing."""
    if costs is None:
        raise ValueError(
            "costs is required: pass the cumulative cost of each exit, e.g. "
            "EarlyExitPolicy(costs=[1.0, 2.0, 4.0]) or fit(X, y, costs=...)."
        )
    expected = "an array of numbers, the cumulative cost of each exit"
    # A copy: costs_ must not change when the caller later edits their array.
    values = as_real_array(costs, "costs", expected, allow_bool=False).astype(np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(
            f"costs must be 1-D with one entry per exit (at least 2 exits), got shape {values.shape}: "
            f"{format_values(values)}."
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"costs must be finite and positive, got {format_values(values)}.")
    if np.any(np.diff(values) <= 0):
        k = int(np.flatnonzero(np.diff(values) <= 0)[0])
        before, after = format_number(values[k]), format_number(values[k + 1])
        if before == after and values[k] != values[k + 1]:  # equal at 6 digits: show them all
            before, after = repr(float(values[k])), repr(float(values[k + 1]))
        raise ValueError(
            "costs must be strictly increasing (cumulative cost up to each exit), got "
            f"{format_values(values)}: costs[{k + 1}]={after} is not above costs[{k}]={before}."
        )
    if n_exits is not None and len(values) != n_exits:
        raise ValueError(
            f"costs has {len(values)} entries but X has {n_exits} exits; they must match."
        )
    return values


def check_budget(budget: object, costs: np.ndarray, name: str = "budget") -> float:
    """Validate the average budget against the costs: finite and at least ``costs[0]``.

    ``name`` names the argument in errors (``"budgets"`` for one of several).
    """
    if budget is None:
        raise ValueError(
            f"{name} is required: pass the average cost per sample allowed, in the unit of "
            "costs, to the constructor or to fit."
        )
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise TypeError(
            f"{name} must be a real number, got {describe(budget)} of type {type(budget).__name__}."
        )
    budget = float(budget)
    if not np.isfinite(budget):
        raise ValueError(f"{name} must be finite, got {budget}.")
    if budget < costs[0]:
        raise ValueError(
            f"{name}={format_number(budget)} is below the first exit's cost "
            f"{format_number(costs[0])}: no policy can meet it."
        )
    return budget


def check_budgets(budgets: object, costs: np.ndarray, name: str = "budgets") -> list[float]:
    """Validate a sequence of budgets, each as :func:`check_budget` does; a list of floats."""
    if not isinstance(budgets, Iterable) or isinstance(budgets, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {describe(budgets)}.")
    return [check_budget(budget, costs, name) for budget in budgets]


def check_input_type(input_type: object) -> str:
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}.")
    return input_type


def check_exit_outputs(
    X: object,
    n_exits: int,
    n_classes: int | None = None,
    input_type: str = "logits",
    estimator_name: str = "the policy",
    name: str = "X",
) -> np.ndarray:
    """Return per-exit outputs as a ``(n_samples, n_exits, n_classes)`` real array.

    ``X`` may be 3-D or flattened to ``(n_samples, n_exits * n_classes)``. Values
    must be real numbers (no strings, no complex numbers) and finite; with
    ``input_type="proba"`` each row must be a distribution. ``n_classes`` is given
    once fitted, and ``estimator_name`` then names the policy in errors; ``name``
    names the argument. The input is never modified.

    An ndarray of booleans (read as 0 and 1), integers, float16, float32 or float64 is
    returned in its own dtype, without a copy: its readers convert each exit to float64
    (``_features``), so that identical values give identical results in every dtype
    and memory beyond the result stays small. Anything else is converted by
    ``check_array`` (to float64, or float32).
    """
    # A real ndarray is validated as it is: a float64 copy of float16 or int16 outputs
    # would take 4 times their memory, and a per-exit decision stays cheap. Long doubles
    # are converted here: a finite one may overflow float64.
    raw: np.ndarray
    if type(X) is np.ndarray and (X.dtype.kind in "biu" or X.dtype in _FLOATS):
        raw, fast = X, True
    else:
        raw, fast = as_real_array(X, name, EXIT_OUTPUTS), False
    if raw.size == 0:
        # Worded as scikit-learn words it, which its common checks look for.
        if raw.ndim >= 1 and raw.shape[0] == 0:
            what = "0 sample(s)"
        else:
            what = "0 feature(s)" if raw.ndim == 2 else "an axis of length 0"
        raise ValueError(
            f"{name} has {what} (shape={raw.shape}) while a minimum of 1 is required: "
            f"expected {EXIT_OUTPUTS}."
        )
    array = raw if fast else check_array(
        X,  # as given: check_array's dtype choice for lists and frames is kept
        # Other dtypes (integers, float16) become float64, which holds them exactly.
        dtype=(np.float64, np.float32),
        allow_nd=True,
        ensure_2d=False,  # 1-D gets the error below, which says what X should be
        ensure_all_finite=False,
        input_name=name,
    )
    if array.ndim == 2:
        # Worded as sklearn's n_features_in_ check, which users and tools recognise.
        if n_classes is not None and array.shape[1] != n_exits * n_classes:
            raise ValueError(
                f"{name} has {array.shape[1]} features, but {estimator_name} is expecting "
                f"{n_exits * n_classes} features as input ({n_exits} exits x {n_classes} classes)."
            )
        if array.shape[1] % n_exits:
            raise ValueError(
                f"{name} has {array.shape[1]} feature(s), which is not a multiple of the "
                f"{n_exits} exits (one per entry of costs); expected (n_samples, "
                "n_exits * n_classes) or (n_samples, n_exits, n_classes)."
            )
        array = array.reshape(array.shape[0], n_exits, -1)
    elif array.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D (n_samples, n_exits, n_classes) or 2-D flattened, got "
            f"{array.ndim}-D" + (f" (for a single sample, pass {name}[None])." if array.ndim < 2 else ".")
        )
    if array.shape[1] != n_exits:
        raise ValueError(
            f"{name} has {array.shape[1]} exits, expected {n_exits} (one per entry of costs)."
        )
    if array.shape[2] < 2:
        raise ValueError(f"{name} has {array.shape[2]} class column(s) per exit, expected at least 2.")
    if n_classes is not None and array.shape[2] != n_classes:
        raise ValueError(
            f"{name} has {array.shape[2]} classes per exit, but the policy was fitted with {n_classes}."
        )
    # min and max propagate NaN and reach infinities: finiteness checked without a
    # temporary of the size of X (np.isfinite would make one).
    if not (np.isfinite(array.min()) and np.isfinite(array.max())):
        raise ValueError(f"{name} contains NaN or infinity; per-exit outputs must be finite.")
    if input_type == "proba":
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f'{name} holds values outside [0, 1] but input_type="proba".')
        # float32 sums in float32, the others in float64, as the float64 copy of them
        # was summed (float16 sums would round to float16).
        sums = array.sum(axis=-1, dtype=None if array.dtype == np.float32 else np.float64)
        if not np.allclose(sums, 1.0, atol=1e-3):
            raise ValueError(f'{name} rows do not sum to 1 but input_type="proba"; pass logits instead.')
    return array


def check_exit_prefix(X: object, n_exits: int, n_classes: int, input_type: str) -> np.ndarray:
    """Return the outputs of exits ``0..k`` as a ``(n_samples, k + 1, n_classes)`` float array.

    What a fitted policy decides from at exit ``k`` during early-exit inference.
    """
    expected = f"the outputs of exits 0..k with k < {n_exits}, of shape (n_samples, k + 1, n_classes)"
    raw = as_real_array(X, "X", expected)
    if raw.ndim != 3 or not 1 <= raw.shape[1] <= n_exits:
        raise ValueError(
            f"X must be 3-D (n_samples, k + 1, n_classes), the outputs of exits 0..k with "
            f"k < {n_exits}, got shape {raw.shape}."
        )
    return check_exit_outputs(X, raw.shape[1], n_classes, input_type)


def check_target(y: object, estimator_name: str, name: str = "y", warn: bool = True) -> np.ndarray:
    """Validate class labels before anything else: present, 1-D and categorical.

    ``name`` names the argument in errors; ``warn`` warns on a column vector.
    """
    if y is None:
        raise ValueError(
            f"{estimator_name} requires {name} to be passed, but the target {name} is None."
        )
    expected = "class labels (integers or strings), an array of shape (n_samples,)"
    try:
        labels = np.asarray(y)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be {expected}, got {describe(y)} ({exc})") from None
    if labels.dtype.kind == "c":
        raise ValueError(
            f"{name} must be {expected}, got complex numbers (Complex data not supported): "
            f"{describe(labels)}."
        )
    try:
        target: np.ndarray = column_or_1d(y, warn=warn)
    except ValueError as exc:
        raise ValueError(f"{name} must be {expected}: {exc}") from None
    try:
        check_classification_targets(target)
    except ValueError:
        kind = type_of_target(target, input_name=name)
        raise ValueError(
            f"{name} must be {expected}, got {describe(target)}: Unknown label type: {kind}."
        ) from None
    return target


def encode_labels(
    y: object, n_samples: int, n_classes: int, classes: object = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to logit columns.

    Returns ``classes_`` (the label of each column) and the column index of each label.
    Without ``classes``, the sorted distinct labels name the columns and must be as
    many as the columns.
    """
    target: np.ndarray = column_or_1d(y)
    if len(target) != n_samples:
        raise ValueError(f"y has {len(target)} labels but X has {n_samples} samples.")
    present = np.unique(target)
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
                f"classes must list {n_classes} distinct labels, one per logit column, got "
                f"{describe(classes)}."
            )
    order = np.argsort(labels, kind="stable")
    positions = np.searchsorted(labels[order], target).clip(max=n_classes - 1)
    columns = order[positions]
    unknown = labels[columns] != target
    if np.any(unknown):
        raise ValueError(f"y holds labels not in classes: {format_values(np.unique(target[unknown]))}.")
    return labels, columns


def check_positions(position: object, name: str = "position") -> np.ndarray:
    """Validate budget positions: finite numbers in ``[0, 1]``, a scalar or a 1-D array.

    A position is a budget given as a share of the way from the first exit's cost (0)
    to the last exit's cost (1). Returns a float array of the input's shape (0-D for a
    scalar); ``name`` names the argument in errors.
    """
    try:
        raw = np.asarray(position)
    except (TypeError, ValueError) as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {position!r}.") from exc
    # Real numbers only: no booleans, no numeric strings, no complex numbers.
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {position!r}.")
    values = raw.astype(np.float64)  # a copy
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"{name} must be a number or a non-empty 1-D array, got shape {values.shape}.")
    bad = values[~((values >= 0.0) & (values <= 1.0))]  # NaN fails both comparisons
    if bad.size:
        raise ValueError(
            f"{name} must lie in [0, 1] (0: the first exit's cost, 1: the last exit's cost), "
            f"got {bad.tolist()}."
        )
    return values

"""Policy files: a fitted policy as a reviewable file that runs no code when loaded.

A policy file is a zip archive, readable by ``numpy.load(path, allow_pickle=False)`` and by any
zip tool, holding

- ``manifest.json``, plain text: the format's name and version, the library version that wrote
  it, the policy's class, its constructor parameters and its fitted attributes (costs, budget,
  thresholds, classes, exit fractions...), a table of the array members with their dtype and
  shape, and a SHA-256 checksum over all of it;
- one ``.npy`` member per weight matrix (EENet's scorer heads, the coefficients of a
  ``LearnedScorePolicy``'s classifiers), named by where it sits in the manifest.

Loading reads JSON and ``.npy`` arrays only: no pickle anywhere, every array header checked
against the bytes the member holds before anything is allocated, and objects built only from an
allow-list of this library's policy classes (and two scikit-learn classifiers, restored from their
arrays), in the spirit of skops' trusted types. The loaded policy predicts with NumPy: loading
imports neither torch nor skorch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from ._anytime import AnytimeEnsemble
from ._atomic import atomic_write
from ._baselines import EntropyPolicy, FixedExitPolicy, LearnedScorePolicy, MaxProbPolicy, PatiencePolicy
from ._eenet import EarlyExitPolicy
from ._features import check_confidence, n_features
from ._npz import open_npz
from ._risk_control import RiskControlledPolicy
from .base import BaseExitPolicy

__all__ = ["FORMAT_VERSION", "PolicyFileError", "load_policy", "save_policy"]

#: What the manifest's ``format`` says.
FORMAT_NAME = "eenet-sklearn policy"
#: The version of the file format this library writes; it reads this version and older ones.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: A manifest larger than this is refused before it is read.
_MAX_MANIFEST_BYTES = 16 << 20
#: The manifest's inline values may take this many bytes in memory, plus 16 per byte of it.
_MIN_INLINE_BYTES = 1 << 20

#: The policy classes a file may name: the allow-list. Adding a policy class is one entry.
_POLICY_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        EarlyExitPolicy,
        MaxProbPolicy,
        EntropyPolicy,
        PatiencePolicy,
        FixedExitPolicy,
        LearnedScorePolicy,
        RiskControlledPolicy,
        AnytimeEnsemble,
    )
}
#: Vectors up to this length are written into the manifest, where a reviewer reads them;
#: longer ones (and every matrix) go into ``.npy`` members.
_MAX_INLINE = 1024
#: Fitted attributes that are not written, by class: EENet's skorch net, whose weights are
#: written as the NumPy heads prediction reads (``_heads``), the one stored form of them.
_NOT_WRITTEN: dict[str, frozenset[str]] = {"EarlyExitPolicy": frozenset({"scorer_"})}
#: Attributes of any object that are not written: scikit-learn's metadata-routing requests.
_NEVER_WRITTEN = frozenset({"_metadata_request"})
#: Parameters that do not affect prediction and are written as ``None`` when their value
#: cannot be (a ``RandomState`` instance), with a warning.
_REPLACEABLE_PARAMS = frozenset({"random_state"})
#: The scikit-learn classifiers a ``LearnedScorePolicy`` file may hold, restored from their
#: parameters and fitted arrays: its default and the constant scorer of a one-class exit.
_ESTIMATOR_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (LogisticRegression, DummyClassifier)
}
#: Attribute names a file may set: identifiers, nothing dunder.
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
_FLOAT_WORDS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class PolicyFileError(ValueError):
    """A file is not a policy file this library can load: damaged, tampered with or foreign.

    Raised by :func:`load_policy` for a file that is truncated or not a zip archive, lacks
    or has an unreadable manifest, was written by a newer format version, fails its
    checksum (edited or damaged after it was written), names a class outside the allow-list,
    or holds arrays whose dtype or shape does not fit the policy. The message names the file
    and the problem. A subclass of ``ValueError``.

    See Also
    --------
    load_policy : Where it is raised.
    """


class _Unwritable(TypeError):
    """A value that a policy file cannot hold; ``where`` is its place in the manifest."""

    def __init__(self, where: str, value: object):
        super().__init__(where)
        self.where, self.value = where, value


# --- Writing -------------------------------------------------------------------------------


class _Writer:
    """Turns a policy into JSON-ready nodes, collecting the arrays that go into members."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.replaced: list[str] = []
        self.converted: list[str] = []

    def value(self, value: object, where: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            return self._scalar(value, where)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, list):
            return [self.value(item, f"{where}.{i}") for i, item in enumerate(value)]
        if isinstance(value, tuple):
            items = [self.value(item, f"{where}.{i}") for i, item in enumerate(value)]
            return {"type": "tuple", "items": items}
        if isinstance(value, dict):
            items = []
            for i, (key, item) in enumerate(value.items()):
                if not (key is None or isinstance(key, (bool, int, float, str))):
                    raise _Unwritable(f"{where} (a key)", key)
                items.append([self.value(key, f"{where}.key{i}"), self.value(item, f"{where}.{i}")])
            return {"type": "dict", "items": items}
        if type(value) in _POLICY_CLASSES.values():
            return self.policy(value, where)  # type: ignore[arg-type]
        if type(value) in _ESTIMATOR_CLASSES.values():
            return self._estimator(value, where)
        if hasattr(value, "__array__") and not isinstance(value, type):
            # An array-like (a pandas Series of costs, say) is written as the array it holds.
            array = np.asarray(value)
            if array.dtype.kind in "biufU":
                self.converted.append(f"{where} ({type(value).__name__})")
                return self._array(array, where)
        raise _Unwritable(where, value)

    def policy(self, policy: BaseExitPolicy, where: str) -> dict[str, Any]:
        name = type(policy).__name__
        content = self._object(policy, where, _NOT_WRITTEN.get(name, frozenset()))
        return {"type": "policy", "class": name, **content}

    def _estimator(self, estimator: Any, where: str) -> dict[str, Any]:
        content = self._object(estimator, where, frozenset())
        return {"type": "estimator", "class": type(estimator).__name__, **content}

    def _object(self, obj: Any, where: str, skip: frozenset[str]) -> dict[str, Any]:
        params = obj.get_params(deep=False)
        written = {}
        for name, value in params.items():
            try:
                written[name] = self.value(value, f"{where}.params.{name}")
            except _Unwritable:
                if name not in _REPLACEABLE_PARAMS:
                    raise
                written[name] = None
                self.replaced.append(f"{type(obj).__name__}.{name}={value!r}")
        fitted = {
            name: self.value(value, f"{where}.{name}")
            for name, value in vars(obj).items()
            if name not in params and name not in skip and name not in _NEVER_WRITTEN
        }
        return {"params": written, "fitted": fitted}

    def _scalar(self, value: np.generic, where: str) -> dict[str, Any]:
        dtype = value.dtype
        if dtype.kind not in "biufU":
            raise _Unwritable(where, value)
        return {"type": "scalar", "dtype": dtype.str, "value": _plain(value.item())}

    def _array(self, array: np.ndarray, where: str) -> dict[str, Any]:
        dtype = array.dtype
        node: dict[str, Any] = {"type": "array", "dtype": dtype.str, "shape": list(array.shape)}
        if dtype.kind == "O":
            # Labels given as Python objects (strings, numbers): written inline, element by element.
            items = [_python(item) for item in array] if array.ndim == 1 else None
            if items is None or not all(_is_label(item) for item in items):
                raise _Unwritable(where, array)
            node["dtype"] = "object"
            node["values"] = items
        elif dtype.kind not in "biufSU" or dtype.fields is not None:
            raise _Unwritable(where, array)
        elif array.ndim <= 1 and array.size <= _MAX_INLINE and dtype.kind != "S":
            # Small vectors stay in the manifest, where a reviewer reads them.
            values = array.tolist()
            node["values"] = [_plain(v) for v in values] if array.ndim else _plain(values)
        else:
            member = f"{where}.npy"
            self.arrays[member] = np.ascontiguousarray(array)
            node["member"] = member
        return node


def _is_label(value: object) -> bool:
    """Whether an element of an object array of labels can be written: text or a finite number."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (bool, int, str))


def _python(value: object) -> object:
    """A NumPy scalar as the Python scalar it holds; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _is_word(value: object) -> bool:
    """Whether ``value`` is one of the words that stand for non-finite floats."""
    return isinstance(value, str) and value in _FLOAT_WORDS


def _plain(value: object) -> object:
    """A Python scalar as JSON holds it; non-finite floats as the words ``inf``, ``-inf``, ``nan``."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _checksum(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the manifest (canonical JSON, without its checksum) and every array's bytes."""
    digest = hashlib.sha256()
    content = {key: value for key, value in manifest.items() if key != "sha256"}
    digest.update(json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(array.reshape(-1).view(np.uint8).data)  # the bytes, without a copy
    return digest.hexdigest()


def save_policy(policy: BaseExitPolicy, path: str | os.PathLike[str]) -> None:
    """Write a fitted policy to a policy file: reviewable, versioned, and free of code.

    The file is a zip archive (a NumPy ``.npz``: suffix ``.npz`` recommended) holding
    ``manifest.json``, plain JSON with the policy's class, its constructor parameters and
    fitted attributes (costs, budget, thresholds, classes...), the format version and a
    SHA-256 checksum, and one ``.npy`` member per weight matrix. :func:`load_policy` reads
    it back without pickle, without torch, with decisions identical to ``policy``'s. The file
    is written to a temporary name and renamed into place: an interrupted save leaves no
    partial file at ``path``.

    Parameters
    ----------
    policy : BaseExitPolicy
        A fitted :class:`~eenet_sklearn.EarlyExitPolicy`,
        :class:`~eenet_sklearn.MaxProbPolicy`, :class:`~eenet_sklearn.EntropyPolicy`,
        :class:`~eenet_sklearn.PatiencePolicy`, :class:`~eenet_sklearn.FixedExitPolicy` or
        :class:`~eenet_sklearn.LearnedScorePolicy` (with its default
        ``LogisticRegression`` classifiers), or a :class:`~eenet_sklearn.RiskControlledPolicy`
        or :class:`~eenet_sklearn.AnytimeEnsemble` (its weights and the wrapped fitted
        policy) of them. ``policy`` is not changed.
    path : str or os.PathLike
        Where to write it; an existing file is replaced (keeping its permissions; a new
        file gets the umask's, as ``open`` gives), a symbolic link written through.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the policy is not fitted.
    TypeError
        If ``policy`` is not one of those classes, or holds something a policy file
        cannot (a ``LearnedScorePolicy`` whose classifier is not a ``LogisticRegression``):
        the message names it. Such a policy can be saved with ``joblib.dump``, a pickle,
        which runs code when loaded: load those only from sources you trust.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.

    Warns
    -----
    UserWarning
        If ``random_state`` is a ``RandomState`` instance: it does not affect prediction
        and is written as ``None``. If a value is an array-like other than a NumPy array
        (``costs`` as a pandas Series): it is written, and loads, as a NumPy array.

    See Also
    --------
    load_policy : Reads the file back.

    Notes
    -----
    EENet's skorch net (``scorer_``) is not written: its weights are, as the NumPy heads
    prediction reads. See :func:`load_policy` for what that means for the loaded policy.

    Examples
    --------
    >>> import tempfile, zipfile, json
    >>> from pathlib import Path
    >>> from eenet_sklearn import MaxProbPolicy, load_policy, save_policy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=data.costs, budget=0.03).fit(data.val_logits, data.val_labels)
    >>> path = Path(tempfile.mkdtemp()) / "policy.npz"
    >>> save_policy(policy, path)
    >>> manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))  # what a reviewer reads
    >>> manifest["policy"]["class"], manifest["format_version"]
    ('MaxProbPolicy', 1)
    >>> loaded = load_policy(path)
    >>> bool((loaded.predict_exit(data.test_logits) == policy.predict_exit(data.test_logits)).all())
    True
    """
    if type(policy) not in _POLICY_CLASSES.values():
        raise TypeError(
            f"save_policy writes the policies of eenet_sklearn ({', '.join(_POLICY_CLASSES)}), "
            f"got {type(policy).__name__}."
        )
    check_is_fitted(policy)
    writer = _Writer()
    try:
        node = writer.policy(policy, "policy")
    except _Unwritable as exc:
        raise TypeError(
            f"{type(policy).__name__} holds {type(exc.value).__name__} at {exc.where}, which a policy "
            "file cannot hold (it holds this library's policies, NumPy arrays, numbers and text, and "
            f"the classifiers {', '.join(_ESTIMATOR_CLASSES)} by their arrays). Save it with "
            "joblib.dump(policy, path) instead: a pickle, which runs code when it is loaded, so "
            "load such a file only if you trust where it comes from."
        ) from None
    if writer.converted:
        warnings.warn(
            f"{', '.join(writer.converted)} written as NumPy arrays: loaded, they are arrays (the "
            "decisions are the same)",
            UserWarning,
            stacklevel=2,
        )
    for replaced in writer.replaced:
        warnings.warn(
            f"{replaced} cannot be written to a policy file and does not affect prediction: it is "
            "written as None.",
            UserWarning,
            stacklevel=2,
        )
    from . import __version__

    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "policy": node,
        "arrays": {
            name: {"dtype": array.dtype.str, "shape": list(array.shape)}
            for name, array in writer.arrays.items()
        },
    }
    manifest["sha256"] = _checksum(manifest, writer.arrays)
    _write_atomically(Path(path), manifest, writer.arrays)


def _pretty_json(value: Any, indent: str = "") -> str:
    """JSON for a reader: one entry per line, but lists of numbers or text on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        entries = [f"{inner}{json.dumps(key)}: {_pretty_json(item, inner)}" for key, item in value.items()]
        return "{\n" + ",\n".join(entries) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        entries = [f"{inner}{_pretty_json(item, inner)}" for item in value]
        return "[\n" + ",\n".join(entries) + f"\n{indent}]"
    return json.dumps(value, allow_nan=False)


def _write_atomically(path: Path, manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write the archive whole or not at all (:func:`~eenet_sklearn._atomic.atomic_write`)."""
    import zipfile

    text = _pretty_json(manifest) + "\n"
    with atomic_write(path) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST, text)
        for name, array in arrays.items():
            with archive.open(name, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


# --- Reading -------------------------------------------------------------------------------


class _Reader:
    """Builds values from manifest nodes, with the arrays read from the members."""

    def __init__(self, path: str, arrays: Mapping[str, np.ndarray], inline_bytes: int):
        self.path = path
        self.arrays = arrays
        # What the manifest's own values may take in memory: a small multiple of its size.
        # (A text dtype is as wide as its node says: "<U500000000" would make each value 2 GB.)
        self.inline_bytes_left = inline_bytes

    def error(self, where: str, problem: str) -> PolicyFileError:
        return PolicyFileError(f"{self.path}: {where}: {problem}")

    def value(self, node: Any, where: str) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.value(item, f"{where}.{i}") for i, item in enumerate(node)]
        if not isinstance(node, dict):
            raise self.error(where, f"unexpected JSON value {node!r}")
        kind = node.get("type")
        if kind == "float":
            return self._float(node.get("value"), where)
        if kind == "tuple":
            items = self._list(node, "items", where)
            return tuple(self.value(item, f"{where}.{i}") for i, item in enumerate(items))
        if kind == "dict":
            pairs = self._list(node, "items", where)
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
                raise self.error(where, "a dict's items must be [key, value] pairs")
            keys = [self.value(key, f"{where}.key{i}") for i, (key, _) in enumerate(pairs)]
            if not all(key is None or isinstance(key, (bool, int, float, str)) for key in keys):
                raise self.error(where, "a dict's keys must be text, numbers, booleans or null")
            values = [self.value(value, f"{where}.{i}") for i, (_, value) in enumerate(pairs)]
            return dict(zip(keys, values, strict=True))
        if kind == "scalar":
            dtype = self._dtype(node, where)
            return self._values(np.asarray([node.get("value")], dtype=object), dtype, where)[0]
        if kind == "array":
            return self._array(node, where)
        if kind == "policy":
            return self.policy(node, where)
        if kind == "estimator":
            return self._object(node, where, _ESTIMATOR_CLASSES, "scikit-learn classifiers")
        raise self.error(where, f"unknown value type {kind!r}")

    def policy(self, node: Any, where: str) -> Any:
        if not isinstance(node, dict) or node.get("type") != "policy":
            raise self.error(where, "not a policy")
        policy = self._object(node, where, _POLICY_CLASSES, "policy classes")
        if node["fitted"]:  # a fitted policy (an unfitted one is a parameter of another)
            problem = _shape_problem(policy)
            if problem is not None:
                raise self.error(where, f"{type(policy).__name__} {problem}")
        return policy

    def _object(self, node: dict, where: str, allowed: Mapping[str, type], what: str) -> Any:
        name = node.get("class")
        cls = allowed.get(name) if isinstance(name, str) else None
        if cls is None:
            raise self.error(
                where,
                f"class {name!r} is not one of the {what} a policy file may hold ({', '.join(allowed)})",
            )
        params, fitted = node.get("params"), node.get("fitted")
        if not isinstance(params, dict) or not isinstance(fitted, dict):
            raise self.error(where, f"a {name} needs 'params' and 'fitted' objects")
        values = {key: self.value(value, f"{where}.params.{key}") for key, value in params.items()}
        try:
            obj = cls(**values)
        except TypeError as exc:
            raise self.error(where, f"parameters that {name} does not take ({exc})") from None
        for key, value in fitted.items():
            if not _NAME.fullmatch(key) or hasattr(cls, key) or key in values:
                raise self.error(where, f"{key!r} is not a fitted attribute a file may set")
            setattr(obj, key, self.value(value, f"{where}.{key}"))
        return obj

    def _array(self, node: dict, where: str) -> np.ndarray:
        shape = node.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise self.error(where, f"bad shape {shape!r}")
        if node.get("dtype") == "object":
            values = self._list(node, "values", where)
            if len(shape) != 1 or len(values) != shape[0]:
                raise self.error(where, f"{len(values)} labels for shape {shape}")
            if not all(_is_label(value) for value in values):
                raise self.error(where, "labels must be text or finite numbers")
            labels = np.empty(len(values), dtype=object)
            labels[:] = values
            return labels
        dtype = self._dtype(node, where)
        if "member" in node:
            member = self.arrays.get(node["member"])
            if member is None:
                raise self.error(where, f"no array member {node['member']!r}")
            if member.dtype != dtype or list(member.shape) != shape:
                raise self.error(
                    where,
                    f"member holds {member.dtype.str} {tuple(member.shape)}, "
                    f"manifest says {dtype.str} {tuple(shape)}",
                )
            return member
        raw = node.get("values")
        flat = np.asarray(raw if len(shape) else [raw], dtype=object).reshape(-1)
        if flat.size != math.prod(shape):
            raise self.error(where, f"{flat.size} values for shape {tuple(shape)}")
        return self._values(flat, dtype, where).reshape(shape)

    def _values(self, flat: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
        """JSON values to an array of ``dtype``, exactly, refusing what the dtype cannot hold."""
        kind = dtype.kind
        ok = {
            "b": lambda v: isinstance(v, bool),
            "i": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "u": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "f": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)) or _is_word(v),
            "U": lambda v: isinstance(v, str),
        }[kind]
        if not all(ok(value) for value in flat):
            raise self.error(where, f"values that are not {dtype}")
        self.inline_bytes_left -= flat.size * dtype.itemsize
        if self.inline_bytes_left < 0:
            raise self.error(
                where,
                f"{flat.size} values of {dtype} would take more memory than a manifest of this size "
                "can hold (a text dtype much wider than its values?)",
            )
        try:
            if kind != "f":
                return flat.astype(dtype)
            numbers = [_FLOAT_WORDS.get(v, v) if isinstance(v, str) else v for v in flat]
            values = np.array(numbers, dtype=np.float64)
            with np.errstate(over="ignore"):
                result = values.astype(dtype)
        except (OverflowError, ValueError) as exc:
            raise self.error(where, f"values that are not {dtype} ({exc})") from None
        if not np.array_equal(np.isfinite(result), np.isfinite(values)):
            raise self.error(where, f"values too large for {dtype}")
        return result

    def _dtype(self, node: dict, where: str) -> np.dtype:
        try:
            dtype = np.dtype(node.get("dtype"))
        except (TypeError, ValueError):
            raise self.error(where, f"unknown dtype {node.get('dtype')!r}") from None
        if dtype.kind not in "biufSU" or dtype.fields is not None:
            raise self.error(where, f"dtype {dtype} is not allowed (booleans, numbers and text only)")
        if dtype.kind == "S" and "member" not in node:
            raise self.error(where, "bytes must be stored in a member")
        return dtype

    def _float(self, value: object, where: str) -> float:
        if not _is_word(value):
            raise self.error(where, f"bad float {value!r}")
        return _FLOAT_WORDS[value]  # type: ignore[index]

    def _list(self, node: dict, key: str, where: str) -> list:
        value = node.get(key)
        if not isinstance(value, list):
            raise self.error(where, f"{key!r} must be a list")
        return value


def load_policy(path: str | os.PathLike[str]) -> BaseExitPolicy:
    """Read a policy written by :func:`save_policy`, running no code from the file.

    The file's manifest is JSON and its arrays are ``.npy`` members read without pickle; each
    array's header is checked against the bytes its member holds before anything is
    allocated, the checksum over the manifest and the arrays is verified, the class must be
    one of this library's policies, and the fitted attributes must fit one another (numbers
    of exits and classes, weight shapes). The loaded policy gives the decisions of the policy
    that was saved: the same ``predict_exit``, ``predict``, ``predict_proba``,
    ``exit_scores`` and ``expected_cost``, bit for bit. Loading needs NumPy and
    scikit-learn's estimator base classes; it imports neither torch nor skorch.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_policy` (or by ``eenet-sklearn fit``).

    Returns
    -------
    policy : BaseExitPolicy
        The fitted policy, of the class it was saved as.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    IsADirectoryError
        If ``path`` is a folder.
    PolicyFileError
        If the file is not a policy file (nor starts as one: a pickle with a policy file
        appended is refused, as ``numpy.load`` refuses it), is truncated or damaged, fails
        its checksum (changed since it was written), was written by a newer format version,
        names a class outside the allow-list, or holds attributes of the wrong dtype or
        shape; if what a reviewer reads could differ from what loads (a key or a member
        twice); or if it could make loading allocate far more than its own size
        (compressed members, a text dtype far wider than its values). The message names
        the file and the problem.

    See Also
    --------
    save_policy : Writes the file.

    Notes
    -----
    A loaded :class:`~eenet_sklearn.EarlyExitPolicy` has no ``scorer_`` (the skorch net
    exists only in the process that trained it): its scorer is the NumPy heads that every
    prediction reads, so it predicts, recalibrates (also to a new budget) and pickles without
    torch. Fit it again to get a skorch net.

    The checksum catches damage and edits made without updating it; it is no signature. A
    file from a source you do not trust is still safe to load (no code runs), but its
    decisions are only as good as whoever wrote it: review the manifest.
    """
    path = os.fspath(path)
    try:
        with open_npz(path) as reader:
            reader.check_stored()
            names = reader.member_names()
            if MANIFEST not in names:
                raise PolicyFileError(f"{path} is not a policy file: it has no {MANIFEST}")
            text = reader.read_bytes(MANIFEST, _MAX_MANIFEST_BYTES)
            manifest = _read_manifest(path, text)
            declared = manifest["arrays"]
            members = set(names) - {MANIFEST}
            if members != set(declared):
                extra, missing = sorted(members - set(declared)), sorted(set(declared) - members)
                raise PolicyFileError(
                    f"{path}: its members do not match the manifest's array table "
                    f"(not listed: {extra or 'none'}; missing: {missing or 'none'})"
                )
            arrays = {}
            for name, spec in declared.items():
                key = name[: -len(".npy")]
                shape, dtype = reader.header(key)
                listed = (spec.get("dtype"), spec.get("shape")) if isinstance(spec, dict) else None
                if listed != (dtype.str, list(shape)):
                    raise PolicyFileError(
                        f"{path}: array {key!r} holds {dtype.str} {shape}, the manifest lists {spec!r}"
                    )
                arrays[name] = reader[key]
    except PolicyFileError:
        raise
    except ValueError as exc:
        raise PolicyFileError(str(exc)) from None
    if _checksum(manifest, arrays) != manifest.get("sha256"):
        raise PolicyFileError(
            f"{path}: checksum mismatch: the file was changed or damaged after it was written"
        )
    try:
        builder = _Reader(path, arrays, _MIN_INLINE_BYTES + 16 * len(text))
        policy = builder.policy(manifest["policy"], "policy")
    except RecursionError:
        raise PolicyFileError(f"{path}: {MANIFEST} is nested too deeply") from None
    except PolicyFileError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # What the checks above did not foresee is still a damaged file, not a crash.
        raise PolicyFileError(
            f"{path}: {MANIFEST} holds values no policy can be built from ({exc})"
        ) from None
    _check_fitted(policy, path)
    return policy


def _read_manifest(path: str, text: bytes) -> dict[str, Any]:
    """The parsed manifest, with its format, version and array table checked."""

    def refuse_constant(word: str) -> None:
        raise ValueError(f"non-standard JSON constant {word}")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"number {number} is out of range")
        return value

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # A reviewer reading the text sees the first of two equal keys; json keeps the last.
        content = dict(pairs)
        if len(content) != len(pairs):
            keys = [key for key, _ in pairs]
            raise ValueError(f"duplicate key {next(key for key in keys if keys.count(key) > 1)!r}")
        return content

    try:
        manifest = json.loads(
            text.decode("utf-8"),
            parse_constant=refuse_constant,
            parse_float=finite,
            object_pairs_hook=unique_keys,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PolicyFileError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise PolicyFileError(
            f"{path} is not a policy file: its {MANIFEST} is not an {FORMAT_NAME!r} manifest"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PolicyFileError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise PolicyFileError(
            f"{path} was written in policy file format {version} (by eenet-sklearn "
            f"{manifest.get('library_version', '?')}); this version reads format {FORMAT_VERSION} "
            "and older: upgrade eenet-sklearn"
        )
    if not isinstance(manifest.get("arrays"), dict) or not isinstance(manifest.get("policy"), dict):
        raise PolicyFileError(f"{path}: {MANIFEST} lacks its 'policy' or 'arrays' entry")
    if not all(isinstance(name, str) and name.endswith(".npy") for name in manifest["arrays"]):
        raise PolicyFileError(f"{path}: array members must be .npy files")
    return manifest


def _check_fitted(policy: BaseExitPolicy, path: str) -> None:
    """Check that the loaded policy decides (its attributes were checked as it was built)."""
    try:
        check_is_fitted(policy)
        n_exits, n_classes = policy.n_exits_, policy.n_classes_
        fill = 1.0 / n_classes if getattr(policy, "input_type", "logits") == "proba" else 0.0
        policy.predict_proba(np.full((1, n_exits, n_classes), fill))
    except Exception as exc:  # any failure means the file does not hold a working policy
        raise PolicyFileError(
            f"{path}: the {type(policy).__name__} it holds cannot decide ({type(exc).__name__}: {exc})"
        ) from None


def _shape_problem(policy: BaseExitPolicy) -> str | None:
    """What is wrong with the fitted attributes' types and shapes, or ``None``."""
    state = vars(policy)
    required = ("costs_", "thresholds_", "classes_", "n_exits_", "n_classes_")
    missing = [name for name in required if name not in state]
    if missing:
        return f"lacks the fitted attributes {', '.join(missing)}"
    n_exits, n_classes = state["n_exits_"], state["n_classes_"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (n_exits, n_classes)):
        return f"has n_exits_={n_exits!r}, n_classes_={n_classes!r}: expected positive integers"
    expected = {
        "costs_": (n_exits,), "thresholds_": (n_exits,), "exit_fractions_": (n_exits,),
        "classes_": (n_classes,), "quota_log_weights_": (n_exits,),
    }
    for name, shape in expected.items():
        value = state.get(name)
        if name in state and not (isinstance(value, np.ndarray) and value.shape == shape):
            found = value.shape if isinstance(value, np.ndarray) else type(value).__name__
            return f"has {name} of shape {found}, expected {shape} ({n_exits} exits, {n_classes} classes)"
    for name in ("costs_", "thresholds_", "exit_fractions_"):
        if name in state and state[name].dtype.kind != "f":
            return f"has {name} of dtype {state[name].dtype}, expected floats"
    costs = state["costs_"]
    if not (np.all(np.isfinite(costs)) and np.all(costs > 0) and np.all(np.diff(costs) > 0)):
        return f"has costs_ {costs.tolist()}: expected positive, finite, strictly increasing"
    if isinstance(policy, EarlyExitPolicy):
        return _heads_problem(policy, n_exits, n_classes)
    if isinstance(policy, AnytimeEnsemble):
        return _anytime_problem(policy, n_exits, n_classes)
    if isinstance(policy, LearnedScorePolicy):
        estimators = state.get("estimators_")
        if not isinstance(estimators, list) or len(estimators) != n_exits:
            return f"needs one classifier per exit in estimators_ ({n_exits})"
    return None


def _anytime_problem(policy: AnytimeEnsemble, n_exits: int, n_classes: int) -> str | None:
    """What is wrong with an anytime ensemble's weights or wrapped policy, or ``None``."""
    weights, inner = vars(policy).get("weights_"), vars(policy).get("policy_")
    shape = (n_exits, n_exits)
    if not isinstance(weights, np.ndarray) or weights.shape != shape or weights.dtype.kind != "f":
        return f"needs float weights_ of shape ({n_exits}, {n_exits})"
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and not np.triu(weights, 1).any()):
        return "has weights_ that are not finite, nonnegative and lower-triangular"
    if not isinstance(inner, BaseExitPolicy) or isinstance(inner, AnytimeEnsemble):
        return "needs the fitted wrapped policy in policy_"
    if (vars(inner).get("n_exits_"), vars(inner).get("n_classes_")) != (n_exits, n_classes):
        return f"has a policy_ of another shape than its {n_exits} exits and {n_classes} classes"
    return None


def _heads_problem(policy: EarlyExitPolicy, n_exits: int, n_classes: int) -> str | None:
    """What is wrong with EENet's NumPy scorer heads, or ``None``."""
    heads = vars(policy).get("_heads")
    try:
        confidence = check_confidence(policy._confidence, policy.class_scores)
        width = n_features(n_classes, confidence, policy.class_scores)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"has no valid confidence measures ({exc})"
    if not isinstance(heads, list) or len(heads) != n_exits:
        return f"needs one scorer head per exit in _heads ({n_exits})"
    for k, head in enumerate(heads):
        if not isinstance(head, tuple) or len(head) != 5:
            return f"has a malformed scorer head {k}"
        weight, bias, slope, out_weight, out_bias = head
        arrays = (weight, bias, out_weight, out_bias)
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays) or not all(
            np.all(np.isfinite(a)) for a in arrays
        ):
            return f"has scorer head {k} with arrays that are not finite float32"
        hidden = weight.shape[0]
        shapes = [a.shape for a in arrays]
        if shapes != [(hidden, width + k), (hidden, 1), (1, hidden), (1,)]:
            return (
                f"has scorer head {k} of shapes {shapes}, expected "
                f"{[(hidden, width + k), (hidden, 1), (1, hidden), (1,)]}"
            )
        if not (isinstance(slope, float) and 0.0 <= slope < 1.0):
            return f"has scorer head {k} with slope {slope!r}, expected a float in [0, 1)"
    return None

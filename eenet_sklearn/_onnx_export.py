"""``export_onnx``: a fitted policy's per-exit decisions as ONNX graphs, to serve without Python.

One graph per exit, written as ``exit_<k>.onnx`` in a folder with a ``manifest.json``
beside them. The graph of exit ``k`` is the step of the policy's incremental decider
(:meth:`BaseExitPolicy.exit_decider <eenet_sklearn.base.BaseExitPolicy.exit_decider>`) at
``k``: it reads that exit's outputs for the rows still running and the state carried from
exit ``k - 1``, and returns whether each row leaves, the index of its class, its class
probabilities and the state for exit ``k + 1``. The arithmetic is the decider's, in
float64 (the input is cast first), built from standard ONNX operators only (opset
:data:`OPSET`), so that any ONNX runtime can run it.

Everything here needs the ``onnx`` package (the ``onnx`` extra); nothing needs torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from ._anytime import LOG_FLOOR, SUMS, AnytimeEnsemble
from ._atomic import atomic_write
from ._baselines import (
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from ._eenet import EarlyExitPolicy
from ._features import CONFIDENCE_MEASURES

__all__ = ["OPSET", "export_onnx"]

#: The ONNX operator set the graphs use (ONNX 1.13, ONNX Runtime 1.14 and later read it).
OPSET = 18
#: The ONNX IR version written: the one of opset 18, so that older runtimes load the files.
IR_VERSION = 8
#: Version of the folder's layout (``manifest.json``, file names, input and output names).
FORMAT_VERSION = 1

_INPUT_DTYPES = ("float32", "float64")


def _check_input_dtype(input_dtype: DTypeLike) -> str:
    """``"float32"`` or ``"float64"``, the name of the dtype ``input_dtype`` means.

    Anything ``numpy.dtype`` turns into one of them: a name (``"float32"``,
    ``"f4"``, ``"double"``), a NumPy type (``np.float32``), a dtype, Python's ``float``
    (float64). ``None``, which NumPy reads as float64, is refused: it would not mean
    the default, float32.
    """
    dtype = None
    if input_dtype is not None:
        try:
            dtype = np.dtype(input_dtype)
        except (TypeError, ValueError):
            pass
    if dtype is None or dtype.name not in _INPUT_DTYPES:
        raise ValueError(
            f"input_dtype must be float32 or float64 (a name such as 'float32', or np.float32, "
            f"np.float64), got {input_dtype!r}."
        )
    return dtype.name


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(
            "export_onnx needs the onnx package, which is not installed: install the onnx "
            "extra, pip install 'eenet-sklearn[onnx]' (it also brings onnxruntime to run the "
            "graphs)."
        ) from error
    return onnx


class _Graph:
    """A small builder over ``onnx.helper``: every node has one output, named automatically."""

    def __init__(self, onnx: Any):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0
        self._constants: dict[tuple, str] = {}

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(self.helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        self.nodes.append(self.helper.make_node("Identity", [value], [name]))
        self.outputs.append(self.helper.make_tensor_value_info(name, elem_type, list(shape)))

    def const(self, value: object, dtype: DTypeLike = np.float64) -> str:
        """An initializer holding ``value`` (one per distinct value, dtype and shape)."""
        array: np.ndarray = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = self._name("const")
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def op(self, op_type: str, *inputs: str, **attributes: object) -> str:
        output = self._name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    # Shorthands for the reductions over the classes (axis 1 of an (n, C) tensor).
    def reduce(self, op_type: str, value: str, keepdims: int = 1) -> str:
        return self.op(op_type, value, self.const([1], np.int64), keepdims=keepdims)

    def model(self, name: str, metadata: dict[str, str]) -> Any:
        graph = self.helper.make_graph(
            self.nodes, name, self.inputs, self.outputs, initializer=self.initializers
        )
        model = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="eenet_sklearn",
        )
        self.helper.set_model_props(model, metadata)
        self.onnx.checker.check_model(model, full_check=True)
        return model


def _log_proba(g: _Graph, values: str, input_type: str) -> tuple[str, str]:
    """Class log-probabilities and probabilities (both ``(n, C)`` float64) of one exit.

    As :func:`~eenet_sklearn._features.exit_log_proba_and_proba`: the log-softmax of
    logits (max shifted, then minus the log of the sum of exponentials) and the softmax
    (those exponentials over their sum), or the log of probabilities as given (``-inf``
    for 0) and those probabilities.
    """
    if input_type == "proba":
        return g.op("Log", values), values
    shifted = g.op("Sub", values, g.reduce("ReduceMax", values))
    exps = g.op("Exp", shifted)
    total = g.reduce("ReduceSum", exps)
    return g.op("Sub", shifted, g.op("Log", total)), g.op("Div", exps, total)


def _odds_terms(g: _Graph, log_proba: str) -> tuple[str, str, str, str, str]:
    """``rel, n_top, odds, ref, top`` of :func:`~eenet_sklearn._features._odds_terms`."""
    top = g.reduce("ReduceMax", log_proba)
    rel = g.op("Cast", g.op("Equal", log_proba, top), to=g.onnx.TensorProto.DOUBLE)
    n_top = g.reduce("ReduceSum", rel)
    pushed = g.op("Add", g.op("Mul", rel, g.const(np.finfo(np.float64).min)), log_proba)
    runner_up = g.reduce("ReduceMax", pushed)
    ref = g.op("Where", g.op("Greater", n_top, g.const(1.0)), top, runner_up)
    rel = g.op("Exp", g.op("Sub", pushed, ref))
    odds = g.op("Add", g.reduce("ReduceSum", rel), g.op("Sub", n_top, g.const(1.0)))
    return rel, n_top, odds, ref, top


def _max_prob_logit(g: _Graph, log_proba: str) -> str:
    """:func:`~eenet_sklearn._features.max_prob_logit`, shape ``(n, 1)``."""
    _, _, odds, ref, top = _odds_terms(g, log_proba)
    return g.op("Sub", g.op("Sub", top, ref), g.op("Log", odds))


def _entropy_log_confidence(g: _Graph, log_proba: str, n_classes: int) -> str:
    """:func:`~eenet_sklearn._features.entropy_log_confidence`, shape ``(n, 1)``.

    ONNX has no ``log1p``: ``log1p(E) / E`` is taken as ``log(u) / (u - 1)`` with ``u = 1
    + E`` (exact to a few ulps, Goldberg's formula), and 1 where ``u`` rounds to 1.
    """
    rel, n_top, odds, ref, top = _odds_terms(g, log_proba)
    # A class of probability 0 adds 0 (NumPy's 0 * -inf is NaN, set to 0 there). Taken
    # from log_proba, not rel: some runtimes round exp(-inf) up to a tiny positive number
    # (ONNX Runtime 1.20 gives 5.6e-309), which would make the term -inf.
    terms = g.op("Where", g.op("IsInf", log_proba), g.const(0.0), g.op("Mul", rel, log_proba))
    bracket = g.op("Neg", g.reduce("ReduceSum", terms))
    excess = g.op("Exp", g.op("Add", g.op("Sub", ref, top), g.op("Log", odds)))
    excess = g.op("Max", excess, g.const(np.finfo(np.float64).tiny))
    one = g.const(1.0)
    u = g.op("Add", one, excess)
    ratio = g.op("Where", g.op("Equal", u, one), one, g.op("Div", g.op("Log", u), g.op("Sub", u, one)))
    ratio = g.op("Mul", g.op("Mul", ratio, odds), n_top)
    log_entropy = g.op("Add", g.op("Log", g.op("Add", bracket, ratio)), ref)
    return g.op("Sub", g.const(np.log(np.log(np.float64(n_classes)))), log_entropy)


def _onehot(g: _Graph, label: str, n_classes: int) -> str:
    """``(n, C)`` bool: true at each row's label."""
    column = g.op("Unsqueeze", label, g.const([1], np.int64))
    return g.op("Equal", g.const(np.arange(n_classes)[None, :], np.int64), column)


def _votes(g: _Graph, k: int, label: str, n_classes: int, state: dict[str, str]) -> tuple[str, dict]:
    """The voting measure at exit ``k`` (:func:`~eenet_sklearn._features.step_votes`).

    ``votes`` ``(n, C)`` int64 counts how many exits so far predicted each class,
    ``top_vote`` ``(n,)`` int64 its row maximum.
    """
    onehot = g.op("Cast", _onehot(g, label, n_classes), to=g.onnx.TensorProto.INT64)
    votes = g.op("Add", state["votes"], onehot)
    count = g.reduce("ReduceSum", g.op("Mul", votes, onehot), 0)
    top_vote = g.op("Max", state["top_vote"], count)
    voting = g.op("Div", g.op("Cast", top_vote, to=g.onnx.TensorProto.DOUBLE), g.const(float(k + 1)))
    return g.op("Unsqueeze", voting, g.const([1], np.int64)), {"votes": votes, "top_vote": top_vote}


def _measure(g: _Graph, name: str, proba: str, n_classes: int) -> str:
    """One confidence measure of :mod:`~eenet_sklearn._features` on ``(n, C)`` probabilities, ``(n, 1)``."""
    if name == "max_prob":
        return g.reduce("ReduceMax", proba)
    if name == "entropy":  # 1 - H / log C, with 0 log 0 = 0
        clipped = g.op("Max", proba, g.const(np.finfo(np.float64).smallest_subnormal))
        entropy = g.op("Neg", g.reduce("ReduceSum", g.op("Mul", g.op("Log", clipped), proba)))
        return g.op("Sub", g.const(1.0), g.op("Div", entropy, g.const(np.log(np.float64(n_classes)))))
    if name == "margin":  # top minus runner-up; 0 when the top is reached twice
        top = g.reduce("ReduceMax", proba)
        is_top = g.op("Equal", proba, top)
        second = g.reduce("ReduceMax", g.op("Where", is_top, g.const(-np.inf), proba))
        n_top = g.reduce("ReduceSum", g.op("Cast", is_top, to=g.onnx.TensorProto.INT64))
        return g.op("Sub", top, g.op("Where", g.op("Greater", n_top, g.const(1, np.int64)), top, second))
    raise ValueError(f"unknown confidence measure {name!r}; expected one of {CONFIDENCE_MEASURES}.")


def _features(step: _Step) -> tuple[str, dict[str, str]]:
    """:func:`~eenet_sklearn._features.step_features` at exit ``k``, ``(n, n_features)`` float64.

    Also returns the voting state it updates (none without the voting measure).
    """
    g = step.graph
    columns: list[str] = []
    carried: dict[str, str] = {}
    for name in step.policy._confidence:
        if name == "voting":
            column, carried = _votes(g, step.k, step.label, step.n_classes, step.state)
        else:
            column = _measure(g, name, step.proba, step.n_classes)
        columns.append(column)
    if step.policy.class_scores:
        columns.append(step.proba)
    features = columns[0] if len(columns) == 1 else g.op("Concat", *columns, axis=1)
    return features, carried


@dataclass(frozen=True)
class _Step:
    """What an exit score's graph reads at exit ``k`` (tensor names in ``graph``)."""

    graph: _Graph
    policy: Any
    k: int
    log_proba: str  # (n, C) float64
    proba: str  # (n, C) float64
    label: str  # (n,) int64, the first most probable class
    state: dict[str, str]  # the decider's state from exit k - 1

    @property
    def n_classes(self) -> int:
        return int(self.policy.n_classes_)

    def constant_score(self, value: float) -> str:
        """An ``(n, 1)`` float64 column holding ``value``."""
        g = self.graph
        rows = g.op("Slice", g.op("Shape", self.label), g.const([0], np.int64), g.const([1], np.int64))
        shape = g.op("Concat", rows, g.const([1], np.int64), axis=0)
        fill = g.onnx.numpy_helper.from_array(np.array([value], dtype=np.float64))
        return g.op("ConstantOfShape", shape, value=fill)


# Per policy class: the exit score at exit k, shape (n, 1) float64, and the state it
# passes on (the names it changes).
_Scorer = Callable[[_Step], tuple[str, dict[str, str]]]


def _score_max_prob(step: _Step) -> tuple[str, dict[str, str]]:
    return _max_prob_logit(step.graph, step.log_proba), {}


def _score_entropy(step: _Step) -> tuple[str, dict[str, str]]:
    return _entropy_log_confidence(step.graph, step.log_proba, step.n_classes), {}


def _score_fixed(step: _Step) -> tuple[str, dict[str, str]]:
    return step.constant_score(0.0), {}


def _score_patience(step: _Step) -> tuple[str, dict[str, str]]:
    """The length of the current run of equal predictions; ``run`` and ``previous`` carried."""
    g, state, label = step.graph, step.state, step.label
    same = g.op("Equal", label, state["previous"])
    run = g.op("Where", same, g.op("Add", state["run"], g.const(1.0)), g.const(1.0))
    score = g.op("Unsqueeze", run, g.const([1], np.int64))
    return score, {"run": run, "previous": label}


def _set_column(g: _Graph, table: str, k: int, width: int, column: str) -> str:
    """``table`` ``(n, width)`` with column ``k`` replaced by ``column`` ``(n, 1)``, exactly."""
    parts = [] if k == 0 else [_columns(g, table, 0, k)]
    parts.append(column)
    if k + 1 < width:
        parts.append(_columns(g, table, k + 1, width))
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)


def _columns(g: _Graph, table: str, start: int, stop: int) -> str:
    """Columns ``start:stop`` of an ``(n, m)`` table."""
    return g.op("Slice", table, g.const([start], np.int64), g.const([stop], np.int64), g.const([1], np.int64))


def _score_learned(step: _Step) -> tuple[str, dict[str, str]]:
    """Exit ``k``'s classifier on the features and the scores of exits ``0..k-1``."""
    g, policy, k, state = step.graph, step.policy, step.k, step.state
    features, carried = _features(step)
    inputs = features if k == 0 else g.op("Concat", features, _columns(g, state["scores"], 0, k), axis=1)
    estimator = policy.estimators_[k]
    if isinstance(estimator, DummyClassifier):  # the prior of "right", 0 if never right
        classes = list(estimator.classes_)
        score = step.constant_score(float(estimator.class_prior_[classes.index(1)]) if 1 in classes else 0.0)
    else:
        coef = np.asarray(estimator.coef_, dtype=np.float64).T
        intercept = np.asarray(estimator.intercept_, dtype=np.float64)
        decision = g.op("Add", g.op("MatMul", inputs, g.const(coef)), g.const(intercept))
        score = g.op("Sigmoid", decision)
    scores = _set_column(g, state["scores"], k, policy.n_exits_, score)
    return score, {**carried, "scores": scores}


def _score_eenet(step: _Step) -> tuple[str, dict[str, str]]:
    """EENet's head ``k`` on the features and the utilities of exits ``0..k-1``."""
    g, policy, k, state = step.graph, step.policy, step.k, step.state
    features, carried = _features(step)
    inputs = features if k == 0 else g.op("Concat", features, _columns(g, state["utilities"], 0, k), axis=1)
    weight, bias, slope, out_weight, out_bias = policy._heads[k]
    hidden = g.op(
        "Add",
        g.op("MatMul", inputs, g.const(np.asarray(weight, dtype=np.float64).T)),
        g.const(np.asarray(bias, dtype=np.float64).reshape(1, -1)),
    )
    hidden = g.op("Max", hidden, g.op("Mul", hidden, g.const(float(slope))))
    logit = g.op(
        "Add",
        g.op("MatMul", hidden, g.const(np.asarray(out_weight, dtype=np.float64).T)),
        g.const(np.asarray(out_bias, dtype=np.float64).reshape(1, -1)),
    )
    utility = g.op("Sigmoid", logit)
    utilities = _set_column(g, state["utilities"], k, policy.n_exits_, utility)
    return utility, {**carried, "utilities": utilities}


def _check_learned(policy: LearnedScorePolicy) -> None:
    for k, estimator in enumerate(policy.estimators_):
        supported = type(estimator) is DummyClassifier or (
            type(estimator) is LogisticRegression and np.asarray(estimator.coef_).shape[0] == 1
        )
        if not supported:
            raise TypeError(
                f"export_onnx supports LearnedScorePolicy with LogisticRegression (the default "
                f"estimator) or DummyClassifier per exit; estimators_[{k}] is {estimator!r}. "
                "Use estimator=None (LogisticRegression), or serve the policy from Python."
            )


#: The policy classes export_onnx writes, with the graph of each one's exit score. The
#: state carried from exit to exit is the policy's decider's (same names, shapes, dtypes).
_POLICIES: dict[type, _Scorer] = {
    MaxProbPolicy: _score_max_prob,
    EntropyPolicy: _score_entropy,
    FixedExitPolicy: _score_fixed,
    PatiencePolicy: _score_patience,
    LearnedScorePolicy: _score_learned,
    EarlyExitPolicy: _score_eenet,
}


def _anytime_step(
    g: _Graph, policy: AnytimeEnsemble, k: int, log_proba: str, state: dict[str, str]
) -> tuple[str, str, dict[str, str]]:
    """An anytime ensemble's step at exit ``k``: its log-probabilities, probabilities and sums.

    As :func:`~eenet_sklearn._anytime._step_sums`: ``sums + W[:, k] * max(log_p_k, floor)``
    over every exit, then the log-softmax of column ``k`` of the sums.
    """
    weights = np.asarray(policy.weights_, dtype=np.float64)[:, k].reshape(1, -1, 1)
    floored = g.op("Max", log_proba, g.const(LOG_FLOOR))
    term = g.op("Mul", g.const(weights), g.op("Unsqueeze", floored, g.const([1], np.int64)))
    sums = g.op("Add", state[SUMS], term)
    column = g.op("Squeeze", _exits(g, sums, k), g.const([1], np.int64))
    log_proba, proba = _log_proba(g, column, "logits")
    return log_proba, proba, {SUMS: sums}


def _exits(g: _Graph, table: str, k: int) -> str:
    """Exit ``k`` of an ``(n, K, C)`` table, ``(n, 1, C)``."""
    return g.op("Slice", table, g.const([k], np.int64), g.const([k + 1], np.int64), g.const([1], np.int64))


def _exit_graph(
    policy: Any, k: int, input_dtype: str, initial: dict[str, np.ndarray], metadata: dict[str, str], onnx: Any
) -> Any:
    """The ONNX model of exit ``k``'s decision; ``initial``: the decider's state for one row."""
    n_classes, n_exits = policy.n_classes_, policy.n_exits_
    g = _Graph(onnx)
    input_type = policy.input_type
    element = onnx.TensorProto.FLOAT if input_dtype == "float32" else onnx.TensorProto.DOUBLE
    values = g.op("Cast", g.input(input_type, element, ["n", n_classes]), to=onnx.TensorProto.DOUBLE)
    specs = {
        name: (onnx.helper.np_dtype_to_tensor_dtype(row.dtype), ["n", *row.shape[1:]])
        for name, row in initial.items()
    }
    if k == 0:  # the initial state, one row repeated n times
        rows = g.op("Slice", g.op("Shape", values), g.const([0], np.int64), g.const([1], np.int64))
        state = {}
        for name, row in initial.items():
            shape = g.op("Concat", rows, g.const(row.shape[1:], np.int64), axis=0)
            state[name] = g.op("Expand", g.const(row, row.dtype), shape)
    else:
        state = {name: g.input(name, *specs[name]) for name in initial}
    log_proba, proba = _log_proba(g, values, input_type)
    scored = policy
    ensembled: dict[str, str] = {}  # an anytime ensemble's running sums
    if isinstance(policy, AnytimeEnsemble):
        log_proba, proba, ensembled = _anytime_step(g, policy, k, log_proba, state)
        scored = policy.policy_
    label = g.op("ArgMax", proba, axis=1, keepdims=0)  # the first maximum
    score, carried = _POLICIES[type(scored)](_Step(g, scored, k, log_proba, proba, label, state))
    carried = {**carried, **ensembled}
    if k == n_exits - 1:
        leave = g.op("Equal", label, label)  # everybody leaves at the last exit
    else:
        threshold = g.const([float(policy.thresholds_[k])])
        leave = g.op("Squeeze", g.op("GreaterOrEqual", score, threshold), g.const([1], np.int64))
    g.output(leave, "leave", onnx.TensorProto.BOOL, ["n"])
    g.output(label, "label", onnx.TensorProto.INT64, ["n"])
    g.output(proba, "probabilities", onnx.TensorProto.DOUBLE, ["n", n_classes])
    for name in initial:
        g.output(carried.get(name, state[name]), f"next_{name}", *specs[name])
    return g.model(f"{type(policy).__name__}_exit_{k}", {**metadata, "exit": str(k)})


def export_onnx(policy: Any, path: str | Path, *, input_dtype: DTypeLike = "float32") -> list[Path]:
    """Write a fitted policy's decision at each exit as an ONNX graph, to serve without Python.

    Writes one graph per exit, ``exit_0.onnx`` ... ``exit_<K-1>.onnx``, and a
    ``manifest.json`` into the folder ``path`` (created if needed; files of those names
    are replaced). The graph of exit ``k`` is the step of the policy's incremental
    decider at ``k``: run the network up to exit ``k`` for the rows still running, feed
    that exit's outputs and the state the graph of exit ``k - 1`` returned, keep the
    rows that do not leave (and their state) for exit ``k + 1``.

    Graph of exit ``k``:

    - inputs: ``logits`` (or ``proba`` for a policy fitted with
      ``input_type="proba"``), shape ``(n, n_classes)``, of ``input_dtype``; for
      ``k > 0`` also the state, one input per name in the manifest's ``state``
      (none for exit 0, which starts the state);
    - outputs: ``leave`` ``(n,)`` bool (all true at the last exit), ``label`` ``(n,)``
      int64 (the column of the most probable class, first on ties: the label is
      ``classes[label]`` with the manifest's ``classes``), ``probabilities`` ``(n,
      n_classes)`` float64 (the class probabilities at the exit), and
      ``next_<name>`` for each state name, to feed as input ``<name>`` of the next
      exit's graph after dropping the leaving rows.

    The state is the policy's decider's, with the same names, shapes and types
    (``policy.exit_decider().state_names``): nothing for
    :class:`~eenet_sklearn.MaxProbPolicy`, :class:`~eenet_sklearn.EntropyPolicy` and
    :class:`~eenet_sklearn.FixedExitPolicy`; ``run`` (length of the current run of equal
    predictions, float64) and ``previous`` (the last prediction, int64) for
    :class:`~eenet_sklearn.PatiencePolicy`; for :class:`~eenet_sklearn.EarlyExitPolicy`,
    ``utilities`` ``(n, n_exits)`` float64 (the sigmoid utilities of the exits so far,
    which the next heads read; zeros after ``k``) and, when ``"voting"`` is among its
    confidence measures, ``votes`` ``(n, n_classes)`` int64 (how many exits so far
    predicted each class) and ``top_vote`` ``(n,)`` int64 (the largest of them); for
    :class:`~eenet_sklearn.LearnedScorePolicy`, ``scores`` ``(n, n_exits)`` (the scores
    of the exits so far) and the same voting state. An
    :class:`~eenet_sklearn.AnytimeEnsemble` carries its wrapped policy's state and
    ``ensemble_sums`` ``(n, n_exits, n_classes)`` float64, the running weighted sums of
    the exits' log-probabilities; its ``probabilities`` and ``label`` are the ensemble's.

    The graphs compute in float64 (the input is cast first), with the arithmetic of the
    policy's own decider, in ONNX operator set :data:`OPSET` (IR version 8): ONNX
    Runtime 1.14 or later runs them. Operators round differently from NumPy in the last
    bit or so (the order of a sum, ``exp``, ``log``); the fitted thresholds lie halfway
    between fitting scores, so such rounding changes no decision but that of a sample
    whose score is within a few ulps of a threshold.

    Parameters
    ----------
    policy : fitted policy
        An :class:`~eenet_sklearn.EarlyExitPolicy`, :class:`~eenet_sklearn.MaxProbPolicy`,
        :class:`~eenet_sklearn.EntropyPolicy`, :class:`~eenet_sklearn.PatiencePolicy`,
        :class:`~eenet_sklearn.FixedExitPolicy` or :class:`~eenet_sklearn.LearnedScorePolicy`,
        or an :class:`~eenet_sklearn.AnytimeEnsemble` of one.
        A :class:`~eenet_sklearn.LearnedScorePolicy` must use its default estimator
        (``LogisticRegression``); exits whose correctness was constant hold a
        ``DummyClassifier``, which is supported too.
    path : str or path-like
        The folder to write into.
    input_dtype : {"float32", "float64"} or dtype, default="float32"
        Element type of the graphs' ``logits`` / ``proba`` input: float32 for what a
        float32 network's exported heads return. Anything ``numpy.dtype`` turns into
        float32 or float64 (``np.float32``, ``"f8"``, ``np.dtype("float64")``); the
        manifest records its name.

    Returns
    -------
    list of pathlib.Path
        The files written: the ``K`` graphs in exit order, then ``manifest.json``.

    Raises
    ------
    ImportError
        If the ``onnx`` package is missing (install the ``onnx`` extra).
    sklearn.exceptions.NotFittedError
        If ``policy`` is not fitted.
    TypeError
        If ``policy`` is not one of the classes above (a subclass included: its
        decisions may differ), or is a ``LearnedScorePolicy`` whose estimators are
        not ``LogisticRegression`` / ``DummyClassifier``.
    ValueError
        If ``input_dtype`` is not float32 or float64, or ``path`` is an existing file.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.exit_decider : The same steps in NumPy.
    eenet_sklearn.nn.early_exit_predict : Early-exit inference in Python.

    Notes
    -----
    ``manifest.json`` holds what a server needs besides the graphs: the policy class,
    ``n_exits``, ``n_classes``, ``classes`` (the label of each column, as JSON
    values), ``costs``, ``thresholds``, ``input_type``, ``input_dtype``, ``state`` (the
    state names), the file of each exit, ``opset`` and ``format_version``. The same
    values are in each graph's metadata properties.

    References
    ----------
    ONNX operators: https://onnx.ai/onnx/operators/. The decision rules: F. Ilhan et al.,
    "Adaptive Deep Neural Network Inference Optimization with EENet", arXiv:2301.07099
    (EENet); G. Huang et al., ICLR 2018 (MSDNet's rule, ``MaxProbPolicy``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np, onnxruntime
    >>> from eenet_sklearn import MaxProbPolicy, export_onnx
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=data.costs, budget=0.03).fit(data.val_logits, data.val_labels)
    >>> folder = tempfile.TemporaryDirectory()
    >>> files = export_onnx(policy, Path(folder.name, "policy"))
    >>> [file.name for file in files]
    ['exit_0.onnx', 'exit_1.onnx', 'exit_2.onnx', 'manifest.json']
    >>> session = onnxruntime.InferenceSession(files[0], providers=["CPUExecutionProvider"])
    >>> leave, label, proba = session.run(None, {"logits": data.test_logits[:5, 0]})
    >>> bool(np.array_equal(leave, policy.predict_exit(data.test_logits[:5]) == 0))
    True
    >>> folder.cleanup()
    """
    scored = policy
    if type(policy) is AnytimeEnsemble:
        check_is_fitted(policy)
        scored = policy.policy_
    if type(scored) not in _POLICIES:
        supported = ", ".join(cls.__name__ for cls in _POLICIES)
        raise TypeError(
            f"export_onnx supports fitted {supported}, and AnytimeEnsemble of them; got "
            f"{type(policy).__name__}" + ("" if scored is policy else f" of {type(scored).__name__}") + "."
        )
    check_is_fitted(policy)
    dtype_name = _check_input_dtype(input_dtype)
    if isinstance(scored, LearnedScorePolicy):
        _check_learned(scored)
    onnx = _import_onnx()
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder to write the graphs into, got the file {str(folder)!r}.")
    folder.mkdir(parents=True, exist_ok=True)

    from . import __version__

    decider = policy.exit_decider()
    state_names = list(decider.state_names)
    initial = decider.initial_state(1)
    manifest = {
        "format_version": FORMAT_VERSION,
        "library": f"eenet_sklearn {__version__}",
        "policy": type(policy).__name__,
        "n_exits": int(policy.n_exits_),
        "n_classes": int(policy.n_classes_),
        "classes": np.asarray(policy.classes_).tolist(),
        "costs": [float(cost) for cost in policy.costs_],
        "thresholds": [float(threshold) for threshold in policy.thresholds_],
        "input_type": policy.input_type,
        "input_dtype": dtype_name,
        "state": state_names,
        "opset": OPSET,
        "files": [f"exit_{k}.onnx" for k in range(policy.n_exits_)],
    }
    metadata = {key: json.dumps(value) for key, value in manifest.items() if key != "files"}
    written = []
    for k, name in enumerate(manifest["files"]):
        model = _exit_graph(policy, k, dtype_name, initial, metadata, onnx)
        with atomic_write(folder / name) as file:  # each file whole or not at all
            file.write(model.SerializeToString())  # what onnx.save_model writes, without a path
        written.append(folder / name)
    manifest_path = folder / "manifest.json"
    with atomic_write(manifest_path, text=True) as file:
        file.write(json.dumps(manifest, indent=2) + "\n")
    written.append(manifest_path)
    return written

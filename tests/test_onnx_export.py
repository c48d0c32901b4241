"""export_onnx: the decision graphs, run by ONNX Runtime, decide as the policy does."""

from __future__ import annotations

import doctest
import io
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.naive_bayes import GaussianNB

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
    export_onnx,
)
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, MANY_EXIT_SETS, load_exit_logits

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def serve(folder: Path, X: np.ndarray, decider=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exits, label columns and probabilities from the graphs, exit by exit, leaving rows dropped.

    With ``decider`` (the policy's NumPy decider), also checks after every exit that the
    graphs' leave decisions equal the decider's and their state matches it.
    """
    manifest = json.loads((folder / "manifest.json").read_text())
    sessions = [
        onnxruntime.InferenceSession(folder / name, providers=["CPUExecutionProvider"])
        for name in manifest["files"]
    ]
    n_samples = len(X)
    exits = np.full(n_samples, -1)
    labels = np.full(n_samples, -1)
    proba = np.full((n_samples, X.shape[2]), np.nan)
    rows = np.arange(n_samples)
    state: dict[str, np.ndarray] = {}
    reference = decider.initial_state(n_samples) if decider is not None else None
    for k, session in enumerate(sessions):
        outputs = session.run(None, {manifest["input_type"]: X[rows, k], **state})
        leave, label, chosen = outputs[:3]
        state = dict(zip(manifest["state"], outputs[3:], strict=True))
        if decider is not None:
            expected, _, reference = decider.decide(k, X[rows, k], reference)
            np.testing.assert_array_equal(leave, expected)
            assert set(state) == set(reference)
            for name, value in reference.items():
                assert state[name].dtype == value.dtype and state[name].shape == value.shape, name
                np.testing.assert_allclose(state[name], value, rtol=1e-12, atol=0)
            reference = decider.keep(reference, ~leave)
        exits[rows[leave]], labels[rows[leave]], proba[rows[leave]] = k, label[leave], chosen[leave]
        rows = rows[~leave]
        state = {name: value[~leave] for name, value in state.items()}
        if not len(rows):
            break
    assert not len(rows) and k == exits.max()
    return exits, labels, proba


def check_same_decisions(policy, X: np.ndarray, folder: Path, input_dtype: str = "float32") -> None:
    files = export_onnx(policy, folder, input_dtype=input_dtype)
    assert [file.name for file in files] == [f"exit_{k}.onnx" for k in range(policy.n_exits_)] + [
        "manifest.json"
    ]
    X = X.astype(input_dtype)
    exits, labels, proba = serve(folder, X, policy.exit_decider())
    np.testing.assert_array_equal(exits, policy.predict_exit(X))
    manifest = json.loads((folder / "manifest.json").read_text())
    np.testing.assert_array_equal(np.asarray(manifest["classes"])[labels], policy.predict(X))
    np.testing.assert_allclose(proba, policy.predict_proba(X), rtol=1e-9, atol=1e-300)


def _policies(costs: np.ndarray) -> dict[str, object]:
    budget = costs[0] + 0.3 * (costs[-1] - costs[0])
    return {
        "eenet": EarlyExitPolicy(costs, budget, max_epochs=4, random_state=0, device="cpu"),
        "max_prob": MaxProbPolicy(costs, budget),
        "entropy": EntropyPolicy(costs, budget),
        "patience": PatiencePolicy(costs, budget),
        "fixed": FixedExitPolicy(costs, budget),
        "learned": LearnedScorePolicy(costs, budget),
    }


# The many-exit sets would add about a minute of CPU; their graphs are the same per-exit graphs.
@pytest.mark.parametrize("name", [name for name in EXIT_LOGIT_SETS if name not in MANY_EXIT_SETS])
def test_graphs_decide_as_the_policy_on_the_shipped_sets(name, tmp_path):
    data = load_exit_logits(name)
    for key, policy in _policies(data.costs).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # over-budget settings, small sets: not tested here
            policy.fit(data.val_logits, data.val_labels)
        check_same_decisions(policy, data.test_logits, tmp_path / key)


def _proba_with_zeros(logits: np.ndarray) -> np.ndarray:
    """Softmax probabilities with the small ones set to exactly 0 (log is -inf there)."""
    proba = np.exp(logits - logits.max(axis=-1, keepdims=True))
    proba[proba < 1e-3] = 0.0
    return proba / proba.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "policy",
    [
        MaxProbPolicy(input_type="proba"),
        EntropyPolicy(input_type="proba"),
        PatiencePolicy(input_type="proba"),
        LearnedScorePolicy(confidence=("margin", "entropy"), input_type="proba"),
        EarlyExitPolicy(
            confidence=("margin", "max_prob", "entropy"),
            class_scores=False,
            input_type="proba",
            max_epochs=4,
            random_state=0,
            device="cpu",
        ),
    ],
    ids=lambda policy: type(policy).__name__,
)
def test_graphs_read_probabilities_with_zeros_in_float64(policy, tmp_path):
    data = load_exit_logits("mnist_mlp3")
    val, test = _proba_with_zeros(data.val_logits[:3000]), _proba_with_zeros(data.test_logits[:3000])
    assert (val == 0).mean() > 0.25  # many classes have probability 0
    budget = data.costs[0] + 0.4 * (data.costs[-1] - data.costs[0])
    policy.fit(val, data.val_labels[:3000], costs=data.costs, budget=budget)
    check_same_decisions(policy, test, tmp_path, input_dtype="float64")
    model = onnx.load(tmp_path / "exit_0.onnx")
    assert model.graph.input[0].name == "proba"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_constant_exits_and_string_labels(tmp_path):
    # Exit 1 is always right and exit 0 never: their classifiers are DummyClassifiers.
    data = load_exit_logits("fashion_cnn4")
    X, y = data.val_logits[:2000].copy(), data.val_labels[:2000]
    rows = np.arange(len(y))
    X[:, 0] = 0.0
    X[rows, 0, (y + 1) % 10] = 5.0
    X[:, 1] = 0.0
    X[rows, 1, y] = 5.0
    names = np.array([f"class {c}" for c in range(10)])
    policy = LearnedScorePolicy(costs=data.costs, budget=data.costs[1]).fit(X, names[y])
    assert [type(e) for e in policy.estimators_[:2]] == [DummyClassifier, DummyClassifier]
    check_same_decisions(policy, X, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["classes"] == names.tolist()
    assert manifest["policy"] == "LearnedScorePolicy" and manifest["state"] == ["scores", "votes", "top_vote"]


def test_the_files_are_standard_onnx_at_the_documented_opset(tmp_path):
    data = load_exit_logits("mnist_mlp3")
    policy = PatiencePolicy(data.costs, patience=2).fit(data.val_logits, data.val_labels)
    export_onnx(policy, tmp_path)
    for k in range(3):
        model = onnx.load(tmp_path / f"exit_{k}.onnx")
        onnx.checker.check_model(model, full_check=True)
        assert [(op.domain, op.version) for op in model.opset_import] == [("", 18)]
        assert model.ir_version == 8
        inputs = [value.name for value in model.graph.input]
        outputs = [value.name for value in model.graph.output]
        assert inputs == (["logits"] if k == 0 else ["logits", "run", "previous"])
        assert outputs == ["leave", "label", "probabilities", "next_run", "next_previous"]
        metadata = {prop.key: prop.value for prop in model.metadata_props}
        assert json.loads(metadata["exit"]) == k and json.loads(metadata["opset"]) == 18
    # A single row, and rows in another order, decide as in the whole batch (row by row).
    session = onnxruntime.InferenceSession(tmp_path / "exit_0.onnx", providers=["CPUExecutionProvider"])
    batch = data.test_logits[:50, 0]
    whole = session.run(None, {"logits": batch})
    order = np.random.default_rng(0).permutation(50)
    shuffled = session.run(None, {"logits": batch[order]})
    for whole_output, shuffled_output in zip(whole, shuffled, strict=True):
        np.testing.assert_array_equal(whole_output[order], shuffled_output)
    for row in (0, 17):
        alone = session.run(None, {"logits": batch[row : row + 1]})
        for whole_output, alone_output in zip(whole, alone, strict=True):
            np.testing.assert_array_equal(whole_output[row : row + 1], alone_output)


def test_bad_input_gives_clear_errors(tmp_path):
    data = load_exit_logits("mnist_mlp3")
    with pytest.raises(NotFittedError):
        export_onnx(MaxProbPolicy(data.costs, 0.03), tmp_path)
    policy = LearnedScorePolicy(data.costs, 0.03, estimator=GaussianNB())
    policy.fit(data.val_logits[:2000], data.val_labels[:2000])
    with pytest.raises(TypeError, match=r"estimators_\[0\] is GaussianNB\(\).*LogisticRegression"):
        export_onnx(policy, tmp_path)

    class Shifted(MaxProbPolicy):
        """A subclass whose decisions the exporter cannot know."""

    shifted = Shifted(data.costs, 0.03).fit(data.val_logits, data.val_labels)
    with pytest.raises(TypeError, match=r"supports fitted MaxProbPolicy.*got Shifted"):
        export_onnx(shifted, tmp_path)
    fitted = MaxProbPolicy(data.costs, 0.03).fit(data.val_logits, data.val_labels)
    with pytest.raises(ValueError, match=r"input_dtype must be float32 or float64 .*got 'float16'"):
        export_onnx(fitted, tmp_path, input_dtype="float16")
    file = tmp_path / "file.onnx"
    file.write_bytes(b"")
    with pytest.raises(ValueError, match="path must be a folder"):
        export_onnx(fitted, file)
    assert not list((tmp_path).glob("exit_*.onnx"))


@pytest.mark.parametrize(
    ("input_dtype", "name"),
    [
        (np.float32, "float32"),
        (np.float64, "float64"),
        (np.dtype("float32"), "float32"),
        ("f8", "float64"),
        ("double", "float64"),
        (float, "float64"),
        ("float", "float64"),
    ],
)
def test_input_dtype_takes_what_numpy_reads_as_float32_or_float64(input_dtype, name, tmp_path):
    data = load_exit_logits("mnist_mlp3")
    policy = MaxProbPolicy(data.costs, 0.03).fit(data.val_logits, data.val_labels)
    files = export_onnx(policy, tmp_path, input_dtype=input_dtype)
    assert json.loads(files[-1].read_text())["input_dtype"] == name
    model = onnx.load(files[0])
    element = {"float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE}[name]
    assert model.graph.input[0].type.tensor_type.elem_type == element
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(metadata["input_dtype"]) == name
    session = onnxruntime.InferenceSession(files[0], providers=["CPUExecutionProvider"])
    leave = session.run(None, {"logits": data.test_logits[:20, 0].astype(name)})[0]
    np.testing.assert_array_equal(leave, policy.predict_exit(data.test_logits[:20]) == 0)


@pytest.mark.parametrize("input_dtype", [np.float16, "int32", np.int64, "complex128", None, "nope", 3])
def test_input_dtype_refuses_others_naming_argument_value_and_choices(input_dtype, tmp_path):
    data = load_exit_logits("mnist_mlp3")
    policy = MaxProbPolicy(data.costs, 0.03).fit(data.val_logits, data.val_labels)
    message = rf"input_dtype must be float32 or float64 .*got {re.escape(repr(input_dtype))}\.$"
    with pytest.raises(ValueError, match=message):
        export_onnx(policy, tmp_path, input_dtype=input_dtype)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_the_docstring_example_runs_as_pasted_outside_pytest() -> None:
    # Run with the module's globals only, as in a REPL: no pytest fixtures (getfixture).
    from eenet_sklearn import _onnx_export

    examples = doctest.DocTestFinder().find(_onnx_export)
    (example,) = [test for test in examples if test.name.endswith(".export_onnx")]
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(example, out=output.write)
    assert runner.summarize(verbose=False).failed == 0, output.getvalue()
    assert runner.summarize(verbose=False).attempted > 5


def _run_blocked(code: str, blocked: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` fails."""
    blocker = textwrap.dedent(
        f"""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Blocker())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_missing_onnx_names_the_extra(tmp_path):
    code = """
        import numpy as np
        from eenet_sklearn import FixedExitPolicy, export_onnx
        X = np.zeros((4, 2, 3))
        policy = FixedExitPolicy(costs=[1.0, 2.0], exit=1).fit(X, [0, 1, 2, 0])
        try:
            export_onnx(policy, "out")
        except ImportError as error:
            print("ImportError:", error)
        """
    result = _run_blocked(code, ("onnx",), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ImportError: export_onnx needs the onnx package" in result.stdout
    assert "pip install 'eenet-sklearn[onnx]'" in result.stdout
    assert not (tmp_path / "out").exists()


# torch.onnx.export's own internals warn (a FutureWarning of torch's pytree code).
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_docs_example_serves_a_cnn_without_torch_or_the_library(tmp_path):
    """docs/examples: export a small CNN stage by stage with its policy, then serve it with
    numpy and onnxruntime only (torch, eenet_sklearn and scikit-learn blocked)."""
    import importlib.util

    import torch

    from eenet_sklearn.nn import early_exit_predict, multi_exit_cnn

    spec = importlib.util.spec_from_file_location("export_network_onnx", EXAMPLES / "export_network_onnx.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    torch.manual_seed(0)
    network = multi_exit_cnn(n_classes=5, widths=(4, 8, 8)).eval()
    images = torch.randn(300, 1, 12, 12)
    with torch.no_grad():
        logits = network(images).numpy()
    policy = EarlyExitPolicy(costs=[1.0, 2.0, 3.0], budget=1.8, max_epochs=5, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small fitting set
        policy.fit(logits[:200], np.random.default_rng(0).integers(0, 5, 200))  # stand-in labels
    files = example.export(network, policy, images[:2], tmp_path / "served")
    assert [file.name for file in files[:3]] == ["block_0.onnx", "block_1.onnx", "block_2.onnx"]
    np.save(tmp_path / "images.npy", images[200:].numpy())

    code = f"""
        import runpy
        sys.argv = ["serve_onnx.py", "served", "images.npy", "result.npz"]
        runpy.run_path({str(EXAMPLES / "serve_onnx.py")!r}, run_name="__main__")
        assert not any(name.split(".")[0] in ("torch", "eenet_sklearn", "sklearn") for name in sys.modules)
        """
    result = _run_blocked(code, ("torch", "eenet_sklearn", "sklearn", "skorch"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "100 samples" in result.stdout
    served = np.load(tmp_path / "result.npz")
    expected = early_exit_predict(network, policy, images[200:], batch_size=100)
    np.testing.assert_array_equal(served["exits"], expected.exits)
    np.testing.assert_array_equal(served["labels"], expected.labels)
    np.testing.assert_array_equal(expected.exits, policy.predict_exit(logits[200:]))
    assert len(np.unique(served["exits"])) > 1  # samples leave at several exits

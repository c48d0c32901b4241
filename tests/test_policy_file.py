"""Policy files: save_policy / load_policy round trips, no torch at loading, damaged files refused."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.naive_bayes import GaussianNB
from sklearn.utils import Bunch

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
    PolicyFileError,
    RiskControlledPolicy,
    load_policy,
    save_policy,
)
from eenet_sklearn._policy_file import _checksum
from eenet_sklearn.base import BaseExitPolicy

OUTPUTS = ("predict_exit", "predict", "predict_proba", "exit_scores")

#: Every policy class, unfitted, as a user would build it for given costs and budget (EENet
#: with fast settings).
POLICIES: dict[str, Callable[[np.ndarray, float], BaseExitPolicy]] = {
    "eenet": lambda costs, budget: EarlyExitPolicy(
        costs, budget, max_epochs=2, hidden_size=8, random_state=0, device="cpu"
    ),
    "maxprob": MaxProbPolicy,
    "entropy": EntropyPolicy,
    "patience": PatiencePolicy,
    "fixed": FixedExitPolicy,
    "learned-score": LearnedScorePolicy,
    "risk-controlled": lambda costs, budget: RiskControlledPolicy(
        MaxProbPolicy(costs, budget), max_risk=0.05, random_state=0
    ),
}


@pytest.fixture(scope="module")
def fitted(fashion: Bunch) -> dict[str, BaseExitPolicy]:
    """Each policy fitted on the shipped fashion_cnn4 val logits, 30% of the way up the costs."""
    budget = fashion.costs[0] + 0.3 * (fashion.costs[-1] - fashion.costs[0])
    return {name: make(fashion.costs, budget).fit(fashion.X, fashion.y) for name, make in POLICIES.items()}


def assert_same_decisions(loaded: BaseExitPolicy, policy: BaseExitPolicy, X: np.ndarray) -> None:
    for method in OUTPUTS:
        expected, got = getattr(policy, method)(X), getattr(loaded, method)(X)
        assert got.dtype == expected.dtype, method
        assert_array_equal(got, expected, err_msg=method)
    assert loaded.expected_cost(X) == policy.expected_cost(X)


@pytest.mark.parametrize("name", POLICIES)
def test_round_trip_gives_identical_decisions(
    name: str, fitted: dict[str, BaseExitPolicy], fashion: Bunch, tmp_path: Path
) -> None:
    policy = fitted[name]
    save_policy(policy, tmp_path / "policy.npz")
    loaded = load_policy(tmp_path / "policy.npz")
    assert type(loaded) is type(policy)
    assert_same_decisions(loaded, policy, fashion.X_test)
    # The parameters come back as they were set (tuples as tuples), and so do the thresholds.
    params, loaded_params = policy.get_params(deep=False), loaded.get_params(deep=False)
    assert params.keys() == loaded_params.keys()
    for key, value in params.items():
        if isinstance(value, np.ndarray):
            assert_array_equal(loaded_params[key], value)
        elif isinstance(value, BaseExitPolicy):  # the policy a RiskControlledPolicy wraps
            assert repr(loaded_params[key]) == repr(value)
        else:
            assert loaded_params[key] == value and type(loaded_params[key]) is type(value), key
    assert_array_equal(loaded.thresholds_, policy.thresholds_)
    if hasattr(policy, "exit_decider"):  # the exit-by-exit decision of early-exit inference too
        X = fashion.X_test[:500]
        deciders = [policy.exit_decider(), loaded.exit_decider()]
        states = [decider.initial_state(len(X)) for decider in deciders]
        for k in range(X.shape[1]):
            (leave, proba, states[0]), (leave_2, proba_2, states[1]) = (
                decider.decide(k, X[:, k], state) for decider, state in zip(deciders, states, strict=True)
            )
            assert_array_equal(leave_2, leave)
            assert_array_equal(proba_2, proba)


def test_a_loaded_eenet_has_no_skorch_net_and_still_pickles_and_recalibrates(
    fitted: dict[str, BaseExitPolicy], fashion: Bunch, tmp_path: Path
) -> None:
    policy = fitted["eenet"]
    save_policy(policy, tmp_path / "eenet.npz")
    loaded = load_policy(tmp_path / "eenet.npz")
    assert not hasattr(loaded, "scorer_")
    # Its NumPy heads are its only copy of the weights: pickling keeps them.
    assert_same_decisions(pickle.loads(pickle.dumps(loaded)), policy, fashion.X_test)
    # recalibrate to a new budget needs the quota log-weights, which are saved.
    budget = float(np.mean(fashion.costs[:2]))
    before = pickle.loads(pickle.dumps(policy)).recalibrate(fashion.X_test, budget=budget)
    assert_array_equal(loaded.recalibrate(fashion.X_test, budget=budget).thresholds_, before.thresholds_)


def test_saving_changes_nothing_and_replaces_the_file_whole(
    fitted: dict[str, BaseExitPolicy], tmp_path: Path
) -> None:
    policy = fitted["eenet"]
    state = dict(vars(policy))
    path = tmp_path / "policy.npz"
    path.write_bytes(b"an older file")
    save_policy(policy, path)
    assert vars(policy).keys() == state.keys()
    assert all(vars(policy)[key] is value for key, value in state.items())
    assert [p.name for p in tmp_path.iterdir()] == ["policy.npz"]  # no temporary left behind
    assert zipfile.is_zipfile(path)


def test_the_manifest_is_plain_json_a_reviewer_can_read(
    fitted: dict[str, BaseExitPolicy], fashion: Bunch, tmp_path: Path
) -> None:
    save_policy(fitted["maxprob"], tmp_path / "policy.npz")
    with zipfile.ZipFile(tmp_path / "policy.npz") as archive:
        assert archive.namelist() == ["manifest.json"]  # nothing but JSON for a quota rule
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["format"] == "eenet-sklearn policy" and manifest["format_version"] == 1
    node = manifest["policy"]
    assert node["class"] == "MaxProbPolicy"
    fitted_state = node["fitted"]
    assert fitted_state["costs_"]["values"] == fashion.costs.tolist()
    thresholds = fitted["maxprob"].thresholds_
    assert fitted_state["thresholds_"]["values"][:-1] == thresholds[:-1].tolist()
    assert fitted_state["thresholds_"]["values"][-1] == "-inf"  # strict JSON: no Infinity
    assert fitted_state["classes_"]["values"] == list(range(10))
    assert len(manifest["sha256"]) == 64


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(lambda y: np.array([f"class {v}" for v in y]), id="text"),
        pytest.param(lambda y: np.array([f"c{v}" for v in y], dtype=object), id="objects"),
        pytest.param(lambda y: 100 + 7 * y, id="sparse-ints"),
        pytest.param(lambda y: (y - 5).astype(np.int8), id="negative-int8"),
    ],
)
def test_category_labels_round_trip(labels: Callable, mnist: Bunch, tmp_path: Path) -> None:
    y = labels(np.asarray(mnist.y))
    policy = LearnedScorePolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(mnist.X, y)
    save_policy(policy, tmp_path / "policy.npz")
    loaded = load_policy(tmp_path / "policy.npz")
    assert loaded.classes_.dtype == policy.classes_.dtype
    assert_array_equal(loaded.classes_, policy.classes_)
    assert_array_equal(loaded.predict(mnist.X_test), policy.predict(mnist.X_test))
    assert loaded.score(mnist.X_test, labels(np.asarray(mnist.y_test))) == policy.score(
        mnist.X_test, labels(np.asarray(mnist.y_test))
    )


#: Loads a policy and decides in a process where importing torch or skorch fails.
WITHOUT_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "skorch"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked())
    import numpy as np
    from eenet_sklearn import load_policy

    from eenet_sklearn._cli import main

    policy = load_policy(sys.argv[1])
    X = np.load(sys.argv[2])
    np.save(sys.argv[3], policy.predict_exit(X))
    # Serving chores on the loaded policy: recalibrating it and the command line's predict.
    policy.recalibrate(X)
    np.savez(sys.argv[3] + ".data.npz", logits=X)
    assert main(["predict", sys.argv[1], sys.argv[3] + ".data.npz", "-o", sys.argv[3] + ".out.npz"]) == 0
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "skorch"))
    assert not loaded, loaded
    """
)


def test_loading_and_deciding_needs_no_torch(
    fitted: dict[str, BaseExitPolicy], fashion: Bunch, tmp_path: Path
) -> None:
    policy = fitted["eenet"]
    save_policy(policy, tmp_path / "policy.npz")
    np.save(tmp_path / "X.npy", fashion.X_test)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(tmp_path / "policy.npz"), str(tmp_path / "X.npy"),
         str(tmp_path / "exits.npy")],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert_array_equal(np.load(tmp_path / "exits.npy"), policy.predict_exit(fashion.X_test))
    with np.load(tmp_path / "exits.npy.out.npz") as predicted:
        assert_array_equal(predicted["exits"], policy.predict_exit(fashion.X_test))


# --- what cannot be saved ---------------------------------------------------------------------


def test_an_estimator_without_a_safe_form_is_refused_with_the_way_out(mnist: Bunch, tmp_path: Path) -> None:
    policy = LearnedScorePolicy(costs=mnist.costs, budget=mnist.costs[1], estimator=GaussianNB())
    policy.fit(mnist.X, mnist.y)
    expected = r"holds GaussianNB at policy\.params\.estimator.*joblib\.dump.*trust"
    with pytest.raises(TypeError, match=expected):
        save_policy(policy, tmp_path / "policy.npz")
    assert not (tmp_path / "policy.npz").exists()


def test_an_unfitted_policy_or_another_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        save_policy(MaxProbPolicy(), tmp_path / "policy.npz")
    with pytest.raises(TypeError, match=r"save_policy writes the policies of eenet_sklearn.*got GaussianNB"):
        save_policy(GaussianNB(), tmp_path / "policy.npz")


def test_a_random_state_instance_is_written_as_none(mnist: Bunch, tmp_path: Path) -> None:
    policy = EarlyExitPolicy(
        costs=mnist.costs, budget=mnist.costs[1], max_epochs=1, hidden_size=4, device="cpu",
        random_state=np.random.RandomState(0),
    ).fit(mnist.X, mnist.y)
    with pytest.warns(UserWarning, match="random_state=RandomState.*written as None"):
        save_policy(policy, tmp_path / "policy.npz")
    loaded = load_policy(tmp_path / "policy.npz")
    assert loaded.random_state is None
    assert_array_equal(loaded.predict_exit(mnist.X_test), policy.predict_exit(mnist.X_test))


# --- damaged, tampered and foreign files -------------------------------------------------------


def _members(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        arrays = {
            name: np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
            for name in archive.namelist() if name.endswith(".npy")
        }
    return manifest, arrays


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write(path: Path, manifest: dict, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)


def _forge(path: Path, edit: Callable[[dict, dict[str, np.ndarray]], None]) -> None:
    """Rewrite a policy file after ``edit``, with a checksum that matches the edit."""
    manifest, arrays = _members(path)
    edit(manifest, arrays)
    manifest["sha256"] = _checksum(manifest, arrays)
    _write(path, manifest, {name: _npy(array) for name, array in arrays.items()})


@pytest.fixture
def eenet_file(fitted: dict[str, BaseExitPolicy], tmp_path: Path) -> Path:
    path = tmp_path / "policy.npz"
    save_policy(fitted["eenet"], path)
    return path


def _fitted_node(manifest: dict) -> dict:
    return manifest["policy"]["fitted"]


def _set_format_version(manifest: dict, arrays: dict) -> None:
    manifest["format_version"] = 2


def _shorten_thresholds(manifest: dict, arrays: dict) -> None:
    node = _fitted_node(manifest)["thresholds_"]
    node["values"], node["shape"] = node["values"][:2], [2]


def _narrow_a_head(manifest: dict, arrays: dict) -> None:
    name = "policy._heads.1.0.npy"
    arrays[name] = arrays[name][:, :-1].copy()
    manifest["arrays"][name]["shape"] = list(arrays[name].shape)
    _fitted_node(manifest)["_heads"][1]["items"][0]["shape"] = list(arrays[name].shape)


def _name_another_class(manifest: dict, arrays: dict) -> None:
    manifest["policy"]["class"] = "Pipeline"


def _call_a_function(manifest: dict, arrays: dict) -> None:
    _fitted_node(manifest)["predict_exit"] = "overridden"


def _add_an_object_array(manifest: dict, arrays: dict) -> None:
    _fitted_node(manifest)["extra_"] = {"type": "array", "dtype": "|O", "shape": [1], "member": "x.npy"}


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_set_format_version, "written in policy file format 2.*upgrade eenet-sklearn"),
        (_shorten_thresholds, r"thresholds_ of shape \(2,\), expected \(4,\)"),
        (_narrow_a_head, r"scorer head 1 of shapes"),
        (_name_another_class, "class 'Pipeline' is not one of the policy classes"),
        (_call_a_function, "'predict_exit' is not a fitted attribute a file may set"),
        (_add_an_object_array, r"dtype object is not allowed"),
    ],
)
def test_a_forged_file_is_refused_naming_the_problem(
    edit: Callable, problem: str, eenet_file: Path
) -> None:
    _forge(eenet_file, edit)
    with pytest.raises(PolicyFileError, match=problem) as error:
        load_policy(eenet_file)
    assert str(eenet_file) in str(error.value)


def test_an_edit_without_a_new_checksum_is_caught(eenet_file: Path) -> None:
    manifest, arrays = _members(eenet_file)
    _fitted_node(manifest)["thresholds_"]["values"][0] -= 0.01  # leave earlier: a cheaper, worse policy
    _write(eenet_file, manifest, {name: _npy(array) for name, array in arrays.items()})
    with pytest.raises(PolicyFileError, match="checksum mismatch"):
        load_policy(eenet_file)
    manifest, arrays = _members(eenet_file)
    arrays["policy._heads.0.0.npy"][0, 0] += 1
    _write(eenet_file, manifest, {name: _npy(array) for name, array in arrays.items()})
    with pytest.raises(PolicyFileError, match="checksum mismatch"):
        load_policy(eenet_file)


def test_a_truncated_or_corrupted_file_is_refused(eenet_file: Path) -> None:
    data = eenet_file.read_bytes()
    eenet_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyFileError, match=r"is not a NumPy \.npz archive, or is truncated"):
        load_policy(eenet_file)
    # A flipped byte inside a weight member: the zip's CRC catches it.
    offset = data.index(b"\x93NUMPY") + 200
    eenet_file.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    with pytest.raises(PolicyFileError, match="is damaged"):
        load_policy(eenet_file)


def test_an_array_header_claiming_more_than_the_file_holds_allocates_nothing(eenet_file: Path) -> None:
    manifest, arrays = _members(eenet_file)
    name = "policy._heads.0.0.npy"
    header = io.BytesIO()
    shape = (10**12, 4, 10)  # 160 TB of float32
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    manifest["arrays"][name] = {"dtype": "<f4", "shape": list(shape)}
    members = {n: _npy(a) for n, a in arrays.items()}
    members[name] = header.getvalue()
    _write(eenet_file, manifest, members)
    with pytest.raises(PolicyFileError, match=r"claims shape \(1000000000000, 4, 10\).*damaged"):
        load_policy(eenet_file)


def test_files_that_are_not_policy_files(tmp_path: Path, mnist: Bunch) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, logits=mnist.X[:5])
    with pytest.raises(PolicyFileError, match=r"is not a policy file: it has no manifest\.json"):
        load_policy(data)
    pickled = tmp_path / "policy.pkl"
    pickled.write_bytes(pickle.dumps(MaxProbPolicy()))
    with pytest.raises(PolicyFileError, match=r"is not a NumPy \.npz archive"):
        load_policy(pickled)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_policy(tmp_path / "missing.npz")


def test_warnings_are_not_raised_by_a_clean_round_trip(
    fitted: dict[str, BaseExitPolicy], tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_policy(fitted["learned-score"], tmp_path / "policy.npz")
        load_policy(tmp_path / "policy.npz")


# --- files built to make loading misbehave (a reviewer's attacks) ------------------------------


def _add_inline_text(manifest: dict, arrays: dict) -> None:
    # 1.2 kB on disk; read as written, 6 GB in memory.
    node = {"type": "array", "dtype": "<U500000000", "shape": [3], "values": list("abc")}
    _fitted_node(manifest)["note_"] = node


def _add_inline_text_scalar(manifest: dict, arrays: dict) -> None:
    _fitted_node(manifest)["note_"] = {"type": "scalar", "dtype": "<U500000000", "value": "x"}


def _add_a_list_as_dict_key(manifest: dict, arrays: dict) -> None:
    _fitted_node(manifest)["extra_"] = {"type": "dict", "items": [[[1, 2], 3]]}


def _add_a_boolean_to_a_shape(manifest: dict, arrays: dict) -> None:
    _fitted_node(manifest)["thresholds_"]["shape"] = [True]


def _overflow_half_floats(manifest: dict, arrays: dict) -> None:
    node = _fitted_node(manifest)["thresholds_"]
    node["dtype"] = "<f2"
    node["values"] = [1e6] * (len(node["values"]) - 1) + ["-inf"]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_add_inline_text, "would take more memory than a manifest of this size can hold"),
        (_add_inline_text_scalar, "would take more memory than a manifest of this size can hold"),
        (_add_a_list_as_dict_key, "a dict's keys must be text, numbers"),
        (_add_a_boolean_to_a_shape, r"bad shape \[True\]"),
        (_overflow_half_floats, "values too large for float16"),
    ],
)
def test_a_forged_manifest_cannot_allocate_or_crash(
    edit: Callable, problem: str, mnist: Bunch, tmp_path: Path
) -> None:
    path = tmp_path / "policy.npz"
    save_policy(MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y), path)
    _forge(path, edit)
    with pytest.raises(PolicyFileError, match=problem) as error:
        load_policy(path)
    assert str(path) in str(error.value)


def test_what_a_reviewer_reads_is_what_loads(mnist: Bunch, tmp_path: Path) -> None:
    """A key or a member given twice: a reader of the text sees the first, json and zipfile
    keep the last. Refused, so that no file reads one way and loads another."""
    path = tmp_path / "policy.npz"
    save_policy(MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y), path)
    manifest, _ = _members(path)
    honest = json.dumps(_fitted_node(manifest)["thresholds_"])
    _fitted_node(manifest)["thresholds_"]["values"] = ["-inf"] * len(mnist.costs)
    evil = json.dumps(_fitted_node(manifest)["thresholds_"])
    manifest["sha256"] = _checksum(manifest, {})
    twice = f'"thresholds_": {honest}, "thresholds_": {evil}'
    text = json.dumps(manifest).replace(f'"thresholds_": {evil}', twice)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", text)
    with pytest.raises(PolicyFileError, match="duplicate key 'thresholds_'"):
        load_policy(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("manifest.json", json.dumps(manifest).replace(evil, honest))
            archive.writestr("manifest.json", json.dumps(manifest))
    with pytest.raises(PolicyFileError, match=r"holds several members named 'manifest\.json'"):
        load_policy(path)


def test_out_of_range_numbers_in_the_manifest_are_refused(mnist: Bunch, tmp_path: Path) -> None:
    path = tmp_path / "policy.npz"
    save_policy(MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y), path)
    manifest, _ = _members(path)
    text = json.dumps(manifest).replace('"n_classes_": 10', '"n_classes_": 10, "x_": 1e400')
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", text)
    with pytest.raises(PolicyFileError, match="number 1e400 is out of range"):
        load_policy(path)


def test_a_pickle_with_a_policy_file_appended_is_not_a_policy_file(mnist: Bunch, tmp_path: Path) -> None:
    """zipfile finds an archive after other data; numpy.load and the command line see a pickle."""
    plain = tmp_path / "plain.npz"
    save_policy(MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y), plain)
    both = tmp_path / "both.npz"
    both.write_bytes(pickle.dumps({"any": "pickle"}) + plain.read_bytes())
    assert zipfile.is_zipfile(both)
    with pytest.raises(PolicyFileError, match="does not start as a zip archive"):
        load_policy(both)


def test_compressed_members_are_refused_before_they_expand(mnist: Bunch, tmp_path: Path) -> None:
    """A deflated member may claim a thousand times its size: 800 MB from under 1 MB."""
    path = tmp_path / "policy.npz"
    save_policy(MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y), path)
    manifest, _ = _members(path)
    zeros = np.zeros(10**6)  # 8 MB of zeros, about 8 kB deflated
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("bomb.npy", _npy(zeros))
    assert path.stat().st_size < 100_000
    with pytest.raises(PolicyFileError, match="are compressed; this file type is written and read"):
        load_policy(path)


def test_a_saved_file_gets_the_permissions_writing_in_place_would(mnist: Bunch, tmp_path: Path) -> None:
    import os
    import stat

    policy = MaxProbPolicy(costs=mnist.costs, budget=0.03).fit(mnist.X, mnist.y)
    previous = os.umask(0o022)
    try:
        new = tmp_path / "new.npz"
        save_policy(policy, new)
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's 0o600
        new.chmod(0o640)
        save_policy(policy, new)
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # the replaced file's
    finally:
        os.umask(previous)
    # A symbolic link is written through, as open() does; it stays a link.
    link = tmp_path / "current.npz"
    link.symlink_to(new)
    save_policy(policy, link)
    assert link.is_symlink() and load_policy(new).costs_.tolist() == policy.costs_.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.npz", "new.npz"]  # no temporary left
    with pytest.raises(FileNotFoundError, match=r"no such folder: .*missing \(to write"):
        save_policy(policy, tmp_path / "missing" / "policy.npz")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_policy(policy, tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_policy(tmp_path)


def test_array_like_parameters_are_written_as_arrays(mnist: Bunch, tmp_path: Path) -> None:
    class Costs:  # an array-like, as a pandas Series is
        def __init__(self, values):
            self.values = np.asarray(values)

        def __array__(self, dtype=None, copy=None):
            return self.values if dtype is None else self.values.astype(dtype)

    policy = MaxProbPolicy(costs=Costs(mnist.costs), budget=0.03).fit(mnist.X, mnist.y)
    with pytest.warns(UserWarning, match=r"policy\.params\.costs \(Costs\) written as NumPy arrays"):
        save_policy(policy, tmp_path / "policy.npz")
    loaded = load_policy(tmp_path / "policy.npz")
    assert isinstance(loaded.costs, np.ndarray)
    assert_array_equal(loaded.predict_exit(mnist.X_test), policy.predict_exit(mnist.X_test))

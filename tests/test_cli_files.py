"""The files the command line writes and reads: whole output files under their own names, and
every kind of policy file save_policy writes (a RiskControlledPolicy included)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    AnytimeEnsemble,
    FixedExitPolicy,
    MaxProbPolicy,
    RiskControlledPolicy,
    load_policy,
    save_policy,
)
from eenet_sklearn import _atomic as atomic_module
from eenet_sklearn import _cli as cli
from eenet_sklearn._cli import main
from eenet_sklearn.datasets import load_exit_logits

ROOT = Path(__file__).resolve().parent.parent

#: What a previous run left at the output path.
PREVIOUS = {".csv": b"exit,label\n0,7\n", ".npz": b"an earlier output, kept whole\n"}


@pytest.fixture(scope="module")
def data():
    return load_exit_logits("mnist_mlp3")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, data) -> dict[str, Path]:
    """A data file of test logits and a policy file of each kind save_policy writes."""
    folder = tmp_path_factory.mktemp("files")
    paths = {"logits": folder / "logits.npz", "one_row": folder / "one_row.npz"}
    np.savez(paths["logits"], logits=data.test_logits[:1000])
    np.savez(paths["one_row"], logits=data.test_logits[:1])
    X, y, costs = data.val_logits, data.val_labels, data.costs
    policies = {
        "maxprob": MaxProbPolicy(costs=costs, budget=0.03).fit(X, y),
        "fixed": FixedExitPolicy(costs=costs, exit=1).fit(X, y),  # no budget_
        "anytime": AnytimeEnsemble(MaxProbPolicy(costs=costs, budget=0.03)).fit(X, y),
        "risk": RiskControlledPolicy(MaxProbPolicy(costs=costs), max_risk=0.02, random_state=0).fit(X, y),
    }
    for name, policy in policies.items():
        paths[name] = folder / f"{name}.npz"
        save_policy(policy, paths[name])
    return paths


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eenet-sklearn: error: "), lines
    return lines[0]


# --- Output files are written whole or not at all -----------------------------------------


def _interrupt_csv_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the csv module's writers raise KeyboardInterrupt after the header and a row."""
    writer = csv.writer

    class Interrupted:
        def __init__(self, handle, *args, **kwargs):
            self._writer = writer(handle, *args, **kwargs)
            self._handle = handle
            self._rows = 0

        def writerow(self, row):
            self._writer.writerow(row)
            self._rows += 1
            if self._rows > 2:
                self._handle.flush()  # some rows are on disk: the write is under way
                raise KeyboardInterrupt

        def writerows(self, rows):
            for row in rows:
                self.writerow(row)

    monkeypatch.setattr(csv, "writer", Interrupted)


def _interrupt_savez(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make np.savez_compressed write the start of an archive, then raise KeyboardInterrupt."""

    def interrupted(file, *args, **kwargs):
        handle = open(file, "wb") if isinstance(file, str | Path) else file
        handle.write(b"PK\x03\x04 the start of an archive")
        handle.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_ctrl_c_while_predict_writes_keeps_the_previous_file(
    suffix: str, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / f"predictions{suffix}"
    output.write_bytes(PREVIOUS[suffix])
    (_interrupt_csv_rows if suffix == ".csv" else _interrupt_savez)(monkeypatch)
    assert main(["predict", str(files["maxprob"]), str(files["logits"]), "-o", str(output)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "eenet-sklearn: interrupted; nothing was written"
    assert output.read_bytes() == PREVIOUS[suffix]
    assert [path.name for path in tmp_path.iterdir()] == [output.name]  # no temporary file left


def test_ctrl_c_while_predict_writes_a_new_file_leaves_none(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_csv_rows(monkeypatch)
    argv = ["predict", str(files["maxprob"]), str(files["logits"]), "-o", str(tmp_path / "p.csv")]
    assert main(argv) == 130
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_after_the_output_is_complete_says_so(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_say", interrupted)  # Ctrl-C while the summary is printed
    output = tmp_path / "p.npz"
    assert main(["predict", str(files["maxprob"]), str(files["logits"]), "-o", str(output)]) == 130
    assert capsys.readouterr().err.strip() == f"eenet-sklearn: interrupted after writing {output}"
    with np.load(output) as written:
        assert len(written["exits"]) == 1000


def test_ctrl_c_landing_on_the_rename_does_not_claim_nothing_was_written(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A signal that arrives during the rename surfaces right after it, the file in place.
    replace = os.replace

    def replace_then_interrupt(source, target):
        replace(source, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_module.os, "replace", replace_then_interrupt)
    output = tmp_path / "p.csv"
    assert main(["predict", str(files["maxprob"]), str(files["logits"]), "-o", str(output)]) == 130
    message = capsys.readouterr().err.strip()
    assert message == (
        f"eenet-sklearn: interrupted while writing {output}: it is as it was before, or the new file, whole"
    )
    assert len(output.read_text().splitlines()) == 1001
    assert [path.name for path in tmp_path.iterdir()] == ["p.csv"]


EVALUATE = ["evaluate", "--policies", "maxprob", "--positions", "0.5", "-q"]


def test_ctrl_c_while_evaluate_writes_its_table_keeps_the_previous_one(
    data, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = tmp_path / "fit.npz"
    np.savez(fit, logits=data.val_logits[:1000], labels=data.val_labels[:1000], costs=data.costs,
             test_logits=data.test_logits[:1000], test_labels=data.test_labels[:1000])
    table = tmp_path / "curve.csv"
    table.write_text("policy,budget\nan earlier table\n")
    _interrupt_csv_rows(monkeypatch)
    assert main([EVALUATE[0], str(fit), *EVALUATE[1:], "--table", str(table)]) == 130
    assert table.read_text() == "policy,budget\nan earlier table\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curve.csv", "fit.npz"]


def test_ctrl_c_while_evaluate_draws_keeps_the_previous_plot(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = tmp_path / "fit.npz"
    np.savez(fit, logits=data.val_logits[:1000], labels=data.val_labels[:1000], costs=data.costs,
             test_logits=data.test_logits[:1000], test_labels=data.test_labels[:1000])
    plot = tmp_path / "curve.png"
    plot.write_bytes(b"an earlier plot")
    figure = pytest.importorskip("matplotlib.figure")

    def interrupted(self, file, **kwargs):  # matplotlib half-way through the PNG
        file.write(b"\x89PNG\r\n\x1a\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(figure.Figure, "savefig", interrupted)
    assert main([EVALUATE[0], str(fit), *EVALUATE[1:], "--plot", str(plot)]) == 130
    assert plot.read_bytes() == b"an earlier plot"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curve.png", "fit.npz"]


def test_evaluate_writes_a_markdown_table_and_a_plot_whole(data, tmp_path: Path) -> None:
    fit = tmp_path / "fit.npz"
    np.savez(fit, logits=data.val_logits[:1000], labels=data.val_labels[:1000], costs=data.costs,
             test_logits=data.test_logits[:1000], test_labels=data.test_labels[:1000])
    pytest.importorskip("matplotlib")
    table, plot = tmp_path / "curve.md", tmp_path / "curve.png"
    assert main([EVALUATE[0], str(fit), *EVALUATE[1:], "--table", str(table), "--plot", str(plot)]) == 0
    assert table.read_text().startswith("|") and table.read_text().endswith("|\n")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curve.md", "curve.png", "fit.npz"]


@pytest.mark.parametrize("name", ["OUT.NPZ", "out.Npz", "OUT.CSV"])
def test_predict_writes_the_output_under_the_name_given(
    name: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / name
    assert main(["predict", str(files["maxprob"]), str(files["logits"]), "-o", str(output)]) == 0
    assert f"written to {output}" in capsys.readouterr().out
    assert [path.name for path in tmp_path.iterdir()] == [name]  # not OUT.NPZ.npz
    policy = load_policy(files["maxprob"])
    with np.load(files["logits"]) as archive:
        logits = archive["logits"]
    exits, labels = policy.predict_exit(logits), policy.predict(logits)
    if name.lower().endswith(".npz"):
        with np.load(output) as written:
            assert_array_equal(written["exits"], exits)
            assert_array_equal(written["labels"], labels)
    else:
        assert output.read_text().splitlines()[1] == f"{exits[0]},{labels[0]}"


# --- RiskControlledPolicy files -------------------------------------------------------------


def test_predict_applies_a_risk_controlled_policy_file(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.npz"
    assert main(["predict", str(files["risk"]), str(files["logits"]), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    model = load_policy(files["risk"])
    assert isinstance(model, RiskControlledPolicy)
    with np.load(files["logits"]) as archive, np.load(output) as written:
        assert_array_equal(written["exits"], model.predict_exit(archive["logits"]))
        assert_array_equal(written["labels"], model.predict(archive["logits"]))
    # No budget of its own: what it holds to is its certified risk.
    assert "1000 samples: mean cost" in out
    certified = "certified accuracy_gap <= 0.02 with confidence 0.9"
    assert f"{certified}, at mean cost {model.expected_cost_:.6g} on its calibration data" in out
    assert "budget" not in out


def test_predict_reads_a_pickled_risk_controlled_policy_on_request(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    joblib.dump(load_policy(files["risk"]), tmp_path / "risk.joblib")
    argv = ["predict", str(tmp_path / "risk.joblib"), str(files["logits"]), "-o", str(tmp_path / "o.csv")]
    assert main([*argv, "--allow-pickle"]) == 0
    assert "certified accuracy_gap" in capsys.readouterr().out


def test_recalibrate_refuses_a_risk_controlled_policy_in_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.npz"
    line = _error_line(["recalibrate", str(files["risk"]), str(files["logits"]), "-o", str(output)], capsys)
    assert "holds a RiskControlledPolicy" in line and "void its risk certificate" in line
    assert "fit --max-risk" in line
    assert not output.exists()


@pytest.mark.parametrize("kind", ["maxprob", "fixed", "anytime", "risk"])
def test_the_deployment_guide_reviews_every_kind_of_policy_file(
    kind: str, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    guide = (ROOT / "docs" / "user-guide" / "deployment.md").read_text()
    section = guide.split("## Reviewing one", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    shutil.copy(files[kind], tmp_path / "policy.npz")
    monkeypatch.chdir(tmp_path)
    exec(snippet.group(1), {})  # the page's code as a reader runs it
    printed = capsys.readouterr().out
    manifest = json.loads(zipfile.ZipFile(files[kind]).read("manifest.json"))
    assert printed.startswith(manifest["policy"]["class"])


# --- Messages --------------------------------------------------------------------------------


def test_predict_on_one_sample_says_sample(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["predict", str(files["maxprob"]), str(files["one_row"]), "-o", str(tmp_path / "o.csv")]) == 0
    assert capsys.readouterr().out.startswith("1 sample: mean cost")


@pytest.mark.parametrize(
    ("content", "message"),
    [(3, "holds an object of type int, not a policy"),
     ({"a": 1}, "holds an object of type dict, not a policy"),
     (np.zeros(2), "holds an object of type ndarray, not a policy")],
)
def test_a_pickle_of_something_else_is_named_with_its_type(
    content: object, message: str, files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    joblib.dump(content, tmp_path / "thing.joblib")
    argv = ["predict", str(tmp_path / "thing.joblib"), str(files["logits"]), "-o", str(tmp_path / "o.csv"),
            "--allow-pickle"]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_recalibrate_summary_counts_its_samples(data, files: dict[str, Path], tmp_path: Path, capsys) -> None:
    output = tmp_path / "out.npz"
    assert main(["recalibrate", str(files["maxprob"]), str(files["logits"]), "-o", str(output)]) == 0
    assert "MaxProbPolicy recalibrated on 1000 unlabeled samples" in capsys.readouterr().out


def test_a_policy_without_a_budget_says_none(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["predict", str(files["fixed"]), str(files["logits"]), "-o", str(tmp_path / "o.npz")]) == 0
    assert "(budget none)" in capsys.readouterr().out
    assert isinstance(load_policy(files["fixed"]), FixedExitPolicy)

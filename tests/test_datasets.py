"""The shipped per-exit logits: what ``load_exit_logits`` returns for every set, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from eenet_sklearn.datasets import EXIT_LOGIT_SETS, MANY_EXIT_SETS, load_exit_logits

#: Number of exits, validation rows and classes of each shipped set.
SHAPES = {
    "fashion_cnn4": (4, 10_000, 10),
    "mnist_mlp3": (3, 10_000, 10),
    "reviews_minilm6": (6, 4_000, 2),
    "fashion_cnn8": (8, 4_000, 10),
    "fashion_cnn12": (12, 4_000, 10),
    "fashion_cnn16": (16, 4_000, 10),
}


def test_every_set_is_listed_once_and_the_deep_ones_among_them():
    assert sorted(EXIT_LOGIT_SETS) == sorted(SHAPES)
    assert set(MANY_EXIT_SETS) <= set(EXIT_LOGIT_SETS)


@pytest.mark.parametrize("name", EXIT_LOGIT_SETS)
@pytest.mark.parametrize("cost", ["ms", "flops"])
def test_shapes_dtypes_and_increasing_costs(name, cost):
    data = load_exit_logits(name, cost=cost)
    n_exits, n_rows, n_classes = SHAPES[name]
    for split in ("val", "test"):
        logits, labels = data[f"{split}_logits"], data[f"{split}_labels"]
        assert logits.shape == (n_rows, n_exits, n_classes) and logits.dtype == np.float32
        assert labels.shape == (n_rows,) and labels.dtype == np.int64
        assert np.isfinite(logits).all()
        assert set(np.unique(labels)) == set(range(n_classes))
    assert data.costs.shape == (n_exits,)
    assert data.costs[0] > 0 and (np.diff(data.costs) > 0).all()
    if name in MANY_EXIT_SETS:
        assert data.meta["K"] == n_exits
    else:
        assert data.head_costs is None  # measured only for the sets built with it


@pytest.mark.parametrize("name", MANY_EXIT_SETS)
@pytest.mark.parametrize("cost", ["ms", "flops"])
def test_a_head_costs_less_than_the_step_that_includes_it(name, cost):
    data = load_exit_logits(name, cost=cost)
    increments = np.diff(data.costs, prepend=0.0)
    assert data.head_costs.shape == increments.shape
    assert (data.head_costs > 0).all()
    assert (data.head_costs < increments).all()
    assert data.head_costs.tolist() == data.meta[f"head_costs_{cost}"]


def test_head_flops_are_a_linear_layer_on_a_two_by_two_grid():
    # Exit k: average pooling to 2x2 (not counted), then Linear(4 * width_k, 10): 2 FLOPs per weight.
    data = load_exit_logits("fashion_cnn16", cost="flops")
    expected = [2 * 4 * width * 10 for width in data.meta["widths"]]
    np.testing.assert_array_equal(data.head_costs, expected)


@pytest.mark.parametrize("name", MANY_EXIT_SETS)
def test_deep_sets_hold_the_images_of_fashion_cnn4_and_learn_with_depth(name):
    data, reference = load_exit_logits(name), load_exit_logits("fashion_cnn4")
    n_rows = len(data.val_labels)
    # The same split rule and seed: the first rows of fashion_cnn4's val and test, same order.
    np.testing.assert_array_equal(data.val_labels, reference.val_labels[:n_rows])
    np.testing.assert_array_equal(data.test_labels, reference.test_labels[:n_rows])
    for split in ("val", "test"):
        accuracy = (data[f"{split}_logits"].argmax(axis=2) == data[f"{split}_labels"][:, None]).mean(axis=0)
        np.testing.assert_allclose(accuracy, data.meta[f"{split}_acc_per_exit"])
        assert accuracy[-1] > accuracy[0] + 0.05  # depth pays


def test_the_loaded_arrays_are_fresh_copies():
    first = load_exit_logits("fashion_cnn8")
    first.val_logits[:] = 0.0
    assert load_exit_logits("fashion_cnn8").val_logits.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "fashion_cnn32"}, r"name must be one of .*'fashion_cnn16'.*got 'fashion_cnn32'"),
        ({"name": "fashion_cnn8", "cost": "seconds"}, "cost must be 'ms' or 'flops', got 'seconds'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_exit_logits(**kwargs)

"""Per-exit logits to work with: real ones shipped with the package, and synthetic ones."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
from sklearn.utils import Bunch, check_random_state

#: Real per-exit logits shipped in ``eenet_sklearn/data`` (see its README).
EXIT_LOGIT_SETS = ("fashion_cnn4", "mnist_mlp3")


def load_exit_logits(name: str, cost: str = "ms") -> Bunch:
    """Load real per-exit logits of a multi-exit network, with its measured costs.

    Parameters
    ----------
    name : {"fashion_cnn4", "mnist_mlp3"}
        ``fashion_cnn4``: a 4-exit CNN on Fashion-MNIST; ``mnist_mlp3``: a 3-exit
        MLP on MNIST. Both have 10,000 validation and 10,000 test samples.
    cost : {"ms", "flops"}, default="ms"
        Which measured cumulative cost becomes ``costs``.

    Returns
    -------
    Bunch
        ``val_logits``, ``val_labels``, ``test_logits``, ``test_labels``,
        ``costs`` (cumulative cost per exit), ``meta`` (dict: architecture,
        training recipe, per-exit accuracies, how costs were measured).
    """
    if name not in EXIT_LOGIT_SETS:
        raise ValueError(f"name must be one of {EXIT_LOGIT_SETS}, got {name!r}.")
    if cost not in ("ms", "flops"):
        raise ValueError(f"cost must be 'ms' or 'flops', got {cost!r}.")
    with resources.files("eenet_sklearn.data").joinpath(f"{name}.npz").open("rb") as handle:
        with np.load(handle) as archive:
            return Bunch(
                val_logits=archive["val_logits"],
                val_labels=archive["val_labels"],
                test_logits=archive["test_logits"],
                test_labels=archive["test_labels"],
                costs=archive[f"costs_{cost}"],
                meta=json.loads(str(archive["meta"])),
            )


def make_exit_logits(
    n_samples: int = 1000,
    n_exits: int = 4,
    n_classes: int = 10,
    *,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic per-exit logits whose exits grow more accurate with depth.

    Each sample has a difficulty; exit ``k`` adds to Gaussian noise a signal on the
    true class that grows with depth and shrinks with difficulty, and exits of the
    same sample share part of their noise, as exits of one network do.

    Returns
    -------
    logits : ndarray of shape (n_samples, n_exits, n_classes), float32
    labels : ndarray of shape (n_samples,), int64
    """
    rng = check_random_state(random_state)
    labels = rng.randint(n_classes, size=n_samples)
    difficulty = rng.exponential(1.0, size=(n_samples, 1))
    depth = np.linspace(1.0, 3.0, n_exits)[None, :]
    shared = rng.normal(size=(n_samples, 1, n_classes))
    noise = 0.6 * shared + 0.8 * rng.normal(size=(n_samples, n_exits, n_classes))
    logits = noise
    logits[np.arange(n_samples), :, labels] += depth * 2.0 / (1.0 + difficulty)
    return logits.astype(np.float32), labels.astype(np.int64)

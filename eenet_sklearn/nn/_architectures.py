"""Ready-made multi-exit networks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from ._heads import PoolLinearHead
from ._model import MultiExitNetwork


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def multi_exit_cnn(
    n_classes: int = 10,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    head_hidden_size: int | None = None,
    *,
    pool_after: Sequence[int] | None = None,
    convs_per_block: int = 2,
    head_pool_size: int = 1,
) -> MultiExitNetwork:
    """A CNN for small images with an exit after each of its blocks.

    Block ``k``: ``convs_per_block`` 3x3 convolutions with batch norm and ReLU; a 2x2
    max pooling follows the blocks listed in ``pool_after`` (by default every block but
    the last), before the next block, so exit ``k`` reads block ``k``'s unpooled
    output. Doubling the width as the pooling halves the side keeps the blocks' costs
    close, so the exits are spread evenly over the cost. A 28x28 image takes at most
    four poolings (28, 14, 7, 3, 1): for more blocks than that, pool after some only,
    e.g. 16 blocks with ``pool_after=(3, 7, 11)``.

    Parameters
    ----------
    n_classes : int, default=10
    in_channels : int, default=1
    widths : sequence of int, default=(16, 32, 64, 128)
        Channels of each block; one exit per block.
    head_hidden_size : int, default=None
        Hidden width of the exit heads (:class:`PoolLinearHead`); ``None`` for linear heads.
    pool_after : sequence of int, default=None
        Strictly increasing indices of the blocks followed by a 2x2 max pooling, in
        ``[0, len(widths) - 2]`` (may be empty); ``None`` for every block but the last.
    convs_per_block : int, default=2
        Convolutions (each with batch norm and ReLU) per block.
    head_pool_size : int, default=1
        The heads' ``pool_size``: ``1`` for global average pooling, ``p`` for an
        average-pooled ``p x p`` grid (:class:`PoolLinearHead`).

    Returns
    -------
    MultiExitNetwork
        Takes ``(n_samples, in_channels, height, width)`` float images.

    Raises
    ------
    ValueError
        If ``widths`` is empty or holds a non-positive width, ``pool_after`` is not
        strictly increasing within ``[0, len(widths) - 2]``, or ``convs_per_block`` or
        ``head_pool_size`` is not a positive integer.

    See Also
    --------
    MultiExitClassifier : Trains the exits jointly.
    measure_latency, count_flops : The per-exit costs a policy takes.

    Examples
    --------
    >>> import torch
    >>> from eenet_sklearn.nn import multi_exit_cnn
    >>> net = multi_exit_cnn(widths=[8] * 4 + [16] * 4, pool_after=(3,), convs_per_block=1,
    ...                      head_pool_size=2)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 8, 10])
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}.")
    convs_per_block = _check_positive_int(convs_per_block, "convs_per_block")
    head_pool_size = _check_positive_int(head_pool_size, "head_pool_size")
    if pool_after is None:
        pooled = set(range(len(widths) - 1))
    else:
        points = list(pool_after)
        if (
            any(isinstance(p, bool) or not isinstance(p, int) for p in points)
            or any(a >= b for a, b in itertools.pairwise(points))
            or (points and (points[0] < 0 or points[-1] > len(widths) - 2))
        ):
            raise ValueError(
                f"pool_after must be strictly increasing block indices in [0, {len(widths) - 2}] "
                f"(no pooling after the last block), got {pool_after!r}."
            )
        pooled = set(points)
    stages, heads, previous = [], [], in_channels
    for k, width in enumerate(widths):
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if k - 1 in pooled else []
        for i in range(convs_per_block):
            conv = nn.Conv2d(previous if i == 0 else width, width, 3, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU()]
        stages.append(nn.Sequential(*layers))
        heads.append(PoolLinearHead(width, n_classes, hidden_size=head_hidden_size, pool_size=head_pool_size))
        previous = width
    return MultiExitNetwork(stages, heads)

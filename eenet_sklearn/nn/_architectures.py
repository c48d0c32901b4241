"""Ready-made multi-exit networks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ._heads import PoolLinearHead
from ._model import MultiExitNetwork


def multi_exit_cnn(
    n_classes: int = 10,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    head_hidden_size: int | None = None,
) -> MultiExitNetwork:
    """A CNN for small images with an exit after each of its blocks.

    Block ``k``: two 3x3 convolutions with batch norm and ReLU, then 2x2 max pooling
    (except after the last block). Doubling the width as the pooling halves the
    side keeps the blocks' costs close, so the exits are spread evenly over the cost.

    Parameters
    ----------
    n_classes : int, default=10
    in_channels : int, default=1
    widths : sequence of int, default=(16, 32, 64, 128)
        Channels of each block; one exit per block.
    head_hidden_size : int, default=None
        Hidden width of the exit heads (:class:`PoolLinearHead`); ``None`` for linear heads.

    Returns
    -------
    MultiExitNetwork
        Takes ``(n_samples, in_channels, height, width)`` float images.
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}.")
    stages, heads, previous = [], [], in_channels
    for k, width in enumerate(widths):
        layers: list[nn.Module] = [] if k == 0 else [nn.MaxPool2d(2)]
        for channels_in in (previous, width):
            conv = nn.Conv2d(channels_in, width, 3, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU()]
        stages.append(nn.Sequential(*layers))
        heads.append(PoolLinearHead(width, n_classes, hidden_size=head_hidden_size))
        previous = width
    return MultiExitNetwork(stages, heads)

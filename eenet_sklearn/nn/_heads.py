"""Ready-made exit heads: pooled convolutional features, pooled transformer tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _classifier(in_features: int, n_classes: int, hidden_size: int | None, dropout: float) -> nn.Sequential:
    if hidden_size is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden_size),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, n_classes),
    )


class PoolLinearHead(nn.Module):
    """Global average pooling over the spatial dimensions, then a linear (or MLP) classifier.

    Reads ``(n_samples, channels, *spatial)`` feature maps (1-D, 2-D or 3-D) or
    ``(n_samples, features)`` vectors.

    Parameters
    ----------
    in_channels : int
        Channels (or features) of the stage output.
    n_classes : int
    hidden_size : int, default=None
        Width of one hidden ReLU layer; ``None`` for a single linear layer.
    dropout : float, default=0.0
    pool_size : int, default=1
        ``1``: global average pooling (any spatial dimensions). ``p > 1``: adaptive
        average pooling of 2-D maps ``(n_samples, channels, height, width)`` to a
        ``p x p`` grid, flattened, so the classifier reads ``in_channels * p * p``
        features and keeps a coarse layout (a narrow early stage with global pooling
        alone leaves its exit nearly blind).

    Raises
    ------
    ValueError
        If ``pool_size`` is not a positive integer.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden_size: int | None = None,
        dropout: float = 0.0,
        pool_size: int = 1,
    ):
        super().__init__()
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}.")
        self.pool_size = pool_size
        self.classifier = _classifier(in_channels * pool_size**2, n_classes, hidden_size, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.pool_size > 1:
            if features.dim() != 4:
                raise ValueError(
                    f"PoolLinearHead(pool_size={self.pool_size}) reads 2-D feature maps "
                    f"(n_samples, channels, height, width), got shape {tuple(features.shape)}."
                )
            return self.classifier(F.adaptive_avg_pool2d(features, self.pool_size).flatten(1))
        pooled = features.flatten(2).mean(dim=2) if features.dim() > 2 else features
        return self.classifier(pooled)


class TokenPoolingHead(nn.Module):
    """Pooled token states of a transformer encoder, then a linear (or MLP) classifier.

    Reads the state the transformer stages of :func:`~eenet_sklearn.nn.multi_exit_encoder`
    pass on: a dict with ``hidden_states`` ``(n_samples, n_tokens, hidden)`` and the
    tokenizer's ``attention_mask`` ``(n_samples, n_tokens)``.

    Parameters
    ----------
    hidden_size : int
        Width of the token states.
    n_classes : int
    pooling : {"mean", "cls"}, default="mean"
        Mean over the unmasked tokens, or the first token's state.
    mlp_hidden_size : int, default=None
        Width of one hidden ReLU layer; ``None`` for a single linear layer.
    dropout : float, default=0.1
    """

    def __init__(
        self,
        hidden_size: int,
        n_classes: int,
        pooling: str = "mean",
        mlp_hidden_size: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")
        self.pooling = pooling
        self.classifier = _classifier(hidden_size, n_classes, mlp_hidden_size, dropout)

    def forward(self, state: dict) -> torch.Tensor:
        hidden = state["hidden_states"]
        if self.pooling == "cls":
            return self.classifier(hidden[:, 0])
        mask = state["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.classifier(pooled)

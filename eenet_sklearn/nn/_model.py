"""The multi-exit network: ordered stages, one exit head after each."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class MultiExitNetwork(nn.Module):
    """A network whose stages run in order, with an exit head after each stage.

    Stage 0 receives the network's inputs (a tensor, or keyword tensors such as a
    tokenizer's ``input_ids`` and ``attention_mask``); stage ``k`` receives what stage
    ``k - 1`` returned (a tensor, or a dict / tuple of tensors with the batch along
    the first dimension); head ``k`` turns stage ``k``'s output into class logits.

    Parameters
    ----------
    stages : sequence of nn.Module
        The backbone, cut into consecutive pieces.
    heads : sequence of nn.Module
        One exit head per stage, each returning ``(n_samples, n_classes)`` logits.

    Attributes
    ----------
    stages, heads : nn.ModuleList
    stages_frozen : bool
        Whether the stages are frozen (see :meth:`freeze_stages`).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from eenet_sklearn.nn import MultiExitNetwork, PoolLinearHead
    >>> net = MultiExitNetwork(
    ...     stages=[nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)],
    ...     heads=[PoolLinearHead(8, 10), PoolLinearHead(16, 10)],
    ... )
    >>> net(torch.zeros(5, 1, 28, 28)).shape
    torch.Size([5, 2, 10])
    """

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module]):
        super().__init__()
        stages, heads = list(stages), list(heads)
        if not stages:
            raise ValueError("stages must hold at least one nn.Module, got an empty sequence.")
        if len(stages) != len(heads):
            raise ValueError(
                f"heads must hold one head per stage: got {len(stages)} stages and {len(heads)} heads."
            )
        for name, modules in (("stages", stages), ("heads", heads)):
            for i, module in enumerate(modules):
                if not isinstance(module, nn.Module):
                    raise TypeError(f"{name}[{i}] must be a torch.nn.Module, got {type(module).__name__}.")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.stages_frozen = False

    @classmethod
    def from_backbone(
        cls, backbone: nn.Sequential, exit_after: Sequence[int], heads: Sequence[nn.Module]
    ) -> MultiExitNetwork:
        """Cut an ``nn.Sequential`` after the given child indices and attach one head at each cut.

        Children after the last index are not used (typically the backbone's own classifier).

        Parameters
        ----------
        backbone : nn.Sequential
        exit_after : sequence of int
            Strictly increasing indices of the children after which an exit sits.
        heads : sequence of nn.Module
            One head per index.

        Returns
        -------
        MultiExitNetwork
        """
        if not isinstance(backbone, nn.Sequential):
            raise TypeError(f"backbone must be a torch.nn.Sequential, got {type(backbone).__name__}.")
        points = check_cut_points(exit_after, "exit_after", 0, len(backbone) - 1, "child indices")
        starts = [0] + [i + 1 for i in points[:-1]]
        stages = [backbone[start : end + 1] for start, end in zip(starts, points, strict=True)]
        return cls(stages, heads)

    @property
    def n_exits(self) -> int:
        """Number of exits."""
        return len(self.heads)

    def freeze_stages(self, frozen: bool = True) -> MultiExitNetwork:
        """Freeze (or unfreeze) the stages, so that only the heads train.

        Frozen stages get no gradients and stay in evaluation mode (batch-norm
        statistics and dropout as at inference) even while the network trains.
        """
        self.stages_frozen = bool(frozen)
        for parameter in self.stages.parameters():
            parameter.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> MultiExitNetwork:
        super().train(mode)
        if self.stages_frozen:
            self.stages.eval()
        return self

    def run_stage(self, k: int, state, inputs=None):
        """Output of stage ``k``: on ``inputs`` for the first stage, on ``state`` after.

        Raises
        ------
        TypeError, ValueError
            If the first stage fails on ``inputs`` whose dtype or shape does not fit
            its first layer (a convolution, linear or embedding layer): the error names
            ``X``, what was given and what the layer expects, instead of torch's.
        """
        if k > 0:
            return self.stages[k](state)
        try:
            return self.stages[0](**inputs) if isinstance(inputs, dict) else self.stages[0](inputs)
        except (RuntimeError, TypeError, ValueError) as exc:
            # Diagnosed only on failure: a successful call costs nothing extra.
            mismatch = first_stage_mismatch(self.stages[0], inputs)
            if mismatch is None:
                raise
            error, message = mismatch
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise error(f"{message} (torch: {first_line})") from None

    def forward(self, X=None, **inputs) -> torch.Tensor:
        """All exits' logits, ``(n_samples, n_exits, n_classes)``."""
        inputs = inputs if X is None else X
        logits, state = [], None
        for k, head in enumerate(self.heads):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.stages_frozen):
                state = self.run_stage(k, state, inputs)
            logits.append(head(state))
        return torch.stack(logits, dim=1)


def _first_layer(stage: nn.Module) -> nn.Module:
    """The layer that first sees a stage's input, following first children of containers."""
    layer = stage
    while isinstance(layer, (nn.Sequential, nn.ModuleList)) and len(layer):
        layer = layer[0]
    return layer


def first_stage_mismatch(
    stage: nn.Module, inputs, given: str | None = None
) -> tuple[type[Exception], str] | None:
    """Why ``inputs`` cannot enter ``stage``, when its first layer says so; else ``None``.

    Reads the first layer (a convolution, ``nn.Linear`` or ``nn.Embedding``) and the
    inputs' dtype and shape only: no forward pass (``inputs`` may be a meta tensor).
    Returns the exception type and message; ``given`` describes the inputs in it.
    """
    if not isinstance(inputs, torch.Tensor):
        return None
    layer = _first_layer(stage)
    if given is None:
        given = f"a batch of shape {tuple(inputs.shape)} and dtype {inputs.dtype}"
    problems: list[str] = []
    hints: list[str] = []
    error: type[Exception] = ValueError
    if isinstance(layer, nn.modules.conv._ConvNd):
        n_dims = len(layer.kernel_size)
        axes = ", ".join(["height", "width"][-n_dims:] if n_dims <= 2 else ["depth", "height", "width"])
        expected = f"float input of shape (n_samples, {layer.in_channels}, {axes})"
        if inputs.ndim != n_dims + 2:
            problems.append(f"{inputs.ndim} axes instead of {n_dims + 2}")
            if inputs.ndim == n_dims + 1 and layer.in_channels == 1:
                hints.append("add the channel axis, e.g. X[:, None]")
        elif inputs.shape[1] != layer.in_channels:
            problems.append(f"{inputs.shape[1]} channels (axis 1) instead of {layer.in_channels}")
    elif isinstance(layer, nn.Linear):
        expected = f"float input of shape (n_samples, {layer.in_features})"
        if inputs.ndim < 2 or inputs.shape[-1] != layer.in_features:
            length = inputs.shape[-1] if inputs.ndim else 0
            problems.append(f"a last axis of length {length} instead of {layer.in_features}")
    elif isinstance(layer, nn.Embedding):
        if inputs.is_floating_point() or inputs.is_complex():
            return TypeError, (
                f"X does not fit the network's first stage: got {given}, but its first layer, "
                f"{layer}, expects integer token ids (torch.long)."
            )
        return None
    else:
        return None
    weight_dtype = layer.weight.dtype
    if inputs.dtype != weight_dtype:
        problems.append(f"dtype {inputs.dtype} instead of {weight_dtype}")
        if not inputs.is_floating_point():
            hints.append("convert it, e.g. X.astype(np.float32) / 255 for 8-bit images")
        else:
            hints.append(f"convert it, e.g. X.astype(np.{str(weight_dtype).removeprefix('torch.')})")
        if not problems[:-1]:
            error = TypeError
    if not problems:
        return None
    message = (
        f"X does not fit the network's first stage: got {given} ({'; '.join(problems)}); "
        f"its first layer, {layer}, expects {expected}."
    )
    if hints:
        message += " To fix: " + "; ".join(hints) + "."
    return error, message


def check_first_stage_input(network: nn.Module, X) -> None:
    """Raise the first stage's mismatch error for a whole input array, before any work.

    For a NumPy array or tensor ``X`` and a network whose first stage starts with a layer
    :func:`first_stage_mismatch` reads; anything else passes (the stage itself decides).
    """
    stages = getattr(network, "stages", None)
    if not stages:
        return
    if isinstance(X, np.ndarray):
        try:
            dtype = torch.from_numpy(np.empty(0, dtype=X.dtype)).dtype
        except TypeError:  # a dtype torch has no tensor for (object, strings)
            return
        inputs = torch.empty(X.shape, dtype=dtype, device="meta")  # no memory
    elif isinstance(X, torch.Tensor):
        inputs = X
    else:
        return
    mismatch = first_stage_mismatch(
        stages[0], inputs, given=f"an array of shape {tuple(X.shape)} and dtype {X.dtype}"
    )
    if mismatch is not None:
        error, message = mismatch
        raise error(message)


def check_cut_points(values: Sequence[int], name: str, low: int, high: int, what: str) -> list[int]:
    """Validate strictly increasing integer cut points in ``[low, high]``."""
    points = [int(value) for value in values]
    increasing = all(a < b for a, b in itertools.pairwise(points))
    if not points or points[0] < low or points[-1] > high or not increasing:
        raise ValueError(f"{name} must be strictly increasing {what} in [{low}, {high}], got {list(values)}.")
    return points


def take_rows(batch, rows: torch.Tensor):
    """The rows ``rows`` of every tensor in a (nested) batch; other values pass unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.index_select(0, rows)
    if isinstance(batch, dict):
        return {key: take_rows(value, rows) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(take_rows(value, rows) for value in batch)
    return batch

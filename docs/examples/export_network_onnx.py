"""Export a multi-exit CNN stage by stage, and its exit policy, as ONNX graphs.

Writes into a folder what ``serve_onnx.py`` reads: ``block_<k>.onnx`` (stage ``k`` of
an :class:`eenet_sklearn.nn.MultiExitNetwork` with its exit head: input ``inputs``,
outputs ``features`` and ``logits``) and ``policy/`` (:func:`eenet_sklearn.export_onnx`).
Needs torch and the ``onnx`` extra (``onnx``, ``onnxruntime``, ``onnxscript``).

Usage: ``python export_network_onnx.py FOLDER`` runs the whole pipeline on an untrained
CNN and random images, to try it end to end; use :func:`export` with your trained
network, held-out images and fitted policy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import eenet_sklearn
from eenet_sklearn.nn import MultiExitNetwork, multi_exit_cnn


class Block(nn.Module):
    """Stage ``k`` of a network, then its exit head: what a server runs to reach exit ``k``."""

    def __init__(self, stage: nn.Module, head: nn.Module):
        super().__init__()
        self.stage, self.head = stage, head

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stage(inputs)
        return features, self.head(features)


def export_network(network: MultiExitNetwork, example: torch.Tensor, folder: Path) -> list[Path]:
    """Write ``block_<k>.onnx`` for every exit, with a dynamic batch axis.

    ``example``: a batch of at least two inputs of the network's first stage.
    """
    network.eval()
    batch = torch.export.Dim("batch")
    paths = []
    with torch.no_grad():
        for k, (stage, head) in enumerate(zip(network.stages, network.heads, strict=True)):
            block = Block(stage, head).eval()
            path = folder / f"block_{k}.onnx"
            torch.onnx.export(
                block,
                (example,),
                path,
                input_names=["inputs"],
                output_names=["features", "logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,  # one file per block (True for a block over 2 GB)
                verbose=False,
            )
            example, _ = block(example)  # the next block's example input
            paths.append(path)
    return paths


def export(network: MultiExitNetwork, policy, example: torch.Tensor, folder: str | Path) -> list[Path]:
    """The network's blocks and the policy's decision graphs (in ``folder/policy``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return export_network(network, example, folder) + eenet_sklearn.export_onnx(policy, folder / "policy")


def main(folder: str) -> None:
    torch.manual_seed(0)
    network = multi_exit_cnn(n_classes=10, widths=(8, 16, 32)).eval()
    images = torch.randn(2048, 1, 28, 28)
    with torch.no_grad():
        logits = network(images).numpy()  # (n_samples, n_exits, n_classes)
    # Stand-ins for held-out labels and measured costs (see "Multi-exit networks").
    labels = np.random.default_rng(0).integers(0, 10, len(images))
    costs = np.array([1.0, 2.0, 3.0])
    policy = eenet_sklearn.EarlyExitPolicy(costs=costs, budget=2.0, max_epochs=10, random_state=0)
    policy.fit(logits, labels)
    export(network, policy, images[:2], folder)
    np.save(Path(folder) / "images.npy", images.numpy())


if __name__ == "__main__":
    main(sys.argv[1])

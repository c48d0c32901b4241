"""Early-exit inference with ONNX Runtime alone: no torch, no eenet_sklearn, no scikit-learn.

Reads what ``export_onnx.py`` wrote into a folder:

- ``block_<k>.onnx``: stage ``k`` of the network and its exit head, input ``inputs``
  (the images for ``k = 0``, else block ``k - 1``'s ``features``), outputs ``features``
  and ``logits``;
- ``policy/``: the exit policy's decision graphs and ``manifest.json``
  (``eenet_sklearn.export_onnx``).

Usage: ``python serve_onnx.py FOLDER IMAGES.npy RESULT.npz`` (the images as float32
``(n, channels, height, width)``; the result holds ``labels`` and ``exits``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


class EarlyExitServer:
    """A multi-exit network and its exit policy, run exit by exit with ONNX Runtime."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.manifest = json.loads((folder / "policy" / "manifest.json").read_text())
        self.classes = np.asarray(self.manifest["classes"])
        self.blocks = [_session(folder / f"block_{k}.onnx") for k in range(self.manifest["n_exits"])]
        self.decisions = [_session(folder / "policy" / name) for name in self.manifest["files"]]

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and exits of a batch; each block runs only on the rows still running."""
        state_names = self.manifest["state"]
        wanted = ["leave", "label"] + [f"next_{name}" for name in state_names]
        n_samples = len(inputs)
        labels = np.empty(n_samples, dtype=np.int64)
        exits = np.empty(n_samples, dtype=np.int64)
        rows = np.arange(n_samples)  # the rows still running
        state: dict[str, np.ndarray] = {}  # exit 0's graph starts the state itself
        for k, (block, decision) in enumerate(zip(self.blocks, self.decisions, strict=True)):
            features, logits = block.run(["features", "logits"], {"inputs": inputs})
            leave, label, *next_state = decision.run(wanted, {"logits": logits, **state})
            labels[rows[leave]] = label[leave]
            exits[rows[leave]] = k
            stay = ~leave
            if not stay.any():  # always so after the last exit
                break
            rows, inputs = rows[stay], features[stay]
            state = {name: value[stay] for name, value in zip(state_names, next_state, strict=True)}
        return self.classes[labels], exits


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    folder, images, result = sys.argv[1:4]
    labels, exits = EarlyExitServer(folder).predict(np.load(images).astype(np.float32))
    np.savez(result, labels=labels, exits=exits)
    print(f"{len(exits)} samples, mean exit {exits.mean():.2f}; exits per exit:", np.bincount(exits))

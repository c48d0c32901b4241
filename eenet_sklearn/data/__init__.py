"""Real per-exit logits shipped with the package (see README.md here)."""

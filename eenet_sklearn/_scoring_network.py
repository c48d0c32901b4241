"""The EENet scorer: per-exit utility networks, the exit distribution and its loss.

``ExitScorer`` maps causal per-exit features to exit utility logits ``u[:, k]``
(``sigmoid(u)`` estimates the probability that exit ``k`` is right) and to a
per-sample distribution over exits ``r`` with the same sequential form as the
threshold rule used at inference: a sample leaves exit ``k`` with probability
``sigmoid((u_k - b_k) / temperature)`` if it got that far. ``r`` is unbounded in
the sense that any exit distribution can be expressed, unlike a softmax taken
over sigmoid outputs. ``EENetLoss`` is the budget-constrained objective.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Slope of the heads' LeakyReLU below zero. A plain ReLU lets whole heads die on part of
#: the data: on fashion_cnn4 one exit gave 47% of the samples the very same score, a tie
#: no quota threshold can split, and the fitted policy spent 10% under its budget.
NEGATIVE_SLOPE = 0.01


class ExitScorer(nn.Module):
    """One small MLP per exit; the scorer at exit ``k`` also reads the scores of exits before it.

    Parameters
    ----------
    n_exits : int
    n_features : int
        Width of the per-exit feature vector.
    hidden_size : int
        Hidden units of each exit's MLP.
    temperature : float
        Softness of the leave decision in the exit distribution.
    """

    def __init__(
        self, n_exits: int, n_features: int, hidden_size: int = 32, temperature: float = 0.5
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(n_features + k, hidden_size),
                nn.LeakyReLU(NEGATIVE_SLOPE),
                nn.Linear(hidden_size, 1),
            )
            for k in range(n_exits)
        )
        self.leave_bias = nn.Parameter(torch.zeros(n_exits - 1))

    def head_layers(self) -> list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor]]:
        """Per head: first weight and bias, LeakyReLU slope, last weight and bias (detached).

        Prediction evaluates the heads from these in a batched layout of its own.
        """
        layers = []
        for head in self.heads:
            first, activation, last = head.children()
            if not (
                isinstance(first, nn.Linear)
                and isinstance(activation, nn.LeakyReLU)
                and isinstance(last, nn.Linear)
            ):
                raise TypeError(f"expected a head Linear, LeakyReLU, Linear, got {head}")
            layers.append(
                (
                    first.weight.detach(),
                    first.bias.detach(),
                    activation.negative_slope,
                    last.weight.detach(),
                    last.bias.detach(),
                )
            )
        return layers

    def utility_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Utility logits ``(n_samples, n_exits)``; column ``k`` reads features of exits ``<= k``."""
        logits: list[torch.Tensor] = []
        for k, head in enumerate(self.heads):
            previous = torch.sigmoid(torch.stack(logits, dim=1)) if logits else features[:, 0, :0]
            logits.append(head(torch.cat([features[:, k], previous], dim=1)).squeeze(1))
        return torch.stack(logits, dim=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the utility logits and the log exit distribution, both ``(n_samples, n_exits)``."""
        utility = self.utility_logits(features)
        leave = (utility[:, :-1] - self.leave_bias) / self.temperature
        log_stay = F.logsigmoid(-leave)
        log_survive = torch.cat(
            [torch.zeros_like(leave[:, :1]), torch.cumsum(log_stay, dim=1)], dim=1
        )
        log_leave = torch.cat([F.logsigmoid(leave), torch.zeros_like(leave[:, :1])], dim=1)
        return utility, log_survive + log_leave


class EENetLoss(nn.Module):
    """Budget-constrained EENet loss.

    ``utility_weight * L_util + kl_weight * L_kl + budget_weight * L_budget
    + accuracy_weight * (1 - expected accuracy)``, where

    - ``L_util`` is the binary cross-entropy of each exit's utility logit against
      "exit ``k`` is right", weighted by the probability that the sample survives
      to exit ``k`` (so each scorer specialises on the samples that reach it);
    - ``L_kl`` is ``KL(q / sum q || r)``, pulling the exit distribution towards the
      normalised utility scores (computed in log space, so scores that underflow
      to 0 give neither ``0 / 0`` nor NaN gradients);
    - ``L_budget = |B - mean_n sum_k r_nk c_k| / B``;
    - the expected accuracy is ``mean_n sum_k r_nk 1[exit k right]``.

    The target ``y`` is the 0/1 correctness matrix ``(n_samples, n_exits)``.
    """

    costs: torch.Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        costs: torch.Tensor,
        budget: float,
        utility_weight: float = 1.0,
        kl_weight: float = 0.1,
        budget_weight: float = 1.0,
        accuracy_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("costs", torch.as_tensor(costs, dtype=torch.float32))
        self.budget = float(budget)
        self.utility_weight = utility_weight
        self.kl_weight = kl_weight
        self.budget_weight = budget_weight
        self.accuracy_weight = accuracy_weight

    def forward(
        self, output: tuple[torch.Tensor, torch.Tensor], correct: torch.Tensor
    ) -> torch.Tensor:
        utility, log_r = output
        correct = correct.to(utility.dtype)
        r = log_r.exp()
        survive = 1.0 - torch.cumsum(r, dim=1) + r
        weights = survive.detach()
        bce = F.binary_cross_entropy_with_logits(utility, correct, reduction="none")
        loss_util = (weights * bce).sum() / weights.sum().clamp_min(1e-12)

        # q / sum q in log space: scores that underflow to 0 (all of them, or only some)
        # give neither a 0 / 0 target nor the NaN gradient of xlogy at 0.
        log_target = F.log_softmax(F.logsigmoid(utility), dim=1)
        loss_kl = (log_target.exp() * (log_target - log_r)).sum(dim=1).mean()

        expected_cost = (r * self.costs).sum(dim=1).mean()
        loss_budget = (self.budget - expected_cost).abs() / self.budget
        expected_accuracy = (r * correct).sum(dim=1).mean()
        return (
            self.utility_weight * loss_util
            + self.kl_weight * loss_kl
            + self.budget_weight * loss_budget
            + self.accuracy_weight * (1.0 - expected_accuracy)
        )


class TensorBatches:
    """Mini-batches sliced from a skorch dataset held in memory as tensors.

    It stands in for ``torch.utils.data.DataLoader`` as skorch's ``iterator_train``:
    the scorer is tiny, so fetching and collating sample by sample would dominate
    training time (about 6x slower here). Shuffling draws from ``generator``, which
    keeps a seeded fit reproducible even when other threads use torch's global RNG.
    ``max_batches`` stops a pass early: with shuffling, each pass then covers a fresh
    random subset of the samples (how a step budget caps training on large sets).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        max_batches: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.max_batches = max_batches

    def __len__(self) -> int:
        n_batches = -(-len(self.dataset) // self.batch_size)
        return n_batches if self.max_batches is None else min(n_batches, self.max_batches)

    def __iter__(self):
        X, y = torch.as_tensor(self.dataset.X), torch.as_tensor(self.dataset.y)
        n_samples = len(X)
        if self.shuffle:
            order = torch.randperm(n_samples, generator=self.generator)
        else:
            order = torch.arange(n_samples)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield X[rows], y[rows]

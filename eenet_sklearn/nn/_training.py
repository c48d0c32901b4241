"""Joint training of the exits with skorch."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier
from torch import nn

from ._model import check_first_stage_input


class DepthWeightedLoss(nn.Module):
    """Weighted mean of the exits' cross-entropies, with optional self-distillation.

    ``sum_k w_k L_k / sum_k w_k`` with ``w_k = k`` (1-based) by default, so deeper
    exits, which see more of the network, weigh more. With ``distill_weight = a > 0``
    every exit but the last has ``L_k = (1 - a) CE_k + a T^2 KL(p_K^T || p_k^T)``,
    where ``p^T`` are the softmax at temperature ``T`` and the last exit's
    probabilities are a fixed target (no gradient flows into the last exit through them).

    Parameters
    ----------
    weights : array-like of shape (n_exits,), default=None
        Non-negative exit weights, not all zero; ``None`` for ``1, 2, ..., n_exits``.
    distill_weight : float, default=0.0
        Share of the distillation term, in ``[0, 1]``.
    distill_temperature : float, default=1.0
    """

    def __init__(self, weights=None, distill_weight: float = 0.0, distill_temperature: float = 1.0):
        super().__init__()
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight must lie in [0, 1], got {distill_weight!r}.")
        if not distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got {distill_temperature!r}.")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.ndim != 1 or not np.all(weights >= 0) or not weights.sum() > 0:
                raise ValueError(f"weights must be non-negative, not all zero, got {weights!r}.")
        self.weights = weights
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``(n_samples, n_exits, n_classes)`` logits against class indices."""
        n_samples, n_exits, n_classes = logits.shape
        if self.weights is None:
            weights = torch.arange(1, n_exits + 1, dtype=logits.dtype, device=logits.device)
        elif len(self.weights) != n_exits:
            raise ValueError(f"weights has {len(self.weights)} entries but the network has {n_exits} exits.")
        else:
            weights = torch.as_tensor(self.weights, dtype=logits.dtype, device=logits.device)
        per_exit = F.cross_entropy(
            logits.reshape(-1, n_classes), target.repeat_interleave(n_exits), reduction="none"
        ).view(n_samples, n_exits).mean(dim=0)
        if self.distill_weight > 0 and n_exits > 1:
            temperature = self.distill_temperature
            teacher = F.log_softmax(logits[:, -1:].detach() / temperature, dim=-1)
            student = F.log_softmax(logits[:, :-1] / temperature, dim=-1)
            distill = F.kl_div(student, teacher.expand_as(student), log_target=True, reduction="none")
            distill = distill.sum(dim=-1).mean(dim=0) * temperature**2
            mixed = (1 - self.distill_weight) * per_exit[:-1] + self.distill_weight * distill
            per_exit = torch.cat([mixed, per_exit[-1:]])
        return (weights * per_exit).sum() / weights.sum()


def last_exit_proba(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities of the last exit, from ``(n_samples, n_exits, n_classes)`` logits."""
    return torch.softmax(logits[:, -1], dim=-1)


class _Interrupted(BaseException):
    """A ``KeyboardInterrupt`` carried through skorch's ``partial_fit``, which catches those."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt


class MultiExitClassifier(NeuralNetClassifier):
    """Train a :class:`~eenet_sklearn.nn.MultiExitNetwork`'s exits jointly, with skorch.

    A skorch :class:`~skorch.NeuralNetClassifier` whose criterion weighs every exit
    (:class:`DepthWeightedLoss`). ``predict`` / ``predict_proba`` / ``score`` use the
    last exit; :meth:`transform` gives all exits' logits. To chain a trained network
    and a policy, freeze the network so that the policy is fitted on held-out data:
    ``Pipeline([("net", FrozenEstimator(net)), ("policy", policy)]).fit(X_val, y_val)``
    (``sklearn.frozen.FrozenEstimator``). Labels are class indices ``0 .. n_classes - 1``.

    Parameters
    ----------
    module : MultiExitNetwork
        An instance (trained as a copy: the instance given is left untouched) or a
        class with ``module__*`` parameters.
    train_backbone : bool, default=True
        ``False`` freezes the stages (no gradients, evaluation mode) and trains the heads only.
    criterion : default=DepthWeightedLoss
        Its parameters go as ``criterion__distill_weight=0.5`` and so on.
    optimizer : default=torch.optim.AdamW
    lr : float, default=1e-3
    max_epochs : int, default=10
    batch_size : int, default=128
    **kwargs
        Any other :class:`skorch.NeuralNetClassifier` parameter (``device``, ``callbacks``,
        ``train_split``, ``verbose``, ``iterator_train__shuffle`` (default ``True``), ...).

    Examples
    --------
    >>> from eenet_sklearn.nn import MultiExitClassifier
    >>> net = MultiExitClassifier(module=network, max_epochs=3)  # doctest: +SKIP
    >>> net.fit(X_train, y_train).transform(X_val).shape  # doctest: +SKIP
    (n_samples, n_exits, n_classes)
    """

    def __init__(
        self,
        module,
        *args,
        train_backbone: bool = True,
        criterion=DepthWeightedLoss,
        optimizer=torch.optim.AdamW,
        lr: float = 1e-3,
        max_epochs: int = 10,
        batch_size: int = 128,
        predict_nonlinearity=last_exit_proba,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            *args,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            predict_nonlinearity=predict_nonlinearity,
            **kwargs,
        )
        self.train_backbone = train_backbone

    def initialize_module(self):
        """Initialise the module; an instance given as ``module`` is copied, then frozen if asked."""
        super().initialize_module()
        if self.module_ is self.module:
            self.module_ = copy.deepcopy(self.module)
        if not self.train_backbone:
            if not hasattr(self.module_, "freeze_stages"):
                raise TypeError(
                    "train_backbone=False needs a MultiExitNetwork module, "
                    f"got {type(self.module_).__name__}."
                )
            self.module_.freeze_stages(True)
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train for ``max_epochs`` more epochs, without re-initialising (as skorch's).

        Raises
        ------
        TypeError, ValueError
            If ``X`` (an array or tensor) does not fit the first layer of the
            network's first stage, in dtype or shape: checked before training.
        KeyboardInterrupt
            On Ctrl-C during training, which skorch's own ``partial_fit`` would swallow
            (returning a half-trained net): the training is aborted instead.
        """
        if not self.initialized_:
            self.initialize()
        check_first_stage_input(self.module_, X)
        try:
            return super().partial_fit(X, y, classes, **fit_params)
        except _Interrupted as interrupted:
            # skorch's partial_fit (which fit calls) catches KeyboardInterrupt and returns a
            # half-trained net: Ctrl-C aborts the training instead, as EarlyExitPolicy's
            # fit does. fit_loop hands it through skorch wrapped, unwrapped here.
            raise interrupted.interrupt from None

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's training loop; a ``KeyboardInterrupt`` in it aborts :meth:`partial_fit`."""
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as interrupt:
            raise _Interrupted(interrupt) from interrupt

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Train the network on ``X``, then return all exits' logits on the same rows.

        What ``Pipeline.fit`` calls on a step that is not the last. The logits of the
        rows the network was trained on are more confident, and more often right, than
        on new data: a policy fitted on them misjudges which exit is right and misses
        its budget on new data. Fit the policy on held-out data instead (see Warns).

        Parameters
        ----------
        X : input data
            Anything skorch accepts.
        y : array-like of shape (n_samples,)
            Class indices ``0 .. n_classes - 1``.
        **fit_params
            Passed to :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_exits, n_classes)
            The logits of the rows trained on.

        Warns
        -----
        UserWarning
            Always: the logits are of training rows. For a network followed by a
            policy, train the network first and freeze it with scikit-learn's
            ``FrozenEstimator``, then fit the pipeline on held-out data:
            ``Pipeline([("net", FrozenEstimator(net)), ("policy", policy)]).fit(X_val, y_val)``.
        """
        warnings.warn(
            "MultiExitClassifier.fit_transform trains the network on X and returns its logits "
            "on the same rows, so a policy after it in a Pipeline is fitted on training logits "
            "(over-confident: it misses its budget on new data). Train the network first, then "
            "fit the policy on held-out data with the network frozen: Pipeline([('net', "
            "FrozenEstimator(net)), ('policy', policy)]).fit(X_val, y_val), with "
            "sklearn.frozen.FrozenEstimator.",
            UserWarning,
            stacklevel=2,
        )
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X) -> np.ndarray:
        """All exits' logits.

        Parameters
        ----------
        X : input data
            Anything skorch accepts: arrays, tensors, a dict of them (e.g. tokenizer output).

        Returns
        -------
        ndarray of shape (n_samples, n_exits, n_classes)
        """
        return self.forward(X, training=False).numpy()

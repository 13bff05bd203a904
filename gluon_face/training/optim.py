"""Optimisers and learning-rate schedules of the trainer.

The schedules are gluon-cv's :class:`gluoncv.utils.LRScheduler` pieces chained
by :class:`gluoncv.utils.LRSequential`: a linear warm-up, then step / cosine /
poly / linear / constant decay.  MXNet's optimiser calls the schedule with its
update counter ``num_update`` (1 at the first step), which is saved with the
optimiser state, so a resumed run continues the schedule where it stopped.

MXNet 1.9.1 has the fused AdamW operator (``mx.nd.contrib.adamw_update``) but
no registered AdamW optimiser; :class:`AdamW` wraps the operator.
"""
import math

import mxnet as mx
from mxnet import optimizer as mx_optimizer

from ..graph import mxnet_compat

__all__ = ["AdamW", "build_lr_scheduler", "build_optimizer"]


class AdamW(mx_optimizer.Optimizer):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019,
    https://arxiv.org/abs/1711.05101).

    At step :math:`t` with learning rate :math:`\eta_t` (from the schedule):

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1) g,\qquad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        w &\leftarrow w - \eta_t\Big(\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
              \frac{m}{\sqrt v + \epsilon} + \lambda w\Big)

    The decay :math:`\lambda` is scaled by the learning rate but not by the
    adaptive denominator (the "decoupled" part), as in PyTorch's ``AdamW``.
    Runs MXNet's fused ``adamw_update`` operator (``eta`` = :math:`\eta_t`,
    ``lr`` = the bias correction).
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon

    def create_state(self, index, weight):
        return (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype))

    def update(self, index, weight, grad, state):
        t, eta, wd = mxnet_compat.begin_update(self, index)
        correction = math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        mean, var = state
        mx.nd.contrib.adamw_update(
            weight=weight, grad=grad, mean=mean, var=var, rescale_grad=self.rescale_grad,
            lr=correction, eta=eta, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
            wd=wd,
            clip_gradient=self.clip_gradient if self.clip_gradient else -1.0, out=weight)


if "adamw" not in mx_optimizer.Optimizer.opt_registry:
    mx_optimizer.Optimizer.register(AdamW)


def build_lr_scheduler(config, iters_per_epoch):
    """The warm-up + decay schedule of ``config`` over ``config.epochs`` epochs.

    Parameters
    ----------
    config : TrainConfig
        Uses ``lr``, ``lr_mode``, ``lr_steps`` (epochs, absolute), ``lr_factor``,
        ``lr_power``, ``target_lr``, ``warmup_epochs``, ``warmup_lr``, ``epochs``.
    iters_per_epoch : int
        Optimiser steps per epoch.

    Returns
    -------
    gluoncv.utils.LRSequential
        Called with the update count (1-based), returns the learning rate.
    """
    from gluoncv.utils import LRScheduler, LRSequential

    total = config.epochs * iters_per_epoch
    warmup = int(round(config.warmup_epochs * iters_per_epoch))
    warmup = min(warmup, total - 2)
    parts = []
    if warmup >= 2:  # gluoncv's linear piece needs two points
        parts.append(LRScheduler("linear", base_lr=config.warmup_lr, target_lr=config.lr,
                                 niters=warmup))
    else:
        warmup = 0
    rest = max(total - warmup, 2)
    if config.lr_mode == "step":
        steps = config.lr_steps or [0.6 * config.epochs, 0.85 * config.epochs]
        step_iter = [max(0, int(round(s * iters_per_epoch)) - warmup) for s in steps]
        parts.append(LRScheduler("step", base_lr=config.lr, niters=rest, step_iter=step_iter,
                                 step_factor=config.lr_factor))
    else:
        parts.append(LRScheduler(config.lr_mode, base_lr=config.lr, target_lr=config.target_lr,
                                 niters=rest, power=config.lr_power))
    schedule = LRSequential(parts)
    schedule.base_lr = config.lr  # what mxnet's Optimizer compares with learning_rate
    return schedule


def build_optimizer(config, iters_per_epoch):
    """``(name, params)`` for :class:`mxnet.gluon.Trainer` from ``config``.

    ``sgd`` / ``nag``: momentum ``config.momentum``, weight decay ``config.wd``
    (L2 added to the gradient, as insightface); ``adamw``: :class:`AdamW`.
    """
    params = {"learning_rate": config.lr, "wd": config.wd,
              "lr_scheduler": build_lr_scheduler(config, iters_per_epoch)}
    if config.clip_gradient is not None:
        params["clip_gradient"] = config.clip_gradient
    if config.optimizer in ("sgd", "nag"):
        params["momentum"] = config.momentum
    elif config.optimizer == "adamw":
        params.update(beta1=config.beta1, beta2=config.beta2)
    return config.optimizer, params

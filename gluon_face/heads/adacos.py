"""AdaCos: cosine logits with a scale set from the number of classes or adapted per batch."""
import math

import mxnet as mx
import numpy as onp
from mxnet import autograd, np, npx
from mxnet.gluon import nn
from mxnet.util import use_np

from ._utils import check_bool, check_positive_int, l2_normalize, normalize_centres


def fixed_adacos_scale(num_classes):
    r"""AdaCos' fixed scale :math:`\tilde s = \sqrt{2}\,\ln(C-1)` for ``num_classes`` :math:`C`."""
    return math.sqrt(2.0) * math.log(num_classes - 1)


@use_np
class AdaCos(nn.HybridBlock):
    r"""AdaCos (Zhang et al. 2019, https://arxiv.org/abs/1905.00292).

    Cosine logits :math:`z_j = s\cos\theta_j` (normalised features and class
    weights, no margin) whose scale needs no tuning:

    * fixed (``dynamic=False``, registry ``fixed-adacos``):
      :math:`s = \sqrt{2}\,\ln(C-1)`;
    * dynamic (``dynamic=True``, registry ``adacos``): :math:`s` starts at the
      fixed value and, on every training forward, is replaced by the paper's
      rule (Eq. 15-16) on this batch

      .. math::

          B_{avg} = \frac1B\sum_i\sum_{k\ne y_i} e^{s_{old}\cos\theta_{i,k}},\qquad
          s_{new} = \frac{\ln B_{avg}}{\cos\big(\min(\pi/4,\ \theta_{med})\big)},

      :math:`\theta_{med}` the median target angle :math:`\theta_{i,y_i}` (for
      an even batch the mean of the two middle values, as ``numpy.median``);
      the batch's logits use :math:`s_{new}`, as in the paper's algorithm.

    :math:`s` is the parameter ``scale`` (1,) with ``grad_req='null'``: the
    optimiser never touches it but checkpoints save and restore it.

    **Hybridization.** Assigning a parameter cannot happen inside a cached
    graph, so the update lives in an overridden :meth:`forward` around the
    hybridized part (which computes :math:`s_{old}\cos\theta`): while
    ``autograd.is_training()`` it reads the batch back to the host (one
    synchronisation per step), computes :math:`s_{new}`, writes it to every
    device copy of ``scale`` and returns the logits times
    :math:`s_{new}/s_{old}` (a constant for autograd).  An update that comes
    out non-finite or non-positive (degenerate batches, e.g. :math:`C=2`) is
    skipped.  With several devices each device's forward updates from its own
    sub-batch and the last one wins.

    Parameters
    ----------
    emb_size : int
    num_classes : int
        :math:`C \ge 3` (so that :math:`\ln(C-1) > 0`).
    dynamic : bool, default True
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, E) float32, ``y`` (B,) float32 labels.  Output: logits (B, C).
    """

    def __init__(self, emb_size, num_classes, dynamic=True, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if self.num_classes < 3:
            raise ValueError("AdaCos needs num_classes >= 3 (s = sqrt(2)*ln(C-1)), "
                             f"got {self.num_classes}")
        self.dynamic = check_bool("dynamic", dynamic)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))
        self.scale = self.params.get("scale", shape=(1,), grad_req="null",
                                     init=mx.init.Constant(fixed_adacos_scale(self.num_classes)))

    def forward(self, x, y):
        """Logits (B, C); updates ``scale`` first when dynamic and training (see class doc)."""
        logits = super().forward(x)
        if not self.dynamic or not autograd.is_training() or isinstance(x, mx.sym.Symbol):
            return logits
        with autograd.pause():
            s_old = float(self.scale.data(x.ctx).asnumpy()[0])
            # exp(logits) is exp(s_old * cos): B_avg on the device, only scalars come back.
            not_target = 1.0 - npx.one_hot(y, self.num_classes)
            b_avg = float((np.exp(logits) * not_target).sum(axis=1).mean())
            cos_t = npx.pick(logits, y, axis=1).asnumpy().astype(onp.float64) / s_old
            theta_med = float(onp.median(onp.arccos(onp.clip(cos_t, -1.0, 1.0))))
            s_new = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med)) \
                if b_avg > 0 else float("nan")
            if not (math.isfinite(s_new) and s_new > 0):
                return logits
            self.scale.set_data(np.array([s_new], dtype=onp.float32))
            ratio = s_new / s_old
        return logits * ratio

    def hybrid_forward(self, F, x, fc7_weight, scale):
        cos = F.npx.fully_connected(l2_normalize(F, x), normalize_centres(F, fc7_weight),
                                    no_bias=True, num_hidden=self.num_classes)
        # A copy, so that the in-place update of ``scale`` in forward() cannot change
        # what autograd saved for this batch's backward pass.
        return cos * F.np.copy(scale)

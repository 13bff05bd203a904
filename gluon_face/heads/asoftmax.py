"""SphereFace's A-Softmax: the multiplicative angular margin psi(theta) with lambda annealing."""
import math
import numbers

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn
from mxnet.util import use_np

from ._utils import NORM_EPS, check_positive_int, check_real, normalize_centres


def chebyshev(F, c, m):
    r""":math:`T_m(c) = \cos(m\arccos c)` by the recurrence
    :math:`T_{n+1} = 2cT_n - T_{n-1}` (a polynomial: finite gradient everywhere)."""
    prev, cur = F.np.ones_like(c), c
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2.0 * c * cur - prev
    return cur


def asoftmax_lambda(iteration, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    r"""SphereFace's annealing weight
    :math:`\lambda = \max(\lambda_{min},\ base\,(1+\gamma\,it)^{-power})`."""
    return max(lambda_min, base * (1.0 + gamma * iteration) ** (-power))


@use_np
class ASoftmax(nn.HybridBlock):
    r"""A-Softmax, SphereFace's angular softmax (Liu et al. 2017, https://arxiv.org/abs/1704.08063).

    Class weights are normalised, features are not, and the logits are

    .. math::

        z_j = \|x\|\cos\theta_j \quad (j\ne y),\qquad
        z_y = \|x\|\,\frac{\lambda\cos\theta_y + \psi(\theta_y)}{1+\lambda},

    .. math::

        \psi(\theta) = (-1)^k\cos(m\theta) - 2k,\qquad
        \theta\in\Big[\frac{k\pi}{m}, \frac{(k+1)\pi}{m}\Big],\ k = 0,\dots,m-1,

    a continuous, decreasing extension of :math:`\cos(m\theta)` to :math:`[0,\pi]`.
    :math:`\cos(m\theta)` is the Chebyshev polynomial :math:`T_m(\cos\theta)`
    and :math:`k` counts the thresholds :math:`\cos(j\pi/m)`, :math:`j=1..m-1`,
    at or above :math:`\cos\theta`, so no ``arccos`` is taken; only the
    :math:`B` target cosines get this treatment.  (The notebook seed's version
    takes a non-integer :math:`k` and computes ``-1**k``, which is always -1.)

    :math:`\lambda` anneals from softmax towards A-Softmax as in the original
    Caffe layer: :math:`\lambda = \max(\lambda_{min},\ base\,(1+\gamma\,it)^{-power})`,
    where :math:`it` is incremented at the start of every training forward
    (``autograd.is_training()``), so the first training batch sees :math:`it=1`.
    The counter is the parameter ``iteration`` (1,) with ``grad_req='null'``,
    so checkpoints resume the schedule; the increment happens in an overridden
    :meth:`forward` before the hybridized part (a cached graph cannot assign),
    on the copy of the device the batch is on, so each device counts its own
    forwards.

    Parameters
    ----------
    emb_size : int
    num_classes : int
    margin_a : int, default 4
        The paper's integer angular margin :math:`m \ge 1` (named like
        :class:`ArcMarginBlock`'s multiplicative margin).
    base, gamma, power, lambda_min : float, defaults 1000, 0.12, 1, 5
        The annealing schedule (SphereFace's defaults).
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, E) float32, ``y`` (B,) float32 labels.  Output: logits (B, C).
    """

    def __init__(self, emb_size, num_classes, margin_a=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if isinstance(margin_a, numbers.Real) and not isinstance(margin_a, bool) \
                and float(margin_a).is_integer():
            margin_a = int(margin_a)
        self.margin_a = check_positive_int("margin_a (A-Softmax's integer m)", margin_a)
        self.base = check_real("base", base, low=0.0)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.power = check_real("power", power, low=0.0)
        self.lambda_min = check_real("lambda_min", lambda_min, low=0.0)
        m = self.margin_a
        self._thresholds = [math.cos(j * math.pi / m) for j in range(1, m)]
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))
        self.iteration = self.params.get("iteration", shape=(1,), grad_req="null",
                                         init=mx.init.Zero())

    def psi(self, F, cos_t):
        r""":math:`\psi(\theta)` from :math:`\cos\theta` (any shape), no ``arccos``."""
        c = F.np.clip(cos_t, -1.0, 1.0)
        k = F.np.zeros_like(c)
        sign = F.np.ones_like(c)
        for th in self._thresholds:
            passed = (c <= th).astype("float32")
            k = k + passed
            sign = sign * (1.0 - 2.0 * passed)
        return sign * chebyshev(F, c, self.margin_a) - 2.0 * k

    def forward(self, x, y):
        """Logits (B, C); advances ``iteration`` first while training (see class doc)."""
        if autograd.is_training() and not isinstance(x, mx.sym.Symbol):
            with autograd.pause():
                counter = self.iteration.data(x.ctx)
                counter[:] = counter + 1
        return super().forward(x, y)

    def hybrid_forward(self, F, x, y, fc7_weight, iteration):
        x_norm = F.np.sqrt(F.np.sum(x * x, axis=1, keepdims=True) + NORM_EPS)
        cos = F.npx.fully_connected(x / x_norm, normalize_centres(F, fc7_weight), no_bias=True,
                                    num_hidden=self.num_classes)
        lam = F.np.maximum(self.base * F.np.power(1.0 + self.gamma * iteration, -self.power),
                           self.lambda_min)
        cos_t = F.npx.pick(cos, y, axis=1)
        target = (lam * cos_t + self.psi(F, cos_t)) / (1.0 + lam)
        one_hot = F.npx.one_hot(y, self.num_classes)
        logits = cos * (1.0 - one_hot) + one_hot * F.np.expand_dims(target, axis=1)
        return logits * x_norm

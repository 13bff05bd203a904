"""The unified angular-margin head (SphereFace / CosFace / ArcFace / combined) and its presets."""
import math

import mxnet as mx
from mxnet.gluon import nn
from mxnet.util import use_np

from . import _kernels
from ._utils import (
    check_bool,
    check_positive_int,
    check_real,
    index_copy_targets,
    l2_normalize,
    normalize_centres,
)

#: Keyword sets of the named margin variants, for :meth:`ArcMarginBlock.from_preset`.
#: ``softmax`` and ``normface`` are the same margin-free cosine head ``s * cos(theta)``
#: (NormFace's fixed-scale form); the registry name ``softmax`` is a different head,
#: the plain fully connected :class:`~gluon_face.heads.SoftmaxBlock`.
MARGIN_PRESETS = {
    "softmax": dict(margin_s=64.0, margin_m=0.0, margin_a=1.0, margin_b=0.0),
    "normface": dict(margin_s=64.0, margin_m=0.0, margin_a=1.0, margin_b=0.0),
    "sphereface": dict(margin_s=64.0, margin_m=0.0, margin_a=1.35, margin_b=0.0),
    "cosface": dict(margin_s=64.0, margin_m=0.0, margin_a=1.0, margin_b=0.35),
    "arcface": dict(margin_s=64.0, margin_m=0.5, margin_a=1.0, margin_b=0.0),
    "combined": dict(margin_s=64.0, margin_m=0.3, margin_a=1.0, margin_b=0.2),
}


def preset_kwargs(name, **overrides):
    """The margin keywords of ``MARGIN_PRESETS[name]`` updated with ``overrides``.

    ``ValueError`` listing the presets when ``name`` is unknown.
    """
    if name not in MARGIN_PRESETS:
        valid = ", ".join(sorted(MARGIN_PRESETS))
        raise ValueError(f"unknown margin preset {name!r}; valid presets: {valid}")
    return dict(MARGIN_PRESETS[name], **overrides)


# Largest float32 below 1 is 1 - 2**-24; clamping arccos' argument two ulps inside
# [-1, 1] keeps its derivative finite (about 2e3) where |cos| rounds to 1.
_ACOS_EPS = 1e-7
# Lower bound of 1 - cos^2 under the square root of the a = 1 path, for the same reason.
_SIN2_EPS = 1e-12


@use_np
class ArcMarginBlock(nn.HybridBlock):
    r"""Additive/multiplicative angular and additive cosine margin head.

    With :math:`\hat x = x/\|x\|`, :math:`\hat w_j = w_j/\|w_j\|` and
    :math:`\cos\theta_j = \hat x\cdot\hat w_j`, the logits are

    .. math::

        z_j = s\cos\theta_j \quad (j \ne y), \qquad
        z_y = s\,\big(\cos(a\,\theta_y + m) - b\big),

    which is SphereFace-style (``margin_a``, https://arxiv.org/abs/1704.08063),
    CosFace (``margin_b``, https://arxiv.org/abs/1801.09414), ArcFace
    (``margin_m``, https://arxiv.org/abs/1801.07698) or any combination; with no
    margin it is NormFace's scaled cosine (https://arxiv.org/abs/1704.06369).
    Feed the logits to a cross-entropy, e.g. :class:`SoftmaxCrossEntropyLoss`.

    **Fallback past** :math:`\pi`. :math:`\cos(a\theta+m)` turns back up once
    :math:`a\theta+m>\pi`, and the loss would then reward moving away from the
    class centre.  Past :math:`\theta^* = (\pi-m)/a` (only when :math:`\theta^*<\pi`)
    the target logit is instead

    .. math::

        z_y = s\,\big(\min(\cos\theta_y - d\,\sin\theta^*,\ -1) - b\big),
        \qquad d = \pi - \theta^*,

    chosen by comparing cosines, :math:`\cos\theta_y \le \cos\theta^*`.  For
    :math:`a=1` this is ArcFace's/insightface's rule: ``th = cos(pi - m)``,
    ``mm = sin(pi - m) * m`` and ``cos(theta) - mm`` where ``cos(theta) <= th``
    (the constants are computed with the same expressions); the ``min`` is
    inactive there for every :math:`m \le 2.3` rad.  The ``min`` keeps the
    target logit at or below its value at :math:`\theta^*` (:math:`-s(1+b)`),
    so :math:`z_y` never increases as :math:`\theta_y` grows on :math:`[0,\pi]`.
    The fallback is allowed to step down at :math:`\theta^*`, as insightface's does.

    **easy_margin** (from the ArcMarginProduct seed): the margin is applied only
    where :math:`\cos\theta_y > 0`; elsewhere :math:`z_y = s\cos\theta_y`.  This
    deliberately breaks monotonicity at :math:`\theta=\pi/2`, where the target
    logit jumps up from :math:`s(\cos(a\pi/2+m)-b)` to 0.

    **Numerics.** Only the :math:`B` target cosines (picked with ``npx.pick``) go
    through ``arccos``/``cos``; the :math:`B\times C` matrix is only scaled.  The
    target cosine is clamped to :math:`[-1,1]` and, before ``arccos``, two ulps
    inside it, so the loss and gradients stay finite when an embedding equals
    (or is opposite to) its class centre.  For :math:`a=1` the margin uses
    :math:`\cos\theta\cos m - \sin\theta\sin m` (no ``arccos``, as insightface);
    CosFace (:math:`a=1, m=0`) is :math:`s(\cos\theta_y - b)` with no
    trigonometry at all.  The scale is applied to the normalised embeddings
    before the product (bit-exact for a power-of-two ``s``), and the B target
    logits are written into the logits in one pass over the (B, C) array
    forward and one backward.  With numba installed (the ``cpu`` extra) the
    class centres are normalised and the targets written by two fused CPU
    kernels (:mod:`gluon_face.heads._kernels`: 0.33 -> 0.24 s per step at
    B=128, C=100 k, E=512 on 2 cores); without it, by MXNet's
    ``L2Normalization`` and ``index_copy``.

    Parameters
    ----------
    emb_size : int
        Embedding dimension :math:`E`.
    num_classes : int
        Number of identities :math:`C`.
    margin_s : float, default 64.0
        Scale :math:`s > 0`.
    margin_m : float, default 0.5
        Additive angular margin :math:`m \in [0, \pi)`, radians.
    margin_a : float, default 1.0
        Multiplicative angular margin :math:`a > 0`.
    margin_b : float, default 0.0
        Additive cosine margin :math:`b`.
    easy_margin : bool, default False
        Apply the margin only where :math:`\cos\theta_y > 0` (see above).
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Attributes
    ----------
    fc7_weight : Parameter, shape (num_classes, emb_size)
        Class centres (the book's and insightface's checkpoint key), initialised
        from ``Normal(0.01)`` by a bare ``initialize()``.

    Inputs: ``x`` (B, E) float32 embeddings, ``y`` (B,) float32 labels in [0, C)
    (checked by the numba kernel: a label outside fails the step with
    ``MXNetError``, MXNet printing the operator's message; not checked on the
    ``index_copy`` path, where that would cost a device synchronisation).
    Output: logits (B, C).

    Examples
    --------
    >>> head = ArcMarginBlock(emb_size=512, num_classes=100)
    >>> head.initialize()
    >>> head(np.random.uniform(size=(2, 512)), np.ones((2,))).shape
    (2, 100)
    """

    def __init__(self, emb_size, num_classes, margin_s=64.0, margin_m=0.5, margin_a=1.0,
                 margin_b=0.0, easy_margin=False, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.margin_s = check_real("margin_s", margin_s, low=0.0, low_open=True)
        self.margin_m = check_real("margin_m", margin_m, low=0.0, high=math.pi, high_open=True)
        self.margin_a = check_real("margin_a", margin_a, low=0.0, low_open=True)
        self.margin_b = check_real("margin_b", margin_b)
        self.easy_margin = check_bool("easy_margin", easy_margin)

        a, m = self.margin_a, self.margin_m
        self._no_margin = a == 1.0 and m == 0.0 and self.margin_b == 0.0 and not easy_margin
        self._cosface = a == 1.0 and m == 0.0
        self._cos_m, self._sin_m = math.cos(m), math.sin(m)
        if a == 1.0:
            # insightface's constants, computed the same way.
            self._th = math.cos(math.pi - m)
            self._mm = math.sin(math.pi - m) * m
            self._fallback = m > 0.0
        else:
            theta_star = (math.pi - m) / a
            self._fallback = theta_star < math.pi
            self._th = math.cos(theta_star)
            self._mm = math.sin(theta_star) * (math.pi - theta_star)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))

    @classmethod
    def from_preset(cls, name, emb_size, num_classes, **overrides):
        """Build the variant ``name`` of :data:`MARGIN_PRESETS`, with keyword ``overrides``.

        ``ValueError`` listing the presets when ``name`` is unknown.
        """
        return cls(emb_size, num_classes, **preset_kwargs(name, **overrides))

    def target_logit(self, F, cos_t):
        """Margin target :math:`z_y/s` from the target cosines ``cos_t`` (B,) -> (B,)."""
        if self._cosface:
            target = cos_t - self.margin_b
        else:
            c = F.np.clip(cos_t, -1.0, 1.0)
            if self.margin_a == 1.0:
                sin_t = F.np.sqrt(F.np.clip(1.0 - c * c, _SIN2_EPS, 1.0))
                target = c * self._cos_m - sin_t * self._sin_m
            else:
                theta = F.np.arccos(F.np.clip(c, -1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
                target = F.np.cos(theta * self.margin_a + self.margin_m)
            if self._fallback:
                target = F.np.where(c > self._th, target, F.np.minimum(c - self._mm, -1.0))
            if self.margin_b != 0.0:
                target = target - self.margin_b
        if self.easy_margin:
            target = F.np.where(cos_t > 0.0, target, cos_t)
        return target

    def forward(self, x, y=None):
        """Logits (B, C) of embeddings ``x`` (B, E) with labels ``y`` (B,).

        ``y`` may be omitted only when there is no margin (``softmax``/``normface``
        presets); it is then not used at all.
        """
        if self._no_margin:
            # Keeps the unused labels out of the cached graph.
            return super().forward(x)
        if y is None:
            raise ValueError(f"{type(self).__name__} with a margin needs labels: head(x, y)")
        return super().forward(x, y)

    def hybrid_forward(self, F, x, y=None, fc7_weight=None):
        s = self.margin_s
        # Scaling the (B, E) embeddings instead of the (B, C) cosines saves a full pass
        # over the logits forward and backward; for s a power of two it is bit-exact.
        fast = _kernels.AVAILABLE
        logits = F.npx.fully_connected(l2_normalize(F, x) * s, normalize_centres(F, fc7_weight),
                                       no_bias=True, num_hidden=self.num_classes)
        if self._no_margin:
            return logits
        scaled_t = F.npx.pick(logits, y, axis=1)
        target = self.target_logit(F, scaled_t * (1.0 / s))
        if fast:  # one pass over the (B, C) logits forward and one backward
            return _kernels.set_targets(F, logits, y, target * s)
        return index_copy_targets(F, logits, y, target * s, self.num_classes)

    def __repr__(self):
        return (f"{type(self).__name__}(emb_size={self.emb_size}, "
                f"num_classes={self.num_classes}, margin_s={self.margin_s:g}, "
                f"margin_m={self.margin_m:g}, margin_a={self.margin_a:g}, "
                f"margin_b={self.margin_b:g}, easy_margin={self.easy_margin})")

r"""The angular margin of the margin heads, apart from their class centres, and its presets.

:class:`Margin` holds the scale and margins ``(s, m, a, b)`` and turns cosines
(and labels) into logits; the heads that own class centres
(:class:`~gluon_face.heads.ArcMarginBlock`, the sharded heads of
:mod:`gluon_face.parallel`) apply one.  :data:`MARGIN_PRESETS` is the one table
of the named variants; :mod:`gluon_face.evaluation` plots them with
:meth:`Margin.target_logit_of_angle`.

This module imports neither MXNet nor any other part of the package that does:
the MXNet methods take the operator namespace ``F`` of ``hybrid_forward``
(``mxnet.ndarray`` or ``mxnet.symbol``), so that :mod:`gluon_face.evaluation`
(plain numpy) can use the same presets and formula.
"""
import math
import warnings
from operator import attrgetter

import numpy as onp

from ._utils import check_bool, check_real

__all__ = ["DEPRECATED_PRESETS", "MARGIN_PRESETS", "Margin", "preset_kwargs", "resolve_preset"]

_COSINE = dict(margin_s=64.0, margin_m=0.0, margin_a=1.0, margin_b=0.0)

#: The named margin variants: name -> keywords of :class:`Margin` (and of the heads
#: built on it).  ``cosine`` is the margin-free scaled cosine ``s * cos(theta)``;
#: ``normface`` is the same under its paper's name, so that ``--loss normface
#: --model-parallel`` finds a model-parallel head.
MARGIN_PRESETS = {
    "cosine": dict(_COSINE),
    "normface": dict(_COSINE),
    "sphereface": dict(margin_s=64.0, margin_m=0.0, margin_a=1.35, margin_b=0.0),
    "cosface": dict(margin_s=64.0, margin_m=0.0, margin_a=1.0, margin_b=0.35),
    "arcface": dict(margin_s=64.0, margin_m=0.5, margin_a=1.0, margin_b=0.0),
    "combined": dict(margin_s=64.0, margin_m=0.3, margin_a=1.0, margin_b=0.2),
}

#: Former preset names -> their current name.  They still work, with a
#: ``DeprecationWarning``: ``softmax`` named the cosine preset, which is easily
#: confused with the registry's ``softmax``, the plain fully connected
#: :class:`~gluon_face.heads.SoftmaxBlock`.
DEPRECATED_PRESETS = {"softmax": "cosine"}

# Largest float32 below 1 is 1 - 2**-24; clamping arccos' argument two ulps inside
# [-1, 1] keeps its derivative finite (about 2e3) where |cos| rounds to 1.
_ACOS_EPS = 1e-7
# Lower bound of 1 - cos^2 under the square root of the a = 1 path, for the same reason.
_SIN2_EPS = 1e-12


def resolve_preset(name, stacklevel=2):
    """The current name of preset ``name``: ``name`` itself, or what a deprecated one became.

    A deprecated name (:data:`DEPRECATED_PRESETS`) gives a ``DeprecationWarning``
    attributed ``stacklevel`` frames up from the caller of this function (as
    ``warnings.warn`` counts them).  ``ValueError`` listing the presets when
    ``name`` is unknown.
    """
    if name in DEPRECATED_PRESETS:
        new = DEPRECATED_PRESETS[name]
        warnings.warn(f"margin preset {name!r} is deprecated, use {new!r} (the same margins)",
                      DeprecationWarning, stacklevel=stacklevel + 1)
        return new
    if name not in MARGIN_PRESETS:
        valid = ", ".join(sorted(MARGIN_PRESETS))
        raise ValueError(f"unknown margin preset {name!r}; valid presets: {valid}")
    return name


def preset_kwargs(name, overrides=None, stacklevel=2):
    """The keywords of ``MARGIN_PRESETS[name]`` updated with the dict ``overrides``.

    ``name`` may be deprecated (see :func:`resolve_preset`, which ``stacklevel``
    is passed to, counted from the caller of this function).
    """
    return dict(MARGIN_PRESETS[resolve_preset(name, stacklevel + 1)], **(overrides or {}))


class Margin:
    r"""Additive/multiplicative angular and additive cosine margin, with scale.

    For the cosines :math:`\cos\theta_j` between a normalised embedding and the
    normalised class centres, the logits are

    .. math::

        z_j = s\cos\theta_j \quad (j \ne y), \qquad
        z_y = s\,\big(\cos(a\,\theta_y + m) - b\big),

    which is SphereFace-style (``margin_a``, https://arxiv.org/abs/1704.08063),
    CosFace (``margin_b``, https://arxiv.org/abs/1801.09414), ArcFace
    (``margin_m``, https://arxiv.org/abs/1801.07698) or any combination; with no
    margin it is NormFace's scaled cosine (https://arxiv.org/abs/1704.06369).

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

    **Numerics.** Only the :math:`B` target cosines go through
    ``arccos``/``cos``; the :math:`B\times C` cosines are only scaled.  The
    target cosine is clamped to :math:`[-1,1]` and, before ``arccos``, two ulps
    inside it, so the loss and gradients stay finite when an embedding equals
    (or is opposite to) its class centre.  For :math:`a=1` the margin uses
    :math:`\cos\theta\cos m - \sin\theta\sin m` (no ``arccos``, as insightface);
    CosFace (:math:`a=1, m=0`) is :math:`s(\cos\theta_y - b)` with no
    trigonometry at all.

    Parameters
    ----------
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

    The keywords are those of the heads built on a margin; ``ValueError``
    naming the keyword for a value out of range.  A margin is immutable.

    Examples
    --------
    >>> Margin.from_preset("arcface")
    Margin(margin_s=64, margin_m=0.5, margin_a=1, margin_b=0, easy_margin=False)
    """

    def __init__(self, margin_s=64.0, margin_m=0.5, margin_a=1.0, margin_b=0.0,
                 easy_margin=False):
        self._s = check_real("margin_s", margin_s, low=0.0, low_open=True)
        self._m = m = check_real("margin_m", margin_m, low=0.0, high=math.pi, high_open=True)
        self._a = a = check_real("margin_a", margin_a, low=0.0, low_open=True)
        self._b = check_real("margin_b", margin_b)
        self._easy = check_bool("easy_margin", easy_margin)

        self._cosface = a == 1.0 and m == 0.0
        self._cos_m, self._sin_m = math.cos(m), math.sin(m)
        if a == 1.0:
            # insightface's constants, computed the same way.
            self._theta_star = math.pi - m
            self._th = math.cos(math.pi - m)
            self._mm = math.sin(math.pi - m) * m
            self._fallback = m > 0.0
        else:
            theta_star = (math.pi - m) / a
            self._theta_star = theta_star
            self._fallback = theta_star < math.pi
            self._th = math.cos(theta_star)
            self._mm = math.sin(theta_star) * (math.pi - theta_star)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The margin ``name`` of :data:`MARGIN_PRESETS`, with keyword ``overrides``.

        A deprecated name (:data:`DEPRECATED_PRESETS`) warns and gives its
        successor; ``ValueError`` listing the presets when ``name`` is unknown.
        """
        return cls(**preset_kwargs(name, overrides))

    # ------------------------------------------------------------------ values
    # Read-only: the fallback constants are derived from them once.
    margin_s = property(attrgetter("_s"), doc="Scale s.")
    margin_m = property(attrgetter("_m"), doc="Additive angular margin m, radians.")
    margin_a = property(attrgetter("_a"), doc="Multiplicative angular margin a.")
    margin_b = property(attrgetter("_b"), doc="Additive cosine margin b.")
    easy_margin = property(attrgetter("_easy"), doc="Margin only where cos(theta_y) > 0.")

    @property
    def margin_free(self):
        """True when every logit is ``s * cos``: no margin, so the labels are not used."""
        return self._cosface and self._b == 0.0 and not self._easy

    def keywords(self):
        """The constructor keywords: ``margin_s``, ``margin_m``, ``margin_a``, ``margin_b``,
        ``easy_margin``."""
        return dict(margin_s=self._s, margin_m=self._m, margin_a=self._a, margin_b=self._b,
                    easy_margin=self._easy)

    def __eq__(self, other):
        if not isinstance(other, Margin):
            return NotImplemented
        return self.keywords() == other.keywords()

    def __hash__(self):
        return hash(tuple(self.keywords().values()))

    def __repr__(self):
        return (f"{type(self).__name__}(margin_s={self._s:g}, margin_m={self._m:g}, "
                f"margin_a={self._a:g}, margin_b={self._b:g}, easy_margin={self._easy})")

    # ------------------------------------------------------------------ MXNet
    def target_logit(self, F, cos_t):
        """Margin target :math:`z_y/s` from the target cosines ``cos_t`` (B,) -> (B,).

        ``F`` is ``mxnet.ndarray`` or ``mxnet.symbol``; ``cos_t`` a numpy-mode
        array or symbol.
        """
        if self._cosface:
            target = cos_t - self._b
        else:
            c = F.np.clip(cos_t, -1.0, 1.0)
            if self._a == 1.0:
                sin_t = F.np.sqrt(F.np.clip(1.0 - c * c, _SIN2_EPS, 1.0))
                target = c * self._cos_m - sin_t * self._sin_m
            else:
                theta = F.np.arccos(F.np.clip(c, -1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
                target = F.np.cos(theta * self._a + self._m)
            if self._fallback:
                target = F.np.where(c > self._th, target, F.np.minimum(c - self._mm, -1.0))
            if self._b != 0.0:
                target = target - self._b
        if self._easy:
            target = F.np.where(cos_t > 0.0, target, cos_t)
        return target

    def logits(self, F, cos, labels, num_classes):
        """Logits (B, n) from the cosines ``cos`` (B, n) and the labels (B,).

        ``labels`` (float32) holds each sample's column in ``cos``, or -1 when
        its class is not among the n columns (no target logit in that row).
        ``num_classes`` is n (symbols have no shape).  With numba (the ``cpu``
        extra) the B target logits are written by the kernel
        :func:`gluon_face.heads._kernels.set_targets` (one pass over the (B, n)
        logits forward and one backward, -1 rows left as they are), the one
        :class:`~gluon_face.heads.ArcMarginBlock` uses; without it they are
        blended in with a one-hot mask.  Both give the same numbers: every
        entry is one float32 product with ``s``.
        """
        from . import _kernels

        if self.margin_free:
            return cos * self._s
        if _kernels.AVAILABLE:
            target = self.target_logit(F, F.npx.pick(cos, labels, axis=1))
            return _kernels.set_targets(F, cos * self._s, labels, target * self._s,
                                        allow_missing=True)
        one_hot = F.npx.one_hot(labels, num_classes)
        # A label of -1 picks column 0; its target is masked out by the zero one-hot row.
        target = self.target_logit(F, F.npx.pick(cos, labels, axis=1))
        logits = cos * (1.0 - one_hot) + one_hot * F.np.expand_dims(target, axis=1)
        return logits * self._s

    # ------------------------------------------------------------------ numpy
    def target_logit_of_angle(self, theta):
        r"""Margin target :math:`z_y/s` as a function of the angle ``theta``, in numpy.

        The same rule as :meth:`target_logit`, written for the angle and
        computed in float64 without the clamps (they only matter for float32
        gradients): :math:`\cos(a\theta+m) - b` up to :math:`\theta^*`, the
        fallback beyond it, and ``easy_margin``'s :math:`\cos\theta` where
        :math:`\cos\theta \le 0`.

        Parameters
        ----------
        theta : array_like
            Angles in radians, in ``[0, pi]``.

        Returns
        -------
        numpy.ndarray, float64, the shape of ``theta``
        """
        theta = onp.asarray(theta, dtype=onp.float64)
        target = onp.cos(self._a * theta + self._m)
        if self._fallback:
            tail = onp.minimum(onp.cos(theta) - self._mm, -1.0)
            target = onp.where(theta > self._theta_star, tail, target)
        target = target - self._b
        if self._easy:
            target = onp.where(onp.cos(theta) > 0.0, target, onp.cos(theta))
        return target

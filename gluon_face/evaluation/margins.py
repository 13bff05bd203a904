"""The margin family's target logit in plain numpy, for plots and cross-checks.

One formula covers the scaled cosine (NormFace), SphereFace, CosFace, ArcFace
and insightface's combined margin: for the angle ``theta`` between an embedding
and its own class centre the target logit is ``s * (cos(a*theta + m) - b)``, with a
monotone fallback where ``a*theta + m`` would pass ``pi`` (beyond it the cosine
would rise again and the loss would reward moving *away* from the centre).

The formula and the presets are the heads' own (:class:`gluon_face.heads.Margin`,
:data:`gluon_face.heads.MARGIN_PRESETS`), whose module needs no MXNet.

SphereFace (A-Softmax): https://arxiv.org/abs/1704.08063;
CosFace: https://arxiv.org/abs/1801.09414; ArcFace: https://arxiv.org/abs/1801.07698.
"""
from ..heads.margins import MARGIN_PRESETS as _HEAD_PRESETS
from ..heads.margins import Margin

__all__ = ["MARGIN_PRESETS", "target_logit_numpy"]

# Legend label of each preset, filled in with its values.  normface is left out: it is
# the cosine preset under another name, and would draw the same curve twice.
_LABELS = {
    "cosine": "cosine (NormFace)",
    "sphereface": "SphereFace a={margin_a:g}",
    "cosface": "CosFace b={margin_b:g}",
    "arcface": "ArcFace m={margin_m:g}",
    "combined": "combined ({margin_a:g}, {margin_m:g}, {margin_b:g})",
}


def _unit_scale(name):
    p = _HEAD_PRESETS[name]
    return 1.0, p["margin_m"], p["margin_a"], p["margin_b"]


#: label -> (s, m, a, b) with s = 1, for the margins of :data:`gluon_face.heads.MARGIN_PRESETS`
#: (insightface's defaults), e.g. ``"ArcFace m=0.5": (1.0, 0.5, 1.0, 0.0)``.
MARGIN_PRESETS = {label.format(**_HEAD_PRESETS[name]): _unit_scale(name)
                  for name, label in _LABELS.items()}


def target_logit_numpy(theta, s=1.0, m=0.0, a=1.0, b=0.0):
    r"""Target-class logit as a function of the angle to the class centre.

    .. math::

        \psi(\theta) = \begin{cases}
            \cos(a\theta + m) - b & \theta \le \theta^* \\
            \min(\cos\theta - d\sin\theta^*, -1) - b & \theta > \theta^*
        \end{cases}
        \qquad \theta^* = \frac{\pi - m}{a},\quad d = \pi - \theta^*

    and the logit is :math:`s\,\psi(\theta)`: :meth:`gluon_face.heads.Margin.
    target_logit_of_angle`, the rule the margin heads train with.  For
    ``a = 1`` the fallback is insightface's ArcFace rule (``cos(theta) - mm``
    with ``mm = sin(pi - m) * m`` once ``cos(theta) <= cos(pi - m)``; the ``min``
    is inactive for ``m <= 2.3``); the ``min`` keeps the curve from rising.
    With ``m = 0, a = 1`` (the scaled cosine, CosFace) the fallback is never
    reached on ``[0, pi]``.

    Parameters
    ----------
    theta : array_like
        Angles in radians, in ``[0, pi]``.
    s : float
        Scale (``s > 0``).
    m : float
        Additive angular margin (ArcFace), radians, ``0 <= m < pi``.
    a : float
        Multiplicative angular margin (SphereFace), ``a > 0``.
    b : float
        Additive cosine margin (CosFace).

    Returns
    -------
    numpy.ndarray, float64, same shape as ``theta``

    Raises
    ------
    ValueError
        A parameter out of range (named as the heads' keyword, e.g. ``margin_s``).
    """
    margin = Margin(margin_s=s, margin_m=m, margin_a=a, margin_b=b)
    return margin.margin_s * margin.target_logit_of_angle(theta)

"""The margin family's target logit in plain numpy, for plots and cross-checks.

One formula covers softmax-on-the-sphere (NormFace), SphereFace, CosFace, ArcFace
and insightface's combined margin: for the angle ``theta`` between an embedding
and its own class centre the target logit is ``s * (cos(a*theta + m) - b)``, with a
monotone fallback where ``a*theta + m`` would pass ``pi`` (beyond it the cosine
would rise again and the loss would reward moving *away* from the centre).

SphereFace (A-Softmax): https://arxiv.org/abs/1704.08063;
CosFace: https://arxiv.org/abs/1801.09414; ArcFace: https://arxiv.org/abs/1801.07698.
"""
import numpy as np

__all__ = ["MARGIN_PRESETS", "target_logit_numpy"]

#: name -> (s, m, a, b) with s = 1, at the defaults insightface uses
#: (ArcFace m=0.5, CosFace b=0.35, SphereFace a=1.35, combined (a, m, b)=(1, 0.3, 0.2)).
MARGIN_PRESETS = {
    "softmax (NormFace)": (1.0, 0.0, 1.0, 0.0),
    "SphereFace a=1.35": (1.0, 0.0, 1.35, 0.0),
    "CosFace b=0.35": (1.0, 0.0, 1.0, 0.35),
    "ArcFace m=0.5": (1.0, 0.5, 1.0, 0.0),
    "combined (1, 0.3, 0.2)": (1.0, 0.3, 1.0, 0.2),
}


def target_logit_numpy(theta, s=1.0, m=0.0, a=1.0, b=0.0):
    r"""Target-class logit as a function of the angle to the class centre.

    .. math::

        \psi(\theta) = \begin{cases}
            \cos(a\theta + m) - b & \theta \le \theta^* \\
            \cos\theta - m\sin m - b & \theta > \theta^*,\ a = 1 \\
            \min(\cos\theta - d\sin\theta^*, -1) - b & \theta > \theta^*,\ a \ne 1
        \end{cases}
        \qquad \theta^* = \frac{\pi - m}{a},\quad d = \pi - \theta^*

    and the logit is :math:`s\,\psi(\theta)`.  The ``a = 1`` branch is insightface's
    ArcFace fallback (``cos(theta) - mm`` with ``mm = sin(pi - m) * m`` once
    ``cos(theta) <= cos(pi - m)``); the ``a != 1`` branch is its generalisation,
    kept at or below ``-1`` so that the curve never rises.  With ``m = 0, a = 1``
    (softmax, CosFace) the fallback is never reached on ``[0, pi]``.

    Parameters
    ----------
    theta : array_like
        Angles in radians, normally in ``[0, pi]``.
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
    """
    for name, value in (("s", s), ("m", m), ("a", a), ("b", b)):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if s <= 0:
        raise ValueError(f"s must be positive, got {s!r}")
    if a <= 0:
        raise ValueError(f"a must be positive, got {a!r}")
    if not 0 <= m < np.pi:
        raise ValueError(f"m must be in [0, pi), got {m!r}")
    theta = np.asarray(theta, dtype=np.float64)
    theta_star = (np.pi - m) / a
    body = np.cos(a * theta + m)
    if a == 1:
        tail = np.cos(theta) - m * np.sin(m)
    else:
        d = np.pi - theta_star
        tail = np.minimum(np.cos(theta) - d * np.sin(theta_star), -1.0)
    return s * (np.where(theta > theta_star, tail, body) - b)

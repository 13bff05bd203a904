"""target_logit_numpy against the per-angle formulas of the margin papers."""
import math

import numpy as onp
import pytest

from gluon_face.evaluation import MARGIN_PRESETS, target_logit_numpy


def naive_target(theta, s, m, a, b):
    theta_star = (math.pi - m) / a
    if theta <= theta_star:
        return s * (math.cos(a * theta + m) - b)
    if a == 1:
        return s * (math.cos(theta) - m * math.sin(m) - b)
    d = math.pi - theta_star
    return s * (min(math.cos(theta) - d * math.sin(theta_star), -1.0) - b)


@pytest.mark.parametrize("name", sorted(MARGIN_PRESETS))
def test_presets_match_naive_and_never_rise(name):
    s, m, a, b = MARGIN_PRESETS[name]
    theta = onp.linspace(0, math.pi, 721)
    got = target_logit_numpy(theta, 2 * s, m, a, b)
    want = [naive_target(t, 2 * s, m, a, b) for t in theta]
    onp.testing.assert_allclose(got, want, atol=1e-12)
    assert onp.all(onp.diff(got) <= 1e-12), "the target logit must not rise with the angle"


def test_known_values():
    # softmax on the sphere: cos(theta); CosFace: cos - b; ArcFace: cos(theta + m)
    t = onp.array([0.0, math.pi / 3])
    onp.testing.assert_allclose(target_logit_numpy(t), [1.0, 0.5])
    onp.testing.assert_allclose(target_logit_numpy(t, s=64, b=0.35), 64 * (onp.cos(t) - 0.35))
    onp.testing.assert_allclose(target_logit_numpy(t, m=0.5), onp.cos(t + 0.5))
    # ArcFace beyond pi - m: insightface's fallback cos(theta) - m sin(m)
    assert target_logit_numpy(3.0, m=0.5) == pytest.approx(math.cos(3.0) - 0.5 * math.sin(0.5))


@pytest.mark.parametrize("kwargs", [dict(s=0), dict(a=0), dict(m=-0.1), dict(m=math.pi),
                                    dict(b=float("nan"))])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        target_logit_numpy(0.5, **kwargs)

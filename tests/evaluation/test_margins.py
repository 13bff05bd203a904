"""target_logit_numpy against the per-angle formulas of the margin papers and the heads' Margin."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.evaluation import MARGIN_PRESETS, target_logit_numpy
from gluon_face.heads import MARGIN_PRESETS as HEAD_PRESETS
from gluon_face.heads import Margin


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


# ---------------------------------------------------------------- one table with the heads
def test_presets_are_the_heads_table():
    """The plotted margins are those of gluon_face.heads.MARGIN_PRESETS, each drawn once."""
    plotted = [(m, a, b) for _, m, a, b in MARGIN_PRESETS.values()]
    heads = {(p["margin_m"], p["margin_a"], p["margin_b"]) for p in HEAD_PRESETS.values()}
    assert sorted(plotted) == sorted(heads)
    assert all(s == 1.0 for s, _, _, _ in MARGIN_PRESETS.values())
    assert "ArcFace m=0.5" in MARGIN_PRESETS and "cosine (NormFace)" in MARGIN_PRESETS


@pytest.mark.parametrize("name", sorted(HEAD_PRESETS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_target_logits_equal_the_mxnet_margin(name, dtype):
    """target_logit_numpy == the training heads' Margin (MXNet) for every preset on [0, pi].

    The fallback region past theta* included; the points next to theta* are left
    out, where float rounding may put the two on different sides of its step.
    The MXNet margin clamps |cos| away from 1 (finite float32 gradients) and
    float32 cosines near 1 carry little of the angle: hence the tolerances.
    """
    kw = HEAD_PRESETS[name]
    margin = Margin(**kw)
    s, m, a, b = kw["margin_s"], kw["margin_m"], kw["margin_a"], kw["margin_b"]
    theta = onp.linspace(0, math.pi, 4001)
    theta_star = (math.pi - m) / a
    keep = onp.abs(theta - theta_star) > (1e-9 if dtype == "float64" else 1e-3)
    want = target_logit_numpy(theta, s, m, a, b)
    cos = np.array(onp.cos(theta), dtype=dtype)
    got = s * margin.target_logit(mx.nd, cos).asnumpy().astype(onp.float64)
    atol = 1e-6 if dtype == "float64" else 2e-5
    onp.testing.assert_allclose(got[keep], want[keep], rtol=0, atol=s * atol)
    if theta_star < math.pi:
        assert (theta[keep] > theta_star).sum() > 10, "the fallback region is not sampled"

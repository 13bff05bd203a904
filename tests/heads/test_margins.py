"""Margin: the one presets table, its MXNet and numpy forms, and the deprecated 'softmax' name."""
import math
import warnings

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.heads import MARGIN_PRESETS, ArcMarginBlock, Margin, SoftmaxBlock, get_head
from gluon_face.heads.margins import DEPRECATED_PRESETS, preset_kwargs, resolve_preset

# The presets themselves: tests/evaluation/test_margins.py (through target_logit_numpy).
VARIANTS = [
    dict(MARGIN_PRESETS["arcface"], easy_margin=True),
    dict(MARGIN_PRESETS["cosface"], easy_margin=True),
    dict(margin_s=32.0, margin_a=2.0, margin_m=0.3, margin_b=0.1),
    dict(margin_s=16.0, margin_a=0.5, margin_m=0.1, margin_b=0.0),
    dict(margin_s=8.0, margin_a=1.0, margin_m=2.6, margin_b=0.0),
]
IDS = ["arcface-easy", "cosface-easy", "a2-m0.3-b0.1", "a0.5", "a1-m2.6"]


@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_numpy_form_equals_mxnet_form(kw):
    """target_logit_of_angle (float64, by angle) == target_logit (MXNet, by cosine) on [0, pi].

    Within 1e-6 except where the clamps that keep float32 gradients finite act
    (|cos| within 1e-6 of 1: the angle is then held about 4.5e-4 rad from 0 or pi).
    The points next to theta* and, with easy_margin, next to pi/2 are left out,
    where the two forms may pick different sides of a step.
    """
    margin = Margin(**kw)
    theta = onp.linspace(0.0, math.pi, 4001)
    want = margin.target_logit_of_angle(theta)
    keep = onp.abs(theta - margin._theta_star) > 1e-9
    if margin.easy_margin:
        keep &= onp.abs(theta - math.pi / 2) > 1e-9
    got = margin.target_logit(mx.nd, np.array(onp.cos(theta), dtype="float64")).asnumpy()
    inner = keep & (onp.abs(onp.cos(theta)) < 1.0 - 1e-6)
    onp.testing.assert_allclose(got[inner], want[inner], rtol=0, atol=1e-6)
    onp.testing.assert_allclose(got[keep], want[keep], rtol=0, atol=margin.margin_a * 5e-4)
    if margin._fallback:
        assert (theta[keep] > margin._theta_star).sum() > 10, "fallback region not sampled"


def test_presets_are_valid_margins_and_round_trip():
    for name, kw in MARGIN_PRESETS.items():
        margin = Margin.from_preset(name)
        assert margin.keywords() == dict(kw, easy_margin=False)
        assert Margin(**margin.keywords()) == margin
        assert hash(Margin(**margin.keywords())) == hash(margin)
    assert Margin.from_preset("cosine").margin_free
    assert Margin.from_preset("normface") == Margin.from_preset("cosine")
    assert not Margin.from_preset("cosface").margin_free
    assert not Margin.from_preset("cosine", easy_margin=True).margin_free
    assert Margin.from_preset("arcface", margin_s=30.0).margin_s == 30.0
    assert repr(Margin.from_preset("arcface")) == (
        "Margin(margin_s=64, margin_m=0.5, margin_a=1, margin_b=0, easy_margin=False)")
    with pytest.raises(ValueError, match="valid presets: arcface, combined, cosface, cosine, "
                                         "normface, sphereface$"):
        Margin.from_preset("arcfce")
    with pytest.raises(ValueError, match="margin_m"):
        Margin(margin_m=math.pi)


def test_every_margin_head_uses_the_one_table():
    """ArcMarginBlock.from_preset and the registry take their margins from MARGIN_PRESETS."""
    for name in MARGIN_PRESETS:
        assert ArcMarginBlock.from_preset(name, 8, 5).margin == Margin.from_preset(name)
    for name in ("cosine", "sphereface", "cosface", "arcface", "combined"):
        assert get_head(name, 8, 5).margin == Margin.from_preset(name)
    # normface is NormFace's name in the registry: the same logits, and s may be learned
    assert type(get_head("normface", 8, 5)).__name__ == "NormFace"


def test_arcmarginblock_delegates_to_its_margin():
    head = ArcMarginBlock(8, 5, margin_s=32.0, margin_m=0.4, margin_a=1.2, margin_b=0.1,
                          easy_margin=True)
    assert head.margin == Margin(32.0, 0.4, 1.2, 0.1, True)
    assert (head.margin_s, head.margin_m, head.margin_a, head.margin_b, head.easy_margin) == (
        32.0, 0.4, 1.2, 0.1, True)
    cos = np.array([0.9, 0.1, -0.5, -1.0], dtype="float32")
    onp.testing.assert_array_equal(head.target_logit(mx.nd, cos).asnumpy(),
                                   head.margin.target_logit(mx.nd, cos).asnumpy())
    assert [p.name for p in head.collect_params().values()] == [head.prefix + "fc7_weight"]


def test_logits_blend_targets_and_skip_missing_labels():
    """Margin.logits: s * cos, with the target column replaced; label -1 leaves the row alone."""
    margin = Margin.from_preset("arcface", margin_s=16.0)
    rng = onp.random.RandomState(0)
    cos = rng.uniform(-1, 1, size=(3, 4)).astype(onp.float32)
    labels = onp.array([2, -1, 0], dtype=onp.float32)
    got = margin.logits(mx.nd, np.array(cos), np.array(labels), 4).asnumpy()
    want = 16.0 * cos.astype(onp.float64)
    for i, j in ((0, 2), (2, 0)):
        want[i, j] = 16.0 * margin.target_logit_of_angle(math.acos(cos[i, j]))
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    plain = Margin.from_preset("cosine", margin_s=16.0)
    onp.testing.assert_array_equal(
        plain.logits(mx.nd, np.array(cos), np.array(labels), 4).asnumpy(), cos * 16.0)


# ---------------------------------------------------------------- deprecated 'softmax'
def test_softmax_preset_is_a_deprecated_name_of_cosine(ctx):
    assert DEPRECATED_PRESETS == {"softmax": "cosine"}
    assert "softmax" not in MARGIN_PRESETS
    with pytest.warns(DeprecationWarning, match="'softmax' is deprecated, use 'cosine'") as rec:
        old = ArcMarginBlock.from_preset("softmax", 8, 5)
    assert rec[0].filename == __file__, "the warning must point at the caller's line"
    new = ArcMarginBlock.from_preset("cosine", 8, 5)
    assert old.margin == new.margin
    W = onp.random.RandomState(0).normal(size=(5, 8)).astype(onp.float32)
    X = onp.random.RandomState(1).normal(size=(4, 8)).astype(onp.float32)
    Y = onp.array([0, 1, 2, 4], dtype=onp.float32)
    outs = []
    for head in (old, new):
        head.initialize(ctx=ctx)
        head.fc7_weight.set_data(np.array(W, ctx=ctx))
        outs.append(head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy())
    onp.testing.assert_array_equal(outs[0], outs[1])

    with pytest.warns(DeprecationWarning) as rec:
        assert Margin.from_preset("softmax") == Margin.from_preset("cosine")
    assert rec[0].filename == __file__
    with pytest.warns(DeprecationWarning):
        assert resolve_preset("softmax") == "cosine"
    with pytest.warns(DeprecationWarning):
        assert preset_kwargs("softmax", {"margin_s": 8.0}) == dict(MARGIN_PRESETS["cosine"],
                                                                  margin_s=8.0)


def test_registry_softmax_is_the_plain_fc_head_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(get_head("softmax", 8, 5)) is SoftmaxBlock
        ArcMarginBlock.from_preset("cosine", 8, 5)
        resolve_preset("normface")

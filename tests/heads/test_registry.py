"""Every registered head: built by name, hybridized == imperative, finite; keyword checks."""
import numpy as onp
import pytest
from mxnet import autograd, np

from gluon_face.heads import (
    MARGIN_PRESETS,
    AdaCos,
    ArcMarginBlock,
    ASoftmax,
    L2Softmax,
    NormFace,
    SoftmaxBlock,
    SoftmaxCrossEntropyLoss,
    get_head,
    head_keywords,
    list_heads,
)

E, C, B = 16, 20, 6
NAMES = ["adacos", "arcface", "asoftmax", "combined", "cosface", "cosine", "fixed-adacos",
         "l2softmax", "normface", "softmax", "sphereface"]


def test_names():
    assert list_heads() == NAMES


def build_pair(name, ctx):
    """Two copies of head ``name`` with the same weights (and state)."""
    heads = []
    for _ in range(2):
        head = get_head(name, E, C)
        head.initialize(ctx=ctx)
        heads.append(head)
    W = onp.random.RandomState(0).normal(size=(C, E)).astype(onp.float32)
    for head in heads:
        head.fc7_weight.set_data(np.array(W, ctx=ctx))
    return heads


def inputs():
    rng = onp.random.RandomState(1)
    X = rng.normal(size=(B, E)).astype(onp.float32)
    Y = rng.randint(0, C, size=B).astype(onp.float32)
    W = onp.random.RandomState(0).normal(size=(C, E)).astype(onp.float32)
    X[0] = W[int(Y[0])]                        # cos = 1 (up to rounding)
    X[1] = -W[int(Y[1])]                       # cos = -1
    return X, Y


@pytest.mark.parametrize("name", NAMES)
def test_hybridized_equals_imperative(ctx, name):
    imperative, hybrid = build_pair(name, ctx)
    hybrid.hybridize()
    X, Y = inputs()
    loss_fn = SoftmaxCrossEntropyLoss()
    y = np.array(Y, ctx=ctx)
    # prediction
    a = imperative(np.array(X, ctx=ctx), y).asnumpy()
    b = hybrid(np.array(X, ctx=ctx), y).asnumpy()
    assert a.shape == (B, C) and onp.isfinite(a).all()
    onp.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # two training steps: logits, gradients and any state (AdaCos scale, A-Softmax counter)
    for _ in range(2):
        grads = []
        outs = []
        for head in (imperative, hybrid):
            x = np.array(X, ctx=ctx)
            x.attach_grad()
            with autograd.record():
                out = head(x, y)
                loss = loss_fn(out, y)
            loss.backward()
            outs.append(out.asnumpy())
            grads.append((x.grad.asnumpy(), head.fc7_weight.grad(ctx).asnumpy()))
        onp.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        for g_imp, g_hyb in zip(*grads):
            assert onp.isfinite(g_imp).all()
            onp.testing.assert_allclose(g_imp, g_hyb, rtol=1e-4, atol=1e-5)
        for key, p in imperative._reg_params.items():
            onp.testing.assert_allclose(p.data(ctx).asnumpy(),
                                        hybrid._reg_params[key].data(ctx).asnumpy(), rtol=1e-6)


def test_classes():
    expect = {"softmax": SoftmaxBlock, "normface": NormFace, "l2softmax": L2Softmax,
              "asoftmax": ASoftmax, "adacos": AdaCos, "fixed-adacos": AdaCos,
              "cosine": ArcMarginBlock, "sphereface": ArcMarginBlock, "cosface": ArcMarginBlock,
              "arcface": ArcMarginBlock, "combined": ArcMarginBlock}
    for name, cls in expect.items():
        assert type(get_head(name, E, C)) is cls
    assert get_head("adacos", E, C).dynamic and not get_head("fixed-adacos", E, C).dynamic
    for name in ("cosine", "sphereface", "cosface", "arcface", "combined"):
        head = get_head(name, E, C)
        preset = MARGIN_PRESETS[name]
        assert (head.margin_s, head.margin_m, head.margin_a, head.margin_b) == (
            preset["margin_s"], preset["margin_m"], preset["margin_a"], preset["margin_b"])


def test_registry_softmax_is_plain_fc_not_cosine_preset(ctx):
    """'softmax' by name is SoftmaxBlock (x W^T); the ArcMarginBlock preset is s * cos."""
    X, Y = inputs()
    W = onp.random.RandomState(0).normal(size=(C, E)).astype(onp.float32)
    head = get_head("softmax", E, C)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    onp.testing.assert_allclose(head(np.array(X, ctx=ctx)).asnumpy(), X @ W.T, rtol=1e-5,
                                atol=1e-5)


def test_keywords_pass_through():
    assert get_head("arcface", E, C, margin_m=0.3, margin_s=30.0).margin_m == 0.3
    assert get_head("cosface", E, C, easy_margin=True).easy_margin
    assert get_head("asoftmax", E, C, margin_a=2).margin_a == 2
    assert get_head("normface", E, C, learn_scale=True).learn_scale
    assert get_head("l2softmax", E, C, alpha=7.0).alpha == 7.0
    assert get_head("softmax", E, C, use_bias=True).use_bias
    assert get_head("arcface", E, C, prefix="head_").prefix == "head_"
    assert head_keywords("arcface") == ("margin_s", "margin_m", "margin_a", "margin_b",
                                        "easy_margin")
    assert head_keywords("adacos") == ()
    assert "lambda_min" in head_keywords("asoftmax")


@pytest.mark.parametrize("name,kw", [("normface", "margin_m"), ("softmax", "margin_s"),
                                     ("adacos", "margin_s"), ("arcface", "alpha"),
                                     ("asoftmax", "margin_m"), ("l2softmax", "margin_s")])
def test_unknown_keyword_is_named(name, kw):
    with pytest.raises(ValueError) as err:
        get_head(name, E, C, **{kw: 1.0})
    msg = str(err.value)
    assert repr(kw) in msg and name in msg
    for accepted in head_keywords(name):
        assert accepted in msg


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="unknown head 'arcfce'; valid names: adacos, arcface"):
        get_head("arcfce", E, C)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_leaves_params_uninitialised(name, capsys):
    head = get_head(name, E, C)
    for p in head.collect_params().values():
        with pytest.raises(RuntimeError):
            p.data()
    assert capsys.readouterr().out == ""

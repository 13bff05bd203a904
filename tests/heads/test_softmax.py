"""SoftmaxBlock, L2Softmax and NormFace against naive per-sample numpy code."""
import math

import numpy as onp
import pytest
from mxnet import autograd, np

from gluon_face.heads import L2Softmax, NormFace, SoftmaxBlock

E, C, B = 12, 7, 6


def naive_fc(X, W, bias=None, x_scale=None, unit_w=False, s=1.0):
    """Per-sample, per-class loops: z_ij = s * <x_i', w_j'> (+ b_j)."""
    out = onp.zeros((len(X), len(W)))
    for i, x in enumerate(X.astype(onp.float64)):
        if x_scale is not None:
            x = x_scale * x / math.sqrt(sum(v * v for v in x))
        for j, w in enumerate(W.astype(onp.float64)):
            if unit_w:
                w = w / math.sqrt(sum(v * v for v in w))
            out[i, j] = s * sum(a * b for a, b in zip(x, w)) + (0.0 if bias is None else bias[j])
    return out


@pytest.fixture
def data():
    rng = onp.random.RandomState(0)
    X = rng.normal(size=(B, E)).astype(onp.float32)
    W = rng.normal(size=(C, E)).astype(onp.float32)
    bias = rng.normal(size=C).astype(onp.float32)
    Y = rng.randint(0, C, size=B).astype(onp.float32)
    X[0] = 3 * W[int(Y[0])]          # cos = 1
    X[1] = -W[int(Y[1])]             # cos = -1
    return X, W, bias, Y


def run(head, X, Y, ctx, hybridize=False):
    if hybridize:
        head.hybridize()
    return head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()


# ---------------------------------------------------------------- SoftmaxBlock
def test_softmax_block_constructs_and_runs(ctx, capsys, data):
    """Book defects: super(ArcMarginBlock, ...) in __init__ and undefined n in forward."""
    X, W, bias, Y = data
    head = SoftmaxBlock(E, C)
    assert capsys.readouterr().out == ""
    with pytest.raises(RuntimeError):
        head.fc7_weight.data()          # not initialised by the constructor
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    onp.testing.assert_allclose(run(head, X, Y, ctx), naive_fc(X, W), rtol=1e-5, atol=1e-5)
    # labels are optional and ignored
    onp.testing.assert_allclose(head(np.array(X, ctx=ctx)).asnumpy(), naive_fc(X, W),
                                rtol=1e-5, atol=1e-5)
    onp.testing.assert_allclose(run(head, X, Y, ctx, hybridize=True), naive_fc(X, W),
                                rtol=1e-5, atol=1e-5)
    assert capsys.readouterr().out == ""


def test_softmax_block_bias(ctx, data):
    X, W, bias, Y = data
    head = SoftmaxBlock(E, C, use_bias=True)
    head.initialize(ctx=ctx)
    assert (head.fc7_bias.data(ctx).asnumpy() == 0).all()
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    head.fc7_bias.set_data(np.array(bias, ctx=ctx))
    want = naive_fc(X, W, bias)
    onp.testing.assert_allclose(run(head, X, Y, ctx), want, rtol=1e-5, atol=1e-5)
    onp.testing.assert_allclose(run(head, X, Y, ctx, True), want, rtol=1e-5, atol=1e-5)


def test_softmax_block_book_init():
    head = SoftmaxBlock(512, 100)
    head.initialize()
    assert abs(head.fc7_weight.data().asnumpy().std() - 0.01) < 0.001


# ---------------------------------------------------------------- L2Softmax
@pytest.mark.parametrize("use_bias", [False, True])
def test_l2softmax_matches_naive(ctx, data, use_bias):
    X, W, bias, Y = data
    head = L2Softmax(E, C, alpha=10.0, use_bias=use_bias)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    if use_bias:
        head.fc7_bias.set_data(np.array(bias, ctx=ctx))
    want = naive_fc(X, W, bias if use_bias else None, x_scale=10.0)
    onp.testing.assert_allclose(run(head, X, Y, ctx), want, rtol=1e-5, atol=1e-4)
    onp.testing.assert_allclose(run(head, X, Y, ctx, True), want, rtol=1e-5, atol=1e-4)


def test_l2softmax_feature_norm_is_alpha(ctx, data):
    """With W = I the logits are the rescaled features: their norm is alpha."""
    X, _, _, Y = data
    head = L2Softmax(E, E, alpha=5.0)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.eye(E, ctx=ctx))
    out = run(head, X, Y % E, ctx)
    onp.testing.assert_allclose(onp.linalg.norm(out, axis=1), 5.0, rtol=1e-5)


def test_l2softmax_gradients_finite_for_zero_embedding(ctx, data):
    X, W, _, Y = data
    head = L2Softmax(E, C)
    head.initialize(ctx=ctx)
    x = np.array(onp.vstack([X, onp.zeros((1, E), onp.float32)]), ctx=ctx)
    x.attach_grad()
    with autograd.record():
        out = head(x)
    out.backward()
    assert onp.isfinite(out.asnumpy()).all() and onp.isfinite(x.grad.asnumpy()).all()


# ---------------------------------------------------------------- NormFace
def test_normface_matches_naive(ctx, data):
    X, W, _, Y = data
    head = NormFace(E, C, margin_s=20.0)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    want = naive_fc(X, W, x_scale=1.0, unit_w=True, s=20.0)
    onp.testing.assert_allclose(run(head, X, Y, ctx), want, rtol=1e-5, atol=1e-4)
    onp.testing.assert_allclose(run(head, X, Y, ctx, True), want, rtol=1e-5, atol=1e-4)
    assert "scale" not in head._reg_params


@pytest.mark.parametrize("hybridize", [False, True])
def test_normface_learned_scale_gradient(ctx, data, hybridize):
    """dL/ds = sum_ij dL/dz_ij * cos_ij; here L = sum(z * G) so dL/ds = sum(G * cos)."""
    X, W, _, Y = data
    head = NormFace(E, C, margin_s=8.0, learn_scale=True)
    head.initialize(ctx=ctx)
    assert float(head.scale.data(ctx).asnumpy()[0]) == 8.0
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    if hybridize:
        head.hybridize()
    G = onp.random.RandomState(2).normal(size=(B, C)).astype(onp.float32)
    with autograd.record():
        z = head(np.array(X, ctx=ctx))
        loss = (z * np.array(G, ctx=ctx)).sum()
    loss.backward()
    cos = naive_fc(X, W, x_scale=1.0, unit_w=True)
    onp.testing.assert_allclose(z.asnumpy(), 8.0 * cos, rtol=1e-5, atol=1e-4)
    onp.testing.assert_allclose(head.scale.grad(ctx).asnumpy()[0], (G * cos).sum(), rtol=1e-4)


@pytest.mark.parametrize("cls,kw,word", [
    (SoftmaxBlock, dict(use_bias="yes"), "use_bias"),
    (SoftmaxBlock, dict(num_classes=0), "num_classes"),
    (L2Softmax, dict(alpha=0.0), "alpha"),
    (NormFace, dict(margin_s=-1.0), "margin_s"),
    (NormFace, dict(learn_scale=None), "learn_scale"),
])
def test_bad_arguments(cls, kw, word):
    args = dict(emb_size=E, num_classes=C)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        cls(**args)

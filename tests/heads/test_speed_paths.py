"""The fused row normalisation the heads use equals the written-out formula (values and grads)."""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np
from mxnet.util import use_np

from gluon_face.heads import (
    MARGIN_PRESETS,
    ArcMarginBlock,
    _kernels,
    _utils,
    get_head,
    list_heads,
    margin,
)

from ..conftest import require

E, C, B = 16, 11, 6


def naive_normalize(x):
    x = onp.asarray(x, dtype=onp.float64)
    return x / onp.sqrt((x * x).sum(axis=1, keepdims=True) + _utils.NORM_EPS)


def naive_normalize_grad(x, g):
    """d/dx of sum(g * x / |x|) per row: (g - xh (xh . g)) / |x|, in float64."""
    x = onp.asarray(x, dtype=onp.float64)
    n = onp.sqrt((x * x).sum(axis=1, keepdims=True) + _utils.NORM_EPS)
    xh = x / n
    return (g - xh * (xh * g).sum(axis=1, keepdims=True)) / n


@use_np
class _Norm(gluon.HybridBlock):
    def __init__(self, fn, **kw):
        super().__init__(**kw)
        self.fn = fn

    def hybrid_forward(self, F, x):
        return self.fn(F, x)


def _value_and_grad(block, x, g, ctx):
    xa = np.array(x, ctx=ctx)
    xa.attach_grad()
    with autograd.record():
        out = block(xa)
    out.backward(np.array(g, ctx=ctx))
    return out.asnumpy(), xa.grad.asnumpy()


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_fused_normalize_matches_naive_and_plain(ctx, hybridize):
    rng = onp.random.RandomState(0)
    x = rng.normal(scale=0.01, size=(7, 5)).astype("float32")
    x[2] = 0.0                                            # zero row: 0 out, finite grad
    x[3] = rng.normal(scale=30.0, size=5)                 # large norm
    g = rng.normal(size=x.shape).astype("float32")
    results = []
    for fn in (_utils.l2_normalize, _utils.l2_normalize_plain):
        block = _Norm(fn)
        if hybridize:
            block.hybridize()
        results.append(_value_and_grad(block, x, g, ctx))
    (fused, fused_g), (plain, plain_g) = results
    onp.testing.assert_allclose(fused, naive_normalize(x), rtol=1e-5, atol=1e-7)
    onp.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-7)
    want_g = naive_normalize_grad(x, g)
    assert onp.isfinite(fused_g).all()
    onp.testing.assert_allclose(fused_g, want_g, rtol=1e-4, atol=1e-3)
    onp.testing.assert_allclose(fused_g, plain_g, rtol=1e-4, atol=1e-3)
    # The zero row maps to zero and its gradient is g / sqrt(eps), as the formula says.
    assert (fused[2] == 0).all()


@pytest.mark.parametrize("kernels", [True, False], ids=["numba", "mxnet"])
def test_hybridized_head_uses_fused_operator(ctx, monkeypatch, kernels):
    if kernels:
        require("numba", _kernels.AVAILABLE, "numba is not installed")
    monkeypatch.setattr(_kernels, "AVAILABLE", kernels)
    head = ArcMarginBlock(E, C)
    head.initialize(ctx=ctx)
    head.hybridize()
    head(np.ones((B, E), ctx=ctx), np.zeros((B,), ctx=ctx))
    sym = head._cached_graph[1]
    nodes = json.loads(sym.tojson())["nodes"]
    ops = [node["op"] for node in nodes]
    customs = sorted(n["attrs"]["op_type"] for n in nodes if n["op"] == "Custom")
    if kernels:  # centres and target logits through the numba kernels
        assert ops.count("L2Normalization") == 1 and "_contrib_index_copy" not in ops, ops
        assert customs == ["gf_row_normalize", "gf_set_targets"]
    else:
        assert ops.count("L2Normalization") == 2 and "_contrib_index_copy" in ops, ops
        assert not customs
    assert not [op for op in ops if "sum" in op], ops  # no written-out row norms


def _head_value_and_grads(head, X, W, Y, ctx):
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    x = np.array(X, ctx=ctx)
    x.attach_grad()
    with autograd.record():
        logits = head(x, np.array(Y, ctx=ctx))
        # a loss that weights every logit differently, so every gradient entry matters
        loss = (logits * np.array(onp.linspace(-1, 1, C), ctx=ctx)).sum() \
            + (logits * logits).sum() * 1e-3
    loss.backward()
    return logits.asnumpy(), x.grad.asnumpy(), head.fc7_weight.grad(ctx).asnumpy()


@pytest.mark.parametrize("preset", sorted(MARGIN_PRESETS))
@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_margin_head_fast_path_equals_plain_formula(ctx, monkeypatch, preset, hybridize):
    rng = onp.random.RandomState(1)
    X = rng.normal(size=(B, E)).astype("float32")
    W = rng.normal(scale=0.01, size=(C, E)).astype("float32")
    Y = rng.randint(0, C, size=B).astype("float32")
    results = []
    # shipped (numba kernels when installed) against the written-out MXNet formula
    for fn, kernels in ((_utils.l2_normalize, _kernels.AVAILABLE),
                        (_utils.l2_normalize_plain, False)):
        monkeypatch.setattr(margin, "l2_normalize", fn)
        monkeypatch.setattr(_kernels, "AVAILABLE", kernels)
        monkeypatch.setattr(_utils, "l2_normalize", fn)
        head = ArcMarginBlock.from_preset(preset, E, C)
        if hybridize:
            head.hybridize()
        results.append(_head_value_and_grads(head, X, W, Y, ctx))
    for fast, plain in zip(*results):
        scale = onp.abs(plain).max()
        onp.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", list_heads())
def test_every_head_finite_with_fused_normalisation(ctx, name):
    head = get_head(name, E, C)
    head.initialize(ctx=ctx)
    head.hybridize()
    x = np.array(onp.random.RandomState(2).normal(size=(B, E)).astype("float32"), ctx=ctx)
    y = np.array(onp.arange(B) % C, dtype="float32", ctx=ctx)
    with autograd.record():
        out = head(x, y)
    out.backward()
    assert out.shape == (B, C)
    assert onp.isfinite(out.asnumpy()).all()
    for p in head.collect_params().values():
        if p.grad_req != "null":
            assert onp.isfinite(p.grad(ctx).asnumpy()).all()


def test_legacy_ndarray_input_is_accepted():
    x = mx.nd.array([[3.0, 4.0]])
    out = _utils.l2_normalize(mx.nd, x)
    onp.testing.assert_allclose(out.asnumpy(), [[0.6, 0.8]], rtol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_target_written_at_the_right_place_past_float32_integers(ctx, hybridize):
    """B * C > 2**24: positions of the target logits must not be rounded (int64)."""
    b, c, e = 96, 200_003, 3
    rng = onp.random.RandomState(3)
    W = rng.normal(size=(c, e)).astype("float32")
    Y = onp.concatenate([[c - 1, c - 2, 0], rng.randint(0, c, size=b - 3)]).astype("float32")
    X = W[Y.astype(int)] + 0.3 * rng.normal(size=(b, e)).astype("float32")
    head = ArcMarginBlock.from_preset("cosface", e, c)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    if hybridize:
        head.hybridize()
    got = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()
    cos = naive_normalize(X) @ naive_normalize(W).T
    want = 64.0 * (cos - 0.35 * (onp.arange(c)[None, :] == Y[:, None]))
    onp.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)

"""AdaCos: the fixed scale and the dynamic update, computed by hand."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, np

from gluon_face.heads import AdaCos, fixed_adacos_scale

E, C = 8, 10


def naive_cos(X, W):
    out = onp.zeros((len(X), len(W)))
    for i, x in enumerate(X.astype(onp.float64)):
        for j, w in enumerate(W.astype(onp.float64)):
            out[i, j] = sum(a * b for a, b in zip(x, w)) / (
                math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in w)))
    return out


def hand_update(s_old, cos, Y):
    """The paper's rule, one sample and one class at a time."""
    total = 0.0
    for i in range(len(cos)):
        total += sum(math.exp(s_old * cos[i, k]) for k in range(cos.shape[1]) if k != int(Y[i]))
    b_avg = total / len(cos)
    angles = sorted(math.acos(max(-1.0, min(1.0, cos[i, int(Y[i])]))) for i in range(len(cos)))
    n = len(angles)
    med = angles[n // 2] if n % 2 else 0.5 * (angles[n // 2 - 1] + angles[n // 2])
    return math.log(b_avg) / math.cos(min(math.pi / 4, med))


def make(ctx, dynamic, W):
    head = AdaCos(E, C, dynamic=dynamic)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    return head


def inputs(B, seed=0):
    rng = onp.random.RandomState(seed)
    W = rng.normal(size=(C, E)).astype(onp.float32)
    Y = rng.randint(0, C, size=B).astype(onp.float32)
    X = (W[Y.astype(int)] + 0.8 * rng.normal(size=(B, E))).astype(onp.float32)
    X[0] = W[int(Y[0])]             # theta = 0
    return X, W, Y


def test_fixed_scale_value():
    assert fixed_adacos_scale(10) == math.sqrt(2) * math.log(9)
    assert abs(fixed_adacos_scale(10) - 3.1073) < 1e-4


@pytest.mark.parametrize("hybridize", [False, True])
def test_fixed_adacos(ctx, hybridize):
    X, W, Y = inputs(6)
    head = make(ctx, False, W)
    if hybridize:
        head.hybridize()
    s = math.sqrt(2) * math.log(C - 1)
    with autograd.record():
        out = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    onp.testing.assert_allclose(out.asnumpy(), s * naive_cos(X, W), rtol=1e-5, atol=1e-5)
    assert float(head.scale.data(ctx).asnumpy()[0]) == pytest.approx(s, rel=1e-7)


@pytest.mark.parametrize("B", [6, 5])            # even and odd medians
@pytest.mark.parametrize("hybridize", [False, True])
def test_dynamic_update_by_hand(ctx, B, hybridize):
    X, W, Y = inputs(B, seed=B)
    head = make(ctx, True, W)
    if hybridize:
        head.hybridize()
    cos = naive_cos(X, W)
    s0 = math.sqrt(2) * math.log(C - 1)
    # prediction: no update
    out = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()
    onp.testing.assert_allclose(out, s0 * cos, rtol=1e-5, atol=1e-5)
    assert float(head.scale.data(ctx).asnumpy()[0]) == pytest.approx(s0, rel=1e-7)
    # first training batch: s1 from s0, and the batch's logits use s1
    s1 = hand_update(s0, cos, Y)
    with autograd.record():
        out = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    assert float(head.scale.data(ctx).asnumpy()[0]) == pytest.approx(s1, rel=1e-4)
    onp.testing.assert_allclose(out.asnumpy(), s1 * cos, rtol=1e-4, atol=1e-4)
    # second batch: from s1
    s2 = hand_update(s1, cos, Y)
    with autograd.record():
        head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    assert float(head.scale.data(ctx).asnumpy()[0]) == pytest.approx(s2, rel=1e-4)
    assert s2 != pytest.approx(s1, rel=1e-3)


@pytest.mark.parametrize("hybridize", [False, True])
def test_dynamic_gradient_flows_with_new_scale(ctx, hybridize):
    """d(sum z)/dW must match the gradient of s_new * cos with s_new a constant."""
    X, W, Y = inputs(6)
    head = make(ctx, True, W)
    ref = make(ctx, False, W)
    if hybridize:
        head.hybridize()
    with autograd.record():
        z = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    z.backward()
    s_new = float(head.scale.data(ctx).asnumpy()[0])
    ref.scale.set_data(np.array([s_new], ctx=ctx))
    with autograd.record():
        zr = ref(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    zr.backward()
    onp.testing.assert_allclose(z.asnumpy(), zr.asnumpy(), rtol=1e-5, atol=1e-5)
    onp.testing.assert_allclose(head.fc7_weight.grad(ctx).asnumpy(),
                                ref.fc7_weight.grad(ctx).asnumpy(), rtol=1e-4, atol=1e-5)
    assert head.scale.grad_req == "null"


def test_scale_is_checkpointed(ctx, tmp_path):
    X, W, Y = inputs(6)
    head = make(ctx, True, W)
    with autograd.record():
        head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    path = str(tmp_path / "adacos.params")
    head.save_parameters(path)
    assert sorted(mx.nd.load(path)) == ["fc7_weight", "scale"]
    other = AdaCos(E, C)
    other.load_parameters(path, ctx=ctx)
    assert float(other.scale.data(ctx).asnumpy()[0]) == float(head.scale.data(ctx).asnumpy()[0])


def test_all_device_copies_updated(ctx_list):
    X, W, Y = inputs(6)
    head = AdaCos(E, C)
    head.initialize(ctx=ctx_list)
    head.fc7_weight.set_data(np.array(W))
    with autograd.record():
        head(np.array(X, ctx=ctx_list[0]), np.array(Y, ctx=ctx_list[0]))
    values = [float(d.asnumpy()[0]) for d in head.scale.list_data()]
    assert values[0] == values[1] != pytest.approx(fixed_adacos_scale(C))


def test_degenerate_update_is_skipped(ctx):
    """With C = 3 and all non-target cosines at -1, ln(B_avg) < 0: s must not go negative."""
    W = onp.eye(3, E, dtype=onp.float32)
    W[1] = -W[0]
    W[2] = -W[0]
    X = onp.tile(W[0], (4, 1))
    Y = onp.zeros(4, dtype=onp.float32)
    head = AdaCos(E, 3)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    with autograd.record():
        out = head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    s = float(head.scale.data(ctx).asnumpy()[0])
    assert s == pytest.approx(fixed_adacos_scale(3))
    assert onp.isfinite(out.asnumpy()).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes >= 3"):
        AdaCos(E, 2)
    with pytest.raises(ValueError, match="dynamic"):
        AdaCos(E, 5, dynamic="no")

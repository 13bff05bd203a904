"""A-Softmax: psi(theta) via arccos in plain python, the lambda schedule, the logits."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, np

from gluon_face.heads import ASoftmax, asoftmax_lambda

E, C = 8, 6


def naive_psi(c, m):
    """psi from the angle itself: k = floor(m theta / pi), clipped to m - 1."""
    theta = math.acos(max(-1.0, min(1.0, c)))
    k = min(int(math.floor(m * theta / math.pi)), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def naive_lambda(it, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    return max(lambda_min, base * (1 + gamma * it) ** (-power))


def naive_logits(X, W, Y, m, lam):
    out = onp.zeros((len(X), len(W)))
    for i, x in enumerate(X.astype(onp.float64)):
        xn = math.sqrt(sum(v * v for v in x))
        for j, w in enumerate(W.astype(onp.float64)):
            c = sum(a * b for a, b in zip(x, w)) / (xn * math.sqrt(sum(v * v for v in w)))
            if j == int(Y[i]):
                out[i, j] = xn * (lam * c + naive_psi(c, m)) / (1 + lam)
            else:
                out[i, j] = xn * c
    return out


def psi_of(cos_values, m):
    head = ASoftmax(E, C, margin_a=m)
    return head.psi(mx.nd, np.array(cos_values)).asnumpy()


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_psi_matches_naive(m):
    theta = onp.linspace(0.0, math.pi, 997)
    cos = onp.concatenate([onp.cos(theta), [1.0, -1.0, 0.0]])
    got = psi_of(cos.astype(onp.float32), m)
    want = onp.array([naive_psi(float(c), m) for c in cos.astype(onp.float32)])
    onp.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_psi_continuous_and_decreasing(m):
    theta = onp.linspace(0.0, math.pi, 20001)
    psi = psi_of(onp.cos(theta).astype(onp.float32), m)
    assert onp.diff(psi).max() <= 1e-5                    # never increases with theta
    assert onp.abs(onp.diff(psi)).max() < 5e-3            # no jumps on a 1.6e-4 grid
    for k in range(1, m):
        edge = k * math.pi / m
        left, right = psi_of(onp.cos([edge - 1e-4, edge + 1e-4]).astype(onp.float32), m)
        assert abs(left - (1 - 2 * k)) < 1e-3 and abs(right - (1 - 2 * k)) < 1e-3
    assert psi[0] == pytest.approx(1.0) and psi[-1] == pytest.approx(1.0 - 2 * m, abs=1e-4)


def test_lambda_schedule():
    assert asoftmax_lambda(0) == 1000.0
    assert asoftmax_lambda(1) == pytest.approx(1000.0 / 1.12)
    assert asoftmax_lambda(100) == pytest.approx(1000.0 / 13.0)
    assert asoftmax_lambda(10 ** 6) == 5.0
    assert asoftmax_lambda(10, base=10.0, gamma=1.0, power=2.0, lambda_min=0.0) == \
        pytest.approx(10.0 / 121.0)
    for it in (0, 3, 50, 1657, 1658, 10 ** 5):
        assert asoftmax_lambda(it) == pytest.approx(naive_lambda(it))


def make(ctx, W, **kw):
    head = ASoftmax(E, C, **kw)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    return head


def inputs():
    rng = onp.random.RandomState(0)
    W = rng.normal(size=(C, E)).astype(onp.float32)
    Y = rng.randint(0, C, size=8).astype(onp.float32)
    X = (3 * rng.normal(size=(8, E))).astype(onp.float32)
    X[0] = 2 * W[int(Y[0])]                # theta = 0
    X[1] = -0.5 * W[int(Y[1])]             # theta = pi
    return X, W, Y


@pytest.mark.parametrize("hybridize", [False, True])
def test_logits_and_counter(ctx, hybridize):
    X, W, Y = inputs()
    head = make(ctx, W)
    if hybridize:
        head.hybridize()
    x, y = np.array(X, ctx=ctx), np.array(Y, ctx=ctx)
    # prediction: it = 0, counter unchanged
    onp.testing.assert_allclose(head(x, y).asnumpy(), naive_logits(X, W, Y, 4, 1000.0),
                                rtol=1e-4, atol=1e-3)
    assert float(head.iteration.data(ctx).asnumpy()[0]) == 0
    for it in (1, 2, 3):
        with autograd.record():
            out = head(x, y)
        assert float(head.iteration.data(ctx).asnumpy()[0]) == it
        onp.testing.assert_allclose(out.asnumpy(), naive_logits(X, W, Y, 4, naive_lambda(it)),
                                    rtol=1e-4, atol=1e-3)
    head.iteration.set_data(np.array([10 ** 6]))
    onp.testing.assert_allclose(head(x, y).asnumpy(), naive_logits(X, W, Y, 4, 5.0),
                                rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_gradients_finite_at_plus_minus_one(ctx, m):
    W = onp.eye(C, E, dtype=onp.float32)
    X = onp.zeros((3, E), dtype=onp.float32)
    X[0, 0], X[1, 1], X[2, 3] = 2.0, -3.0, 0.5
    Y = onp.array([0, 1, 3], dtype=onp.float32)
    head = make(ctx, W, margin_a=m)
    x = np.array(X, ctx=ctx)
    x.attach_grad()
    with autograd.record():
        out = head(x, np.array(Y, ctx=ctx))
        loss = -(out * np.array(onp.eye(C)[Y.astype(int)], ctx=ctx)).sum()
    loss.backward()
    onp.testing.assert_allclose(out.asnumpy(), naive_logits(X, W, Y, m, naive_lambda(1)),
                                atol=1e-4)
    assert onp.isfinite(x.grad.asnumpy()).all()
    assert onp.isfinite(head.fc7_weight.grad(ctx).asnumpy()).all()


def test_counter_is_a_checkpointed_null_grad_parameter(ctx, tmp_path):
    X, W, Y = inputs()
    head = make(ctx, W)
    with autograd.record():
        head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx))
    assert head.iteration.grad_req == "null"
    path = str(tmp_path / "a.params")
    head.save_parameters(path)
    assert sorted(mx.nd.load(path)) == ["fc7_weight", "iteration"]
    other = ASoftmax(E, C)
    other.load_parameters(path, ctx=ctx)
    assert float(other.iteration.data(ctx).asnumpy()[0]) == 1


def test_margin_validation():
    assert ASoftmax(E, C, margin_a=3.0).margin_a == 3
    for bad in (0, 1.5, -2, True):
        with pytest.raises(ValueError, match="margin_a"):
            ASoftmax(E, C, margin_a=bad)
    with pytest.raises(ValueError, match="lambda_min"):
        ASoftmax(E, C, lambda_min=-1.0)

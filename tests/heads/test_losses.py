"""Label-smoothed cross-entropy and the center loss against hand computation."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np

from gluon_face.heads import CenterLoss, SoftmaxCrossEntropyLoss


def naive_ce(logits, Y, eps):
    out = []
    for row, y in zip(logits.astype(onp.float64), Y):
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        out.append(-sum(((1 - eps) * (j == int(y)) + eps / len(row)) * (v - log_z)
                        for j, v in enumerate(row)))
    return onp.array(out)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("hybridize", [False, True])
def test_label_smoothing_matches_naive(ctx, eps, hybridize):
    rng = onp.random.RandomState(0)
    logits = (10 * rng.normal(size=(7, 11))).astype(onp.float32)
    logits[0, 3] = 80.0                                   # a confident row
    Y = rng.randint(0, 11, size=7).astype(onp.float32)
    loss_fn = SoftmaxCrossEntropyLoss(ls_eps=eps)
    if hybridize:
        loss_fn.hybridize()
    got = loss_fn(np.array(logits, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()
    assert got.shape == (7,)
    onp.testing.assert_allclose(got, naive_ce(logits, Y, eps), rtol=1e-5, atol=1e-4)


def test_no_smoothing_equals_gluon(ctx):
    rng = onp.random.RandomState(1)
    logits = np.array(rng.normal(size=(5, 6)).astype(onp.float32), ctx=ctx)
    Y = np.array(rng.randint(0, 6, size=5).astype(onp.float32), ctx=ctx)
    ours = SoftmaxCrossEntropyLoss()(logits, Y).asnumpy()
    theirs = gluon.loss.SoftmaxCrossEntropyLoss()(logits, Y).asnumpy()
    onp.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_smoothing_gradient(ctx):
    """d loss / d z = softmax(z) - q with q = (1 - eps) onehot + eps / C."""
    rng = onp.random.RandomState(2)
    Z = rng.normal(size=(4, 5)).astype(onp.float32)
    Y = onp.array([0, 4, 2, 2], dtype=onp.float32)
    z = np.array(Z, ctx=ctx)
    z.attach_grad()
    with autograd.record():
        loss = SoftmaxCrossEntropyLoss(ls_eps=0.2)(z, np.array(Y, ctx=ctx))
    loss.backward()
    p = onp.exp(Z - Z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = 0.8 * onp.eye(5)[Y.astype(int)] + 0.2 / 5
    onp.testing.assert_allclose(z.grad.asnumpy(), p - q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [-0.1, 1.0, float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="ls_eps"):
        SoftmaxCrossEntropyLoss(ls_eps=eps)


# ---------------------------------------------------------------- center loss
K, E = 5, 4


def hand_center_update(centers, X, Y, alpha):
    centers = centers.astype(onp.float64).copy()
    new = centers.copy()
    for j in range(len(centers)):
        members = [i for i in range(len(X)) if int(Y[i]) == j]
        delta = sum((centers[j] - X[i] for i in members), onp.zeros(centers.shape[1]))
        delta = delta / (1 + len(members))
        new[j] = centers[j] - alpha * delta
    return new


def hand_center_loss(centers, X, Y):
    return onp.array([0.5 * sum((X[i, k] - centers[int(Y[i]), k]) ** 2 for k in range(X.shape[1]))
                      for i in range(len(X))])


@pytest.mark.parametrize("hybridize", [False, True])
def test_center_loss_and_update(ctx, hybridize):
    rng = onp.random.RandomState(3)
    X = rng.normal(size=(6, E)).astype(onp.float32)
    Y = onp.array([0, 2, 2, 4, 2, 0], dtype=onp.float32)      # class 2 three times, 1/3 absent
    start = rng.normal(size=(K, E)).astype(onp.float32)
    loss_fn = CenterLoss(K, E, alpha=0.5)
    loss_fn.initialize(ctx=ctx)
    assert (loss_fn.centers.data(ctx).asnumpy() == 0).all()
    loss_fn.centers.set_data(np.array(start, ctx=ctx))
    if hybridize:
        loss_fn.hybridize()
    x = np.array(X, ctx=ctx)
    x.attach_grad()
    # prediction: loss, no update
    got = loss_fn(x, np.array(Y, ctx=ctx)).asnumpy()
    onp.testing.assert_allclose(got, hand_center_loss(start, X, Y), rtol=1e-5, atol=1e-6)
    onp.testing.assert_array_equal(loss_fn.centers.data(ctx).asnumpy(), start)
    # training: loss with the old centres, gradient x - c_y, then the paper's update
    with autograd.record():
        loss = loss_fn(x, np.array(Y, ctx=ctx))
    loss.backward()
    onp.testing.assert_allclose(loss.asnumpy(), hand_center_loss(start, X, Y), rtol=1e-5)
    onp.testing.assert_allclose(x.grad.asnumpy(), X - start[Y.astype(int)], rtol=1e-5, atol=1e-6)
    want = hand_center_update(start, X, Y, 0.5)
    onp.testing.assert_allclose(loss_fn.centers.data(ctx).asnumpy(), want, rtol=1e-5, atol=1e-6)
    onp.testing.assert_array_equal(loss_fn.centers.data(ctx).asnumpy()[[1, 3]], start[[1, 3]])
    assert loss_fn.centers.grad_req == "null"
    # a second step starts from the moved centres
    with autograd.record():
        loss_fn(x, np.array(Y, ctx=ctx))
    onp.testing.assert_allclose(loss_fn.centers.data(ctx).asnumpy(),
                                hand_center_update(want, X, Y, 0.5), rtol=1e-5, atol=1e-6)


def test_center_update_reaches_all_device_copies(ctx_list):
    X = onp.arange(8, dtype=onp.float32).reshape(2, E)
    Y = onp.array([1, 1], dtype=onp.float32)
    loss_fn = CenterLoss(K, E, alpha=0.3)
    loss_fn.initialize(ctx=ctx_list)
    with autograd.record():
        loss_fn(np.array(X, ctx=ctx_list[1]), np.array(Y, ctx=ctx_list[1]))
    want = hand_center_update(onp.zeros((K, E)), X, Y, 0.3)
    for arr in loss_fn.centers.list_data():
        onp.testing.assert_allclose(arr.asnumpy(), want, rtol=1e-6)


def test_center_loss_checkpoint(ctx, tmp_path):
    loss_fn = CenterLoss(K, E)
    loss_fn.initialize(ctx=ctx)
    path = str(tmp_path / "c.params")
    loss_fn.save_parameters(path)
    assert list(mx.nd.load(path)) == ["centers"]


@pytest.mark.parametrize("kw,word", [(dict(alpha=1.5), "alpha"), (dict(num_classes=0),
                                                                   "num_classes")])
def test_center_loss_bad_arguments(kw, word):
    args = dict(num_classes=K, emb_size=E)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        CenterLoss(**args)

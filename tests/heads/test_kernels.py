"""The numba kernels of the margin heads (gf_row_normalize, gf_set_targets).

Each is checked against a naive per-row numpy reference in float64, on the
kernel path and on the MXNet-operator fallback (forced by turning
``_kernels.AVAILABLE`` off), imperative and hybridized, with gradients
written and accumulated (``grad_req='add'``).
"""
import threading

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np
from mxnet.util import use_np

from gluon_face.heads import _kernels, _utils

from ..conftest import require

PATHS = [pytest.param(True, id="numba"), pytest.param(False, id="fallback")]


@pytest.fixture
def path(request, monkeypatch):
    if request.param:
        require("numba", _kernels.AVAILABLE, "numba is not installed")
    monkeypatch.setattr(_kernels, "AVAILABLE", request.param)
    return request.param


def naive_rows(w):
    out = onp.empty(w.shape)
    for c, row in enumerate(w.astype(onp.float64)):
        out[c] = row / onp.sqrt(onp.dot(row, row) + _utils.NORM_EPS)
    return out


def naive_rows_grad(w, g):
    out = onp.empty(w.shape)
    for c, (row, gr) in enumerate(zip(w.astype(onp.float64), g.astype(onp.float64))):
        n = onp.sqrt(onp.dot(row, row) + _utils.NORM_EPS)
        out[c] = (gr - row / n * onp.dot(gr, row / n)) / n
    return out


@use_np
class _Apply(gluon.HybridBlock):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def hybrid_forward(self, F, *args):
        return self.fn(F, *args)


def _run(fn, inputs, g, ctx, hybridize, grad_req="write", repeat=1):
    block = _Apply(fn)
    if hybridize:
        block.hybridize()
    arrays = [np.array(a, ctx=ctx) for a in inputs]
    for a in arrays:
        a.attach_grad(grad_req=grad_req)
    for _ in range(repeat):
        with autograd.record():
            out = block(*arrays)
        out.backward(np.array(g, ctx=ctx))
    return out.asnumpy(), [a.grad.asnumpy() for a in arrays]


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_row_normalize_matches_naive(ctx, path, hybridize):
    rng = onp.random.RandomState(0)
    w = rng.normal(scale=0.01, size=(9, 7)).astype("float32")
    w[2] = 0.0                            # zero row: zero out, finite gradient
    w[3] = rng.normal(scale=40.0, size=7)
    g = rng.normal(size=w.shape).astype("float32")
    out, (dw,) = _run(lambda F, x: _kernels.row_normalize(F, x, _utils.NORM_EPS), [w], g,
                      ctx, hybridize)
    onp.testing.assert_allclose(out, naive_rows(w), rtol=1e-5, atol=1e-7)
    assert (out[2] == 0).all() and onp.isfinite(dw).all()
    onp.testing.assert_allclose(dw, naive_rows_grad(w, g), rtol=1e-4, atol=1e-3)
    # accumulated gradients (grad_req='add'): twice the single step
    _, (dw2,) = _run(lambda F, x: _kernels.row_normalize(F, x, _utils.NORM_EPS), [w], g, ctx,
                     hybridize, grad_req="add", repeat=2)
    onp.testing.assert_allclose(dw2, 2 * dw, rtol=1e-5, atol=1e-6)


def naive_set_targets(logits, labels, values):
    out = logits.astype(onp.float64).copy()
    for i, (y, v) in enumerate(zip(labels.astype(int), values)):
        out[i, y] = v
    return out


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_set_targets_matches_naive(ctx, path, hybridize):
    rng = onp.random.RandomState(1)
    logits = rng.normal(size=(6, 13)).astype("float32")
    labels = onp.array([0, 12, 5, 5, 7, 1], dtype="float32")
    values = rng.normal(size=6).astype("float32")
    g = rng.normal(size=logits.shape).astype("float32")
    out, (dlogits, dlabels, dvalues) = _run(_kernels.set_targets, [logits, labels, values], g,
                                            ctx, hybridize)
    onp.testing.assert_allclose(out, naive_set_targets(logits, labels, values), rtol=0, atol=0)
    want = g.copy()
    want[onp.arange(6), labels.astype(int)] = 0.0       # overwritten: no gradient to logits
    onp.testing.assert_allclose(dlogits, want, rtol=0, atol=0)
    onp.testing.assert_allclose(dvalues, g[onp.arange(6), labels.astype(int)], rtol=0, atol=0)
    assert (dlabels == 0).all()
    _, (dl2, _, dv2) = _run(_kernels.set_targets, [logits, labels, values], g, ctx, hybridize,
                            grad_req="add", repeat=2)
    onp.testing.assert_allclose(dl2, 2 * want, rtol=1e-6)
    onp.testing.assert_allclose(dv2, 2 * dvalues, rtol=1e-6)


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_set_targets_with_missing_labels_matches_naive(ctx, path, hybridize):
    """allow_missing (the sharded heads): a label of -1 leaves its row, gradient and all."""
    rng = onp.random.RandomState(3)
    logits = rng.normal(size=(5, 9)).astype("float32")
    labels = onp.array([-1, 8, 0, -1, 4], dtype="float32")
    values = rng.normal(size=5).astype("float32")
    g = rng.normal(size=logits.shape).astype("float32")

    def fn(F, a, b, c):
        return _kernels.set_targets(F, a, b, c, allow_missing=True)

    out, (dlogits, _, dvalues) = _run(fn, [logits, labels, values], g, ctx, hybridize)
    want = logits.astype(onp.float64).copy()
    want_g, want_dv = g.astype(onp.float64).copy(), onp.zeros(5)
    for i, (y, v) in enumerate(zip(labels.astype(int), values)):
        if y >= 0:
            want[i, y], want_g[i, y], want_dv[i] = v, 0.0, g[i, y]
    onp.testing.assert_allclose(out, want, rtol=0, atol=0)
    onp.testing.assert_allclose(dlogits, want_g, rtol=0, atol=0)
    onp.testing.assert_allclose(dvalues, want_dv, rtol=0, atol=0)
    _, (dl2, _, dv2) = _run(fn, [logits, labels, values], g, ctx, hybridize, grad_req="add",
                            repeat=2)
    onp.testing.assert_allclose(dl2, 2 * want_g, rtol=1e-6)
    onp.testing.assert_allclose(dv2, 2 * want_dv, rtol=1e-6)


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_set_targets_allow_missing_still_rejects_other_labels(ctx, path, capsys):
    logits = np.zeros((2, 4), ctx=ctx)
    with pytest.raises(mx.base.MXNetError):
        _kernels.set_targets(mx.nd, logits, np.array([-2, 0], dtype="float32", ctx=ctx),
                             np.zeros((2,), ctx=ctx), allow_missing=True).asnumpy()
    assert "labels must be in [0, 4) or -1" in capsys.readouterr().out


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_set_targets_rejects_labels_outside_the_classes(ctx, path, capsys):
    """No write outside the row: an error (MXNet prints the operator's message itself)."""
    logits = np.zeros((2, 4), ctx=ctx)
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(mx.base.MXNetError):
            _kernels.set_targets(mx.nd, logits, np.array(bad, dtype="float32", ctx=ctx),
                                 np.zeros((2,), ctx=ctx)).asnumpy()
        assert "labels must be in [0, 4)" in capsys.readouterr().out


def test_kernels_from_several_threads_at_once():
    """Two devices' custom operators may run concurrently: the lock keeps numba safe."""
    require("numba", _kernels.AVAILABLE, "numba is not installed")
    rng = onp.random.RandomState(2)
    w = rng.normal(size=(4000, 64)).astype("float32")
    want = naive_rows(w)
    errors = []

    def work(dev):
        try:
            for _ in range(5):
                got = _kernels.row_normalize(mx.nd, np.array(w, ctx=mx.cpu(dev)),
                                             _utils.NORM_EPS).asnumpy()
                onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(d,)) for d in (0, 1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

"""Single-device references for the sharded heads: ArcMarginBlock + cross-entropy."""
from types import SimpleNamespace

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np

from gluon_face.heads import MARGIN_PRESETS, ArcMarginBlock, SoftmaxCrossEntropyLoss


class Reference:
    """One ArcMarginBlock on cpu(0) with the given centres, trained by gluon.Trainer."""

    def __init__(self, weight, margins, ls_eps=0.0, optimizer_params=None, optimizer="sgd"):
        c, e = weight.shape
        self.block = ArcMarginBlock(e, c, **margins)
        self.block.initialize(ctx=mx.cpu(0))
        self.block.fc7_weight.set_data(np.array(weight))
        self.loss_fn = SoftmaxCrossEntropyLoss(ls_eps=ls_eps)
        self.trainer = None
        if optimizer_params is not None:
            self.trainer = gluon.Trainer(self.block.collect_params(), optimizer,
                                         dict(optimizer_params), kvstore=None)

    def forward_backward(self, x, y):
        """(losses (B,), d sum / dx (B, E), d sum / dW (C, E)) as numpy.

        The parallel heads normalise the centres and write the target logits
        with the same operators as ArcMarginBlock (the numba kernels when
        installed, else MXNet's): at cos = +-1 (hard_batch's first rows) the
        margin's sqrt(1 - cos^2) turns a 1-ulp difference between two
        normalisation kernels into ~1e-3 of loss, and these tests compare the
        sharding, not the kernels.
        """
        x = np.array(x)
        y = np.array(y)
        x.attach_grad()
        with autograd.record():
            loss = self.loss_fn(self.block(x, y), y)
        loss.backward()
        return loss.asnumpy(), x.grad.asnumpy(), self.block.fc7_weight.grad().asnumpy()

    def step(self, batch_size):
        self.trainer.step(batch_size)

    def weight(self):
        return self.block.fc7_weight.data().asnumpy()


def split(arr, ctxs, sizes=None):
    """``arr`` (numpy) cut along axis 0 into one MXNet array per context."""
    sizes = sizes or [len(arr) // len(ctxs)] * len(ctxs)
    sizes[-1] += len(arr) - sum(sizes)
    out, start = [], 0
    for ctx, size in zip(ctxs, sizes):
        out.append(np.array(arr[start:start + size], ctx=ctx))
        start += size
    return out


def cat(arrays):
    return onp.concatenate([a.asnumpy() for a in arrays], axis=0)


def hard_batch(weight, batch, rng, labels=None):
    """Random embeddings (B, E) and labels, with the cosine edge cases in the first rows:
    an embedding equal to its class centre (cos = 1), opposite to it (cos = -1),
    and close to opposite (theta near pi, where the margins fall back)."""
    c, e = weight.shape
    y = rng.randint(0, c, size=batch) if labels is None else onp.asarray(labels)
    x = rng.normal(size=(batch, e)).astype(onp.float32)
    x[0] = 3.0 * weight[y[0]]
    x[1] = -2.0 * weight[y[1]]
    x[2] = -weight[y[2]] + 0.05 * onp.abs(weight[y[2]]).mean() * x[2]
    return x, y.astype(onp.float32)


@pytest.fixture
def rng():
    return onp.random.RandomState(0)


@pytest.fixture
def ref():
    """Helpers: ref.Reference, ref.split, ref.cat, ref.hard_batch, ref.presets."""
    return SimpleNamespace(Reference=Reference, split=split, cat=cat, hard_batch=hard_batch,
                           presets=MARGIN_PRESETS)

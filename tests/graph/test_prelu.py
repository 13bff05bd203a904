"""gluon_face.graph.prelu: the split PReLU graph trains the network it came from."""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face.graph import mxnet_compat
from gluon_face.graph.prelu import split_prelu, to_split_prelu, training_graph


@use_np
class ResidualPReLU(HybridBlock):
    """conv -> BN -> PReLU, plus the input: one PReLU and one same-shape residual sum."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2D(3, 3, padding=1, in_channels=3, use_bias=False)
        self.bn = nn.BatchNorm(in_channels=3)
        self.act = nn.PReLU(alpha_initializer=mx.init.Constant(0.2), in_channels=3)

    def hybrid_forward(self, F, x):
        return self.act(self.bn(self.conv(x))) + x


def _ops(sym):
    return [n["op"] for n in json.loads(sym.tojson())["nodes"]]


def _net(ctx):
    net = ResidualPReLU()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.act.alpha.set_data(np.array([0.1, -0.3, 0.6], ctx=ctx))
    return net


@use_np
def _outputs_and_grads(block, net, x, dy):
    with autograd.record():
        y = block(x)
    y.backward(dy)
    grads = {k: p.grad().asnumpy().copy() for k, p in net.collect_params().items()
             if p.grad_req != "null"}
    return y.asnumpy(), grads


@use_np
def test_split_block_has_the_plain_outputs_and_gradients(ctx):
    rng = onp.random.RandomState(0)
    x = np.array(rng.normal(size=(2, 3, 5, 5)).astype("float32"), ctx=ctx)
    dy = np.array(rng.normal(size=(2, 3, 5, 5)).astype("float32"), ctx=ctx)
    net = _net(ctx)
    want, want_grads = _outputs_and_grads(net, net, x, dy)  # imperative reference
    split = to_split_prelu(net, x)
    got, got_grads = _outputs_and_grads(split, net, x, dy)
    ops = _ops(mxnet_compat.cached_graph(split)[1])
    assert "LeakyReLU" not in ops and "_npi_add" not in ops and "elemwise_add" in ops
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert set(got_grads) == set(want_grads)
    for name in want_grads:
        onp.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-4,
                                    err_msg=name)


@pytest.mark.parametrize("split", [True, False])
def test_training_graph_adds_only_fixed_statistics(ctx, split):
    net = _net(ctx)
    x = np.zeros((1, 3, 5, 5), ctx=ctx)
    inputs, legacy, constants = training_graph(net, x, split=split)
    ops = _ops(legacy)
    assert ("LeakyReLU" in ops) is not split
    assert "elemwise_add" in ops and "_npi_add" not in ops
    own = set(net.collect_params())
    assert own <= set(legacy.list_arguments() + legacy.list_auxiliary_states())
    if split:
        # The two scalings' mean and variance; the slope's 1 - alpha is computed.
        prelu = [n["name"] for n in json.loads(legacy.tojson())["nodes"]
                 if n["name"].endswith("_slope")]
        assert len(prelu) == 1
        name = prelu[0][:-len("_slope")]  # the PReLU node's name
        assert sorted(constants) == sorted(f"{name}_{part}_{stat}" for part in
                                           ("slope", "rest") for stat in ("mean", "var"))
        assert not own & set(constants)
    else:
        assert constants == {}


def test_split_prelu_of_a_graph_without_prelu_is_the_same_graph():
    data = mx.sym.var("data")
    sym = mx.sym.Activation(data, act_type="relu")
    assert split_prelu(sym, {}, tied=True) == (sym, {})

"""gluon_face.graph.fused: the float32 inference graph every fast copy starts from.

The fused, bf16 and int8 copies of a FaceResNet are checked in tests/test_inference.py.
"""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face.graph.fused import inference_graph, to_fused


@use_np
class Residual(HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2D(3, 3, padding=1, in_channels=3)
        self.bn = nn.BatchNorm(in_channels=3)
        self.act = nn.PReLU(in_channels=3)

    def hybrid_forward(self, F, x):
        return self.act(self.bn(self.conv(x))) + x


@pytest.mark.filterwarnings("ignore:Cannot decide type")
def test_inference_graph_copies_parameters_and_computes_the_same(ctx):
    net = Residual()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    rng = onp.random.RandomState(0)
    net.act.alpha.set_data(np.array([0.1, -0.3, 0.6], ctx=ctx))
    net.bn.running_var.set_data(np.array([0.5, 2.0, 1.5], ctx=ctx))
    x = np.array(rng.normal(size=(2, 3, 5, 5)).astype("float32"), ctx=ctx)
    data_name, legacy, params = inference_graph(net, x)
    ops = [n["op"] for n in json.loads(legacy.tojson())["nodes"]]
    assert "LeakyReLU" not in ops and "_npi_add" not in ops
    assert set(params) == set(legacy.list_arguments() + legacy.list_auxiliary_states()) \
        - {data_name}
    args = {n: params[n] for n in legacy.list_arguments() if n != data_name}
    exe = legacy.bind(ctx, dict(args, **{data_name: x.as_nd_ndarray()}),
                      aux_states={n: params[n] for n in legacy.list_auxiliary_states()},
                      grad_req="null")
    got = exe.forward(is_train=False)[0].asnumpy()
    net.hybridize(active=False)
    want = net(x).asnumpy()
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if ctx.device_type == "cpu":  # MKLDNN is a CPU backend
        fused = to_fused(net, x)
        assert all(p.grad_req == "null" for p in fused.collect_params().values())
        onp.testing.assert_allclose(fused(x).asnumpy(), want, rtol=1e-4, atol=1e-4)

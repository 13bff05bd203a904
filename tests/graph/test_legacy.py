"""gluon_face.graph.legacy: the one numpy -> legacy operator table and its two clients' views."""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import gluon, np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face.graph.legacy import (
    NUMPY_TO_LEGACY,
    legacy_symbol,
    to_legacy_graph,
    trace,
)


@use_np
class NumpyArithmetic(HybridBlock):
    """A convolution followed by numpy-mode arithmetic: one same-shape and one
    broadcasting sum, scalar and element-wise operators, a reduction over axes,
    numpy and npx reshapes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2D(4, 3, padding=1, in_channels=3)

    def hybrid_forward(self, F, x):
        y = self.conv(x)
        z = y + y * 0.5                                     # same shapes
        z = z + F.np.sum(z, axis=(2, 3), keepdims=True)     # (B,4,H,W) + (B,4,1,1)
        z = F.np.sqrt(F.np.square(z) + 1.0)
        z = F.npx.relu(z - 1.5)
        z = F.np.reshape(z, (-1, 4 * 8 * 8))
        z = F.npx.reshape(z, (-2, -1))
        return F.np.tanh(z) / 2 - F.np.exp(-z) * z


def _ops(sym):
    return [n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]


def _net_and_input(ctx):
    net = NumpyArithmetic()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = np.array(onp.random.RandomState(0).uniform(-1, 1, (2, 3, 8, 8)).astype("float32"),
                 ctx=ctx)
    return net, x


@pytest.mark.filterwarnings("ignore:Cannot decide type")  # SymbolBlock's float32 data input
def test_legacy_symbol_leaves_no_numpy_operator_and_computes_the_same(ctx):
    net, x = _net_and_input(ctx)
    inputs, sym = trace(net, x)
    before = _ops(sym)
    assert "_npi_add" in before and "_np_sum" in before and "_npx_reshape" in before
    legacy = legacy_symbol(sym, {inputs[0].name: x.shape})
    ops = _ops(legacy)
    assert not [op for op in ops if op.startswith(("_np", "_npi", "_npx"))], ops
    # The same-shape sum is oneDNN's, the broadcasting one stays general.
    assert ops.count("elemwise_add") == 1 and ops.count("broadcast_add") == 1
    assert {"sum", "Reshape", "_mul_scalar", "relu", "tanh"} <= set(ops)
    block = gluon.SymbolBlock(legacy.as_np_ndarray(),
                              [mx.sym.var(inputs[0].name).as_np_ndarray()],
                              params=net.collect_params())
    got = block(x).asnumpy()
    net.hybridize(active=False)
    want = net(x).asnumpy()
    onp.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_every_table_entry_names_registered_operators():
    registered = set(mx.operator.get_all_registered_operators())
    assert set(NUMPY_TO_LEGACY) <= registered, set(NUMPY_TO_LEGACY) - registered
    assert set(NUMPY_TO_LEGACY.values()) <= registered
    assert all(op.startswith(("_np", "_npi", "_npx")) for op in NUMPY_TO_LEGACY)
    assert not any(op.startswith(("_np", "_npi", "_npx")) for op in NUMPY_TO_LEGACY.values())


def _add_graph():
    return {"nodes": [{"op": "null", "name": "a", "inputs": []},
                      {"op": "null", "name": "b", "inputs": []},
                      {"op": "_npi_add", "name": "s", "inputs": [[0, 0, 0], [1, 0, 0]]}],
            "arg_nodes": [0, 1], "heads": [[2, 0, 0]]}


@pytest.mark.parametrize("shapes, want", [
    (None, "broadcast_add"),                                  # the ONNX export's view
    ({"a": (2, 3), "b": (2, 3)}, "elemwise_add"),
    ({"a": (2, 3), "b": (1, 3)}, "broadcast_add"),
    ({"a": (2, 3)}, "broadcast_add"),                         # one shape unknown
])
def test_shapes_decide_only_the_sum(shapes, want):
    graph = _add_graph()
    new, renamed = to_legacy_graph(graph, shapes)
    assert new["nodes"][2]["op"] == want
    assert renamed == {"_npi_add": 1}
    assert graph["nodes"][2]["op"] == "_npi_add"  # the input graph is not changed


def test_legacy_symbol_of_a_legacy_graph_is_itself():
    data = mx.sym.var("data")
    sym = mx.sym.relu(data) + data
    assert legacy_symbol(sym, {"data": (2, 3)}).tojson() == sym.tojson()


def test_trace_reuses_the_graph_unless_asked(ctx):
    from gluon_face.graph import mxnet_compat

    net, x = _net_and_input(ctx)
    assert mxnet_compat.cached_graph(net) is None
    inputs, sym = trace(net, x)  # hybridizes and runs the net
    assert [i.name for i in inputs] == ["data"]
    assert trace(net, x)[1] is sym
    again = trace(net, x, retrace=True)
    assert again[1] is not sym and again[1].tojson() == sym.tojson()

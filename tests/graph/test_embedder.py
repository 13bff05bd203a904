"""gluon_face.graph.embedder: mode names and the modes that return the network itself."""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import nn

from gluon_face.graph import mxnet_compat
from gluon_face.graph.embedder import MODES, check_mode, prepare_embedder


def test_check_mode_names_the_valid_modes():
    for mode in MODES:
        check_mode(mode)
    with pytest.raises(ValueError, match="block, hybrid, fused, bf16, int8"):
        check_mode("fp32")


def test_block_and_hybrid_modes_return_the_network(ctx):
    net = nn.HybridSequential()
    net.add(nn.Dense(3, in_units=4))
    net.initialize(ctx=ctx)
    x = np.array(onp.ones((2, 4), dtype="float32"), ctx=ctx)
    with mx.util.np_array(True), mx.util.np_shape(True):
        assert prepare_embedder(net, x, mode="hybrid") is net
        net(x)
        assert mxnet_compat.cached_graph(net) is not None  # hybridized: traced at the call
        assert prepare_embedder(net, x, mode="block") is net
        net(x)
        assert mxnet_compat.cached_graph(net) is None  # imperative again

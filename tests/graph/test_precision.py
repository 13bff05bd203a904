"""gluon_face.graph.precision: amp's operator lists as the pass uses them.

bfloat16 and float16 graphs of a FaceResNet are checked in tests/test_inference.py.
"""
import json

import mxnet as mx
import pytest
from mxnet import np

from gluon_face.graph.precision import (
    LOW_PRECISION_DTYPES,
    conditional_fp32_ops,
    grouped_convolutions,
    to_low_precision,
)
from gluon_face.training.amp import cpu_has_bf16

from ..conftest import needs


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
def test_prelu_stays_float32(dtype):
    ops = conditional_fp32_ops(dtype)
    leaky = [values for name, attr, values in ops if name == "LeakyReLU" and attr == "act_type"]
    assert len(leaky) == 1 and "prelu" in leaky[0]


def test_other_dtypes_are_refused():
    with pytest.raises(ValueError, match="bfloat16, float16"):
        to_low_precision(None, np.zeros((1, 3)), dtype="int8")


def test_grouped_convolutions_are_found_by_name():
    x = mx.sym.var("data")
    dense = mx.sym.Convolution(x, kernel=(3, 3), num_filter=8, name="dense")
    depthwise = mx.sym.Convolution(dense, kernel=(3, 3), num_filter=8, num_group=8,
                                   name="depthwise")
    grouped = mx.sym.Convolution(depthwise, kernel=(1, 1), num_filter=8, num_group=2,
                                 name="grouped")
    assert grouped_convolutions(grouped) == ["depthwise", "grouped"]
    assert grouped_convolutions(dense) == []


@needs("bf16", cpu_has_bf16(), "CPU without avx512_bf16")
def test_mobilefacenet_trains_under_bf16():
    # MXNet 1.9.1's threaded engine failed this step ("could not create a primitive
    # descriptor for a reorder primitive") while the depthwise convolutions were bfloat16
    from gluon_face.benchmarks.backbones import _batch, build_step

    x, y = _batch(8, 64, 100, mx.cpu())  # 32 px, batch 4 failed only sometimes
    step = build_step("mobilefacenet", "train", "bf16", x, y, train_classes=100)
    for _ in range(3):
        step()
        mx.nd.waitall()


def test_grouped_convolutions_stay_float32_in_the_training_graph():
    import numpy as onp
    from mxnet import autograd

    from gluon_face.graph import mxnet_compat
    from gluon_face.model_zoo import get_model

    net = get_model("mobilefacenet", image_size=32)
    net.initialize(mx.init.Xavier())
    x = np.ones((2, 3, 32, 32))
    net.hybridize(static_alloc=True, static_shape=True)
    with autograd.record():
        net(x)
    block = to_low_precision(net, x, dtype="bfloat16", share_params=True)
    inputs, sym = mxnet_compat.cached_graph(block)
    sym = sym.as_nd_ndarray()
    internals = sym.get_internals()
    _, types, _ = internals.infer_type_partial(**{i.name: onp.float32 for i in inputs})
    dtype = dict(zip(internals.list_outputs(), types))
    grouped = set(grouped_convolutions(sym))
    convs = [n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == "Convolution"]
    assert grouped and len(grouped) < len(convs)
    low = {name: dtype[name + "_output"] != onp.float32 for name in convs}
    assert not any(low[name] for name in grouped)  # depthwise convolutions in float32
    assert all(low[name] for name in convs if name not in grouped)  # the rest in bfloat16

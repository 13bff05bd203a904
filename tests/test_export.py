"""ONNX export: hybridize -> net.export -> mx.onnx.export_model -> onnxruntime parity."""
import json
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face import model_zoo
from gluon_face.export import (
    NUMPY_TO_LEGACY,
    OnnxMismatchError,
    check_onnx,
    export_onnx,
    to_legacy_graph,
)

from .conftest import missing_modules, needs

ONNX_MISSING = missing_modules("onnx", "onnxruntime")
pytestmark = needs("onnx", not ONNX_MISSING, ONNX_MISSING)

SIZE = 16
EMB = 8


@use_np
class ConvBNPReLUDenseBN(HybridBlock):
    """A face-backbone in miniature: stem, a residual block with numpy-mode
    arithmetic (``_npi_add``, ``_npi_multiply_scalar``), per-channel PReLU, and the
    "E" output (BN without scale -> Dropout -> Dense -> BN)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = nn.HybridSequential()
        self.features.add(nn.Conv2D(8, 3, padding=1, use_bias=False),
                          nn.BatchNorm(epsilon=2e-5), nn.PReLU(in_channels=8))
        self.body = nn.HybridSequential()
        self.body.add(nn.Conv2D(8, 3, strides=2, padding=1, use_bias=False),
                      nn.BatchNorm(epsilon=2e-5))
        self.downsample = nn.HybridSequential()
        self.downsample.add(nn.Conv2D(8, 1, strides=2, use_bias=False),
                            nn.BatchNorm(epsilon=2e-5))
        self.output = nn.HybridSequential()
        self.output.add(nn.BatchNorm(epsilon=2e-5, scale=False), nn.Dropout(0.4), nn.Dense(EMB),
                        nn.BatchNorm(epsilon=2e-5))

    def hybrid_forward(self, F, x):
        x = self.features(x)
        x = self.body(x) + 0.5 * self.downsample(x)
        return self.output(x)


def randomise_batchnorm(net, rng, spread=0.5):
    """Non-trivial running statistics, affine parameters and PReLU slopes, so that
    they are really exported; ``gamma`` is set even where ``scale=False`` (MXNet
    ignores it there, ONNX must too)."""
    for name, p in net.collect_params().items():
        shape = p.shape
        if name.endswith("running_mean") or name.endswith("beta"):
            value = rng.uniform(-spread, spread, shape)
        elif name.endswith("running_var") or name.endswith("gamma"):
            value = rng.uniform(1 - spread, 1 + 2 * spread, shape)
        elif name.endswith("alpha"):
            value = rng.uniform(0.05, 0.5, shape)
        else:
            continue
        p.set_data(np.array(value.astype("float32")))


@pytest.fixture
def net():
    net = ConvBNPReLUDenseBN()
    net.initialize(mx.init.Xavier())
    net(np.zeros((1, 3, SIZE, SIZE)))
    randomise_batchnorm(net, onp.random.RandomState(0))
    return net


def test_export_matches_mxnet(net, tmp_path):
    path = tmp_path / "tiny.onnx"
    report = export_onnx(net, path, (SIZE, SIZE), batch_size=2, atol=1e-4)
    assert path.is_file() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert report["input_shape"] == (2, 3, SIZE, SIZE)
    assert report["output_shape"] == (2, EMB)
    assert report["renamed_ops"].get("_npi_add") == 1
    assert report["rewrite_max_abs_diff"] == 0.0
    assert report["max_abs_diff"] <= 1e-4

    # independent check: onnxruntime on fresh inputs vs the imperative network
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "PRelu"} <= ops and ops & {"Gemm", "MatMul"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]  # weights are not inputs
    x = onp.random.RandomState(1).uniform(-1, 1, (2, 3, SIZE, SIZE)).astype("float32")
    got = session.run(None, {"data": x})[0]
    want = net(np.array(x)).asnumpy()
    onp.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert onp.abs(want).max() > 0.1  # the comparison is not between near-zero outputs
    assert check_onnx(str(path), net, input_shape=(2, 3, SIZE, SIZE)) <= 1e-4


def test_mismatch_writes_nothing(net, tmp_path):
    path = tmp_path / "never.onnx"
    with pytest.raises(OnnxMismatchError, match="onnxruntime differs"):
        export_onnx(net, path, (SIZE, SIZE), atol=-1.0)
    assert os.listdir(tmp_path) == []


def test_unconvertible_operator_is_named(tmp_path):
    @use_np
    class Sorts(HybridBlock):
        def hybrid_forward(self, F, x):
            return F.np.sort(F.npx.batch_flatten(x), axis=1)

    net = Sorts()
    net.initialize()
    with pytest.raises(ValueError, match="cannot convert operator"):
        export_onnx(net, tmp_path / "sorts.onnx", (4, 4))
    assert not (tmp_path / "sorts.onnx").exists()


def test_to_legacy_graph_renames_only_known_ops():
    graph = {"nodes": [
        {"op": "null", "name": "data"},
        {"op": "_npi_add", "name": "a", "inputs": [[0, 0, 0], [0, 0, 0]]},
        {"op": "_npi_multiply_scalar", "name": "b", "attrs": {"scalar": "0.5"}},
        {"op": "_np_sum", "name": "c", "attrs": {"axis": "1", "keepdims": "True"}},
        {"op": "_np_sum", "name": "d", "attrs": {"axis": "None"}},  # scalar out: kept
        {"op": "_npx_reshape", "name": "e", "attrs": {"newshape": "(-2, -1)"}},
        {"op": "_npx_reshape", "name": "f", "attrs": {"newshape": "(-3, 4)"}},  # no twin
        {"op": "Convolution", "name": "g"},
    ]}
    original = json.dumps(graph)
    new, renamed = to_legacy_graph(graph)
    assert json.dumps(graph) == original  # input untouched
    ops = [n["op"] for n in new["nodes"]]
    assert ops == ["null", "broadcast_add", "_mul_scalar", "sum", "_np_sum", "Reshape",
                   "_npx_reshape", "Convolution"]
    assert new["nodes"][3]["attrs"] == {"axis": "(1,)", "keepdims": "True"}
    assert new["nodes"][5]["attrs"] == {"shape": "(0, -1)"}
    assert renamed == {"_npi_add": 1, "_npi_multiply_scalar": 1, "_np_sum": 1,
                       "_npx_reshape": 1}
    supported = set(mx.onnx.get_operator_support(13))
    assert set(NUMPY_TO_LEGACY.values()) <= supported


def test_faceresnet18_small(tmp_path):
    net = model_zoo.get_model("faceresnet18", emb_size=16, image_size=32)
    net.initialize(mx.init.Xavier())
    net(np.zeros((1, 3, 32, 32)))
    # milder statistics: 18 random layers would otherwise blow the outputs up to
    # ~50, where float32 rounding alone exceeds 1e-4
    randomise_batchnorm(net, onp.random.RandomState(2), spread=0.2)
    x = onp.random.RandomState(3).uniform(-1, 1, (2, 3, 32, 32)).astype("float32")
    assert 0.5 < float(abs(net(np.array(x))).max()) < 20
    report = export_onnx(net, tmp_path / "r18.onnx", (32, 32), batch_size=2)
    assert report["output_shape"] == (2, 16)
    assert report["max_abs_diff"] <= 1e-4

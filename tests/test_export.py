"""ONNX export: hybridize -> net.export -> mx.onnx.export_model -> onnxruntime parity,
a symbolic batch axis, the raw-pixel input, and what insightface's loader makes of it."""
import json
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face import model_zoo
from gluon_face.embedding import extract_embeddings
from gluon_face.export import (
    NUMPY_TO_LEGACY,
    OnnxMismatchError,
    check_onnx,
    export_onnx,
    insightface_loading,
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
    assert report["input"] == "raw"
    assert report["input_shape"] == ("batch", 3, SIZE, SIZE)
    assert report["output_shape"] == ("batch", EMB)
    assert report["check_batch_sizes"] == [1, 2, 2]
    assert report["renamed_ops"].get("_npi_add") == 1
    assert report["rewrite_max_abs_diff"] == 0.0
    assert report["max_abs_diff"] <= 1e-4
    assert report["insightface"]["task"] is None  # 16x16: below insightface's 112

    # independent check: onnxruntime on fresh raw pixels vs the imperative network
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "PRelu"} <= ops and ops & {"Gemm", "MatMul"}
    first = model.graph.node[:2]
    assert [(n.op_type, n.name) for n in first] == [("Sub", "Sub_data"), ("Mul", "Mul_data")]
    assert {p.key: p.value for p in model.metadata_props}["gluon_face.input"] == "raw"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]  # weights are not inputs
    rng = onp.random.RandomState(1)
    for batch in (1, 3):  # one file, any batch size
        pixels = rng.randint(0, 256, (batch, 3, SIZE, SIZE)).astype("float32")
        got = session.run(None, {"data": pixels})[0]
        want = net(np.array((pixels - 127.5) / 128)).asnumpy()
        assert got.shape == (batch, EMB)
        onp.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert onp.abs(want).max() > 0.1  # the comparison is not between near-zero outputs
    assert check_onnx(str(path), net, input_shape=(3, SIZE, SIZE)) <= 1e-4


def test_normalized_input_is_the_bare_backbone(net, tmp_path):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "norm.onnx"
    report = export_onnx(net, path, (SIZE, SIZE), batch_size=3, input="normalized")
    assert report["input"] == "normalized" and report["check_batch_sizes"] == [1, 3, 3]
    model = onnx.load(str(path))
    assert "Sub" not in {n.op_type for n in model.graph.node[:2]}
    assert {p.key: p.value for p in model.metadata_props}["gluon_face.input"] == "normalized"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = onp.random.RandomState(4).uniform(-1, 1, (4, 3, SIZE, SIZE)).astype("float32")
    onp.testing.assert_allclose(session.run(None, {"data": x})[0], net(np.array(x)).asnumpy(),
                                atol=1e-4, rtol=0)
    assert check_onnx(str(path), net, input_shape=(3, SIZE, SIZE)) <= 1e-4  # reads metadata
    with pytest.raises(ValueError, match="input must be one of raw, normalized"):
        export_onnx(net, tmp_path / "x.onnx", (SIZE, SIZE), input="bgr")
    assert not (tmp_path / "x.onnx").exists()


@use_np
class Face112(HybridBlock):
    """A cheap backbone for insightface's smallest recognition input, 112x112."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = nn.HybridSequential()
        self.features.add(nn.Conv2D(8, 4, strides=4, use_bias=False), nn.BatchNorm(epsilon=2e-5),
                          nn.PReLU(in_channels=8), nn.Conv2D(8, 4, strides=4, use_bias=False),
                          nn.BatchNorm(epsilon=2e-5))
        self.output = nn.HybridSequential()
        self.output.add(nn.Dense(EMB), nn.BatchNorm(epsilon=2e-5))

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def blob_from_bgr(images, mean, std):
    """numpy's version of insightface's ``cv2.dnn.blobFromImages(images, 1 / std, size,
    (mean,) * 3, swapRB=True)`` for images already of the input size: BGR -> RGB,
    ``(x - mean) / std``, NHWC -> NCHW, float32."""
    rgb = onp.stack([im[:, :, ::-1] for im in images]).astype(onp.float32)
    return onp.ascontiguousarray(((rgb - mean) * (1.0 / std)).transpose(0, 3, 1, 2),
                                 dtype=onp.float32)


def test_insightface_loads_a_112_export_as_its_recogniser(tmp_path):
    """What insightface's model_zoo.get_model + ArcFaceONNX.get_feat would do with the file.

    Their rules, restated here without insightface: a square input of at least 112 that is
    a multiple of 16 routes to ArcFaceONNX; a node named Sub* and one named Mul* among the
    first eight mean "feed raw pixels" (mean 0, std 1); get_feat turns BGR uint8 crops into
    an RGB NCHW float32 blob.  The embeddings must equal extract_embeddings(normalize=False)
    of the same images in RGB.
    """
    import onnx
    import onnxruntime as ort

    net = Face112()
    net.initialize(mx.init.Xavier())
    net(np.zeros((1, 3, 112, 112)))
    randomise_batchnorm(net, onp.random.RandomState(5), spread=0.3)
    path = tmp_path / "r112.onnx"
    report = export_onnx(net, path, (112, 112))
    assert report["check_batch_sizes"] == [1, 5, 5]

    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), outputs = session.get_inputs(), session.get_outputs()
    height, width = inp.shape[2], inp.shape[3]
    assert len(outputs) == 1 and len(outputs) < 5  # ArcFaceONNX needs one; SCRFD has >= 5
    assert (height, width) not in ((192, 192), (96, 96))
    assert height == width and height >= 112 and height % 16 == 0
    names = [n.name for n in model.graph.node[:8]]
    assert any(n.startswith(("Sub", "_minus")) for n in names)
    assert any(n.startswith(("Mul", "_mul")) for n in names)
    assert report["insightface"] == insightface_loading(str(path))
    assert report["insightface"]["task"] == "recognition"
    assert (report["insightface"]["input_mean"], report["insightface"]["input_std"]) == (0, 1)
    assert report["insightface"]["input_size"] == (112, 112)

    rng = onp.random.RandomState(6)
    rgb = [rng.randint(0, 256, (112, 112, 3)).astype(onp.uint8) for _ in range(5)]
    rgb[0][:56] = 250  # some structure, not only noise
    bgr = [onp.ascontiguousarray(im[:, :, ::-1]) for im in rgb]
    want = extract_embeddings(net, rgb, batch_size=5, normalize=False)
    assert onp.abs(want).max() > 0.1
    try:
        import cv2
    except ImportError:
        cv2 = None
    for batch in (bgr[:1], bgr):
        blob = blob_from_bgr(batch, 0.0, 1.0)
        assert blob.shape == (len(batch), 3, 112, 112)
        if cv2 is not None:  # OpenCV's own blob, where installed, is the same
            onp.testing.assert_array_equal(
                cv2.dnn.blobFromImages(batch, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=True),
                blob)
        got = session.run(None, {inp.name: blob})[0]
        onp.testing.assert_allclose(got, want[:len(batch)], atol=1e-4, rtol=0)


def _plain_model(onnx, shape, outputs=1, inputs=1, node_names=("conv",)):
    """A model with the given input shape, number of inputs/outputs and node names."""
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, list(shape))
           for i in range(inputs)]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None)
            for i in range(outputs)]
    nodes = [helper.make_node("Identity", ["in0"], [f"t{k}"], name=name)
             for k, name in enumerate(node_names)]
    nodes += [helper.make_node("Identity", ["in0"], [f"out{i}"], name=f"o{i}")
              for i in range(outputs)]
    return helper.make_model(helper.make_graph(nodes, "g", ins, outs))


@pytest.mark.parametrize("shape,outputs,inputs,names,task,mean", [
    ((1, 3, 112, 112), 1, 1, ("Sub_x", "Mul_x"), "recognition", 0.0),
    (("batch", 3, 128, 128), 1, 1, ("_minus0", "_mul1"), "recognition", 0.0),
    ((1, 3, 112, 112), 1, 1, ("conv",), "recognition", 127.5),
    ((1, 3, 112, 112), 1, 1, ("Sub_x",), "recognition", 127.5),  # Sub without Mul
    ((1, 3, 112, 112), 1, 1, ("a",) * 8 + ("Sub_x", "Mul_x"), "recognition", 127.5),  # too late
    ((1, 3, 112, 112), 5, 1, (), "detection", None),
    ((1, 3, 192, 192), 1, 1, (), "landmark", None),
    ((1, 3, 96, 96), 1, 1, (), "attribute", None),
    ((1, 3, 128, 128), 1, 2, (), "swapper", None),
    ((1, 3, 120, 120), 1, 1, (), None, None),  # >= 112 but not a multiple of 16
    ((1, 3, 112, 96), 1, 1, (), None, None),   # not square
    ((1, 3, 32, 32), 1, 1, (), None, None),    # the glyph models
])
def test_insightface_loading_rules(shape, outputs, inputs, names, task, mean):
    import onnx

    verdict = insightface_loading(_plain_model(onnx, shape, outputs, inputs, names))
    assert verdict["task"] == task and verdict["reason"]
    assert verdict["input_size"] == (shape[3], shape[2])
    if mean is not None:
        assert verdict["input_mean"] == mean and verdict["input_std"] == (mean or 1.0)


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
    assert report["output_shape"] == ("batch", 16)
    assert report["max_abs_diff"] <= 1e-4

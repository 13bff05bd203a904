"""gluon_face.graph.onnx: the rewrites around mx.onnx conversion, on small graphs and models."""
import mxnet as mx
import numpy as onp
import pytest

from gluon_face.graph.legacy import NUMPY_TO_LEGACY
from gluon_face.graph.onnx import (
    BATCH_AXIS,
    ONNX_OPSET,
    add_input_normalization,
    finish_model,
    fix_prelu_slopes,
    fixed_gammas,
    name_batch_axis,
    prepare_graph,
    set_ones,
    unsupported_ops,
)

from ..conftest import missing_modules, needs

ONNX_MISSING = missing_modules("onnx", "onnxruntime")


def _graph(*nodes):
    return {"nodes": list(nodes), "arg_nodes": [], "heads": [[len(nodes) - 1, 0, 0]]}


def _null(name):
    return {"op": "null", "name": name, "inputs": []}


def test_prepare_graph_uses_the_general_sum_without_shapes():
    graph = _graph(_null("a"), {"op": "_npi_add", "name": "s", "inputs": [[0, 0, 0], [0, 0, 0]]})
    new, renamed = prepare_graph(graph)
    # Both inputs are the same array: elemwise_add would do, but the export renames
    # without shape inference and keeps the table's operator.
    assert new["nodes"][1]["op"] == NUMPY_TO_LEGACY["_npi_add"] == "broadcast_add"
    assert renamed == {"_npi_add": 1}


def test_unsupported_ops_names_numpy_operators_only():
    graph = _graph(_null("a"), {"op": "_npi_add", "name": "s", "inputs": []},
                   {"op": "broadcast_add", "name": "t", "inputs": []},
                   {"op": "Convolution", "name": "c", "inputs": []})
    assert unsupported_ops(graph) == ["_npi_add"]
    assert unsupported_ops(prepare_graph(graph)[0]) == []
    assert set(NUMPY_TO_LEGACY.values()) <= set(mx.onnx.get_operator_support(ONNX_OPSET))


def test_fixed_gammas_follow_the_operator_default(tmp_path):
    def bn(name, **attrs):
        return {"op": "BatchNorm", "name": name, "inputs": [[0, 0, 0], [1, 0, 0]],
                "attrs": {k: str(v) for k, v in attrs.items()}}

    nodes = [_null("x"), _null("g")]
    for name, attrs in (("default", {}), ("fixed", {"fix_gamma": True}),
                        ("free", {"fix_gamma": False})):
        doc = _graph(*nodes, bn(name, **attrs))
        assert fixed_gammas(doc) == ([] if name == "free" else ["g"]), name

    path = str(tmp_path / "p.params")
    mx.nd.save(path, {"arg:g": mx.nd.array([0.5, 2.0]), "arg:w": mx.nd.array([3.0])})
    set_ones(path, ["g"])
    loaded = mx.nd.load(path)
    onp.testing.assert_array_equal(loaded["arg:g"].asnumpy(), [1.0, 1.0])
    onp.testing.assert_array_equal(loaded["arg:w"].asnumpy(), [3.0])


@needs("onnx", not ONNX_MISSING, ONNX_MISSING)
def test_finish_model_reshapes_slopes_and_drops_weight_inputs():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    slope = numpy_helper.from_array(onp.array([0.1, 0.2, 0.3], dtype="float32"), "slope")
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("PRelu", ["x", "slope"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4]),
             helper.make_tensor_value_info("slope", TensorProto.FLOAT, [3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
            initializer=[slope]),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET + 4)])
    assert fix_prelu_slopes(onnx, onnx.ModelProto.FromString(model.SerializeToString())) == 1
    finish_model(onnx, model)
    assert [i.name for i in model.graph.input] == ["x"]
    assert model.opset_import[0].version == ONNX_OPSET
    init = model.graph.initializer[0]
    assert list(init.dims) == [3, 1, 1]
    onp.testing.assert_array_equal(numpy_helper.to_array(init).ravel(),
                                   onp.array([0.1, 0.2, 0.3], dtype="float32"))
    onnx.checker.check_model(model, full_check=True)
    assert fix_prelu_slopes(onnx, model) == 0  # already (C, 1, 1)
    # finish_model names the batch axis of the input and the output
    for info in (model.graph.input[0], model.graph.output[0]):
        dim = info.type.tensor_type.shape.dim[0]
        assert dim.dim_param == BATCH_AXIS and not dim.HasField("dim_value")


@needs("onnx", not ONNX_MISSING, ONNX_MISSING)
def test_input_normalization_comes_first_and_is_exact():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # two readers of the input: both must see the normalised values
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["data"], ["r"], name="relu"),
             helper.make_node("Sub", ["r", "data"], ["y"], name="diff")], "g",
            [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 2, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 2, 2])]),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    assert name_batch_axis(model) == 2
    add_input_normalization(onnx, model)
    onnx.checker.check_model(model, full_check=True)
    nodes = [(n.op_type, n.name) for n in model.graph.node]
    assert nodes[:2] == [("Sub", "Sub_data"), ("Mul", "Mul_data")] and len(nodes) == 4
    assert [i.name for i in model.graph.input] == ["data"]
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        pixels = onp.random.RandomState(batch).randint(0, 256, (batch, 3, 2, 2))
        pixels = pixels.astype("float32")
        x = (pixels - onp.float32(127.5)) / onp.float32(128)
        got = session.run(None, {"data": pixels})[0]
        onp.testing.assert_array_equal(got, onp.maximum(x, 0) - x)  # bit for bit
    with pytest.raises(ValueError, match="already used"):
        add_input_normalization(onnx, model)


"""Graph rewrites that make an exported numpy-mode network convertible to ONNX.

:mod:`gluon_face.export` runs them around ``mx.onnx.export_model``:

* before conversion, on the ``prefix-symbol.json`` / ``prefix-0000.params``
  pair of ``HybridBlock.export``: numpy operators renamed to their legacy
  twins (:func:`prepare_graph`, the table of :mod:`.legacy`), since mx.onnx
  converts legacy operators only; the ``gamma`` of every BatchNorm run with
  ``fix_gamma=True`` set to ones (:func:`fixed_gammas`, :func:`set_ones`),
  since MXNet ignores it but ONNX would apply it;
* after conversion, on the ONNX model: :func:`finish_model` (the opset the
  converters wrote, PReLU slope shapes, weights out of the graph inputs).

None of these changes the arithmetic; ``export_onnx`` checks that in MXNet
(and against onnxruntime) before it writes a file.  The ``onnx`` module is
passed in by the caller, which owns the "install onnx<1.18" message.
"""
from .legacy import to_legacy_graph

__all__ = ["ONNX_OPSET", "prepare_graph", "unsupported_ops", "fixed_gammas", "set_ones",
           "fix_prelu_slopes", "finish_model"]

#: Opset of mx.onnx's newest translation table (MXNet 1.9.1); the exported models declare it.
ONNX_OPSET = 13


def prepare_graph(graph):
    """``(graph, renamed)``: the exported JSON graph with legacy operators for mx.onnx.

    :func:`~.legacy.to_legacy_graph` without shapes: the exported graph is
    renamed as it is, without shape inference, so every ``_npi_add`` becomes
    ``broadcast_add`` (mx.onnx converts it, like ``elemwise_add``, to ``Add``).
    """
    return to_legacy_graph(graph, shapes=None)


def unsupported_ops(graph, opset=ONNX_OPSET):
    """Sorted operators of the JSON ``graph`` that mx.onnx has no converter for at ``opset``."""
    import mxnet as mx

    supported = set(mx.onnx.get_operator_support(opset)) | {"null"}
    return sorted({n["op"] for n in graph["nodes"]} - supported)


def fixed_gammas(graph):
    """Names of the ``gamma`` inputs of BatchNorm nodes run with ``fix_gamma=True``.

    MXNet then scales by 1 whatever ``gamma`` holds (``nn.BatchNorm(scale=False)``,
    insightface's first BN of every block); the ONNX ``BatchNormalization`` always
    multiplies by its scale input, and mx.onnx copies ``gamma`` as it is.  The
    legacy operator's default is ``fix_gamma=True``.
    """
    nodes = graph["nodes"]
    names = []
    for node in nodes:
        if node["op"] == "BatchNorm" and \
                node.get("attrs", {}).get("fix_gamma", "True") in ("True", "true", "1"):
            gamma = nodes[node["inputs"][1][0]]
            if gamma["op"] == "null":
                names.append(gamma["name"])
    return names


def set_ones(params_file, names):
    """Overwrite the named ``arg:`` parameters of an MXNet parameter file with ones."""
    import mxnet as mx

    if not names:
        return
    params = mx.nd.load(params_file)
    for name in names:
        key = "arg:" + name
        params[key] = mx.nd.ones_like(params[key])
    mx.nd.save(params_file, params)


def fix_prelu_slopes(onnx, model):
    """Give per-channel PReLU slopes the shape ``(C, 1, ..., 1)`` ONNX broadcasting needs.

    MXNet's ``LeakyReLU(act_type='prelu')`` applies a ``(C,)`` slope along axis 1;
    mx.onnx writes it unchanged as ``PRelu``'s slope, which ONNX broadcasts
    numpy-style from the *last* axis: wrong (or rejected by onnxruntime) for an
    ``(N, C, H, W)`` input with ``C > 1``.  The values are kept, only the shape of
    the initializer changes.  Returns the number of slopes reshaped.
    """
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape"):
            rank[info.name] = len(dims)
    inits = {init.name: init for init in model.graph.initializer}
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        r = rank.get(node.input[0])
        if len(init.dims) != 1 or init.dims[0] == 1 or r is None or r <= 2:
            continue
        slope = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(slope.reshape((-1,) + (1,) * (r - 2)),
                                              init.name))
        fixed += 1
    return fixed


def finish_model(onnx, model):
    """Declare the opset the converters wrote, fix PReLU slopes, keep weights out of inputs.

    mx.onnx stamps the model with the newest opset of the installed onnx but
    writes every node with its opset-13 translations (``ReduceMean`` with an
    ``axes`` attribute, valid only before opset 18); it writes per-channel PReLU
    slopes with a shape ONNX broadcasts along the wrong axis
    (:func:`fix_prelu_slopes`); and it lists every weight as a graph input as
    well as an initializer, so onnxruntime treats the weights as overridable
    inputs (no constant folding, one warning per weight).  None of this changes a
    node or a weight value.  ``model`` is changed in place and returned.
    """
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, ONNX_OPSET)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    fix_prelu_slopes(onnx, model)
    return model

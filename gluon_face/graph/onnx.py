"""Graph rewrites that make an exported numpy-mode network convertible to ONNX.

:mod:`gluon_face.export` runs them around ``mx.onnx.export_model``:

* before conversion, on the ``prefix-symbol.json`` / ``prefix-0000.params``
  pair of ``HybridBlock.export``: numpy operators renamed to their legacy
  twins (:func:`prepare_graph`, the table of :mod:`.legacy`), since mx.onnx
  converts legacy operators only; the ``gamma`` of every BatchNorm run with
  ``fix_gamma=True`` set to ones (:func:`fixed_gammas`, :func:`set_ones`),
  since MXNet ignores it but ONNX would apply it;
* after conversion, on the ONNX model: :func:`finish_model` (the opset the
  converters wrote, PReLU slope shapes, weights out of the graph inputs, a
  named batch axis) and, for models that take raw pixels,
  :func:`add_input_normalization` (``(x - 127.5) * (1/128)`` as the first two
  nodes).

None of these changes the arithmetic of the backbone; ``export_onnx`` checks
that in MXNet (and against onnxruntime) before it writes a file.  The ``onnx``
module is passed in by the caller, which owns the "install onnx<1.18" message.
"""
import numpy as onp

from .legacy import to_legacy_graph

__all__ = ["ONNX_OPSET", "BATCH_AXIS", "prepare_graph", "unsupported_ops", "fixed_gammas",
           "set_ones", "fix_prelu_slopes", "name_batch_axis", "add_input_normalization",
           "finish_model"]

#: Opset of mx.onnx's newest translation table (MXNet 1.9.1); the exported models declare it.
ONNX_OPSET = 13
#: ``dim_param`` of the first (batch) axis of the exported input and output.
BATCH_AXIS = "batch"


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


def name_batch_axis(model, name=BATCH_AXIS):
    """Give the first axis of every graph input and output the symbolic size ``name``.

    ``mx.onnx.export_model(..., dynamic=True)`` leaves the batch axis without a
    size or a name; a named axis tells onnxruntime (and a reader of the file)
    that inputs and outputs share it.  Returns the number of axes named.
    """
    named = 0
    for info in list(model.graph.input) + list(model.graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and len(tensor.shape.dim):
            dim = tensor.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = name
            named += 1
    return named


def add_input_normalization(onnx, model, mean=127.5, scale=1.0 / 128):
    """Make the model take raw pixels: ``(x - mean) * scale`` as its first two nodes.

    The graph input keeps its name and shape; a ``Sub`` node named
    ``Sub_<input>`` and a ``Mul`` node named ``Mul_<input>`` (scalar float32
    constants ``<input>_mean`` and ``<input>_scale``) are put in front of every
    node that read the input.  With the defaults the model computes the
    backbone of ``(x - 127.5) / 128``, bit for bit what
    :func:`gluon_face.data.normalize_image` gives in float32 (``1/128`` is a
    power of two, so multiplying by it is exact).

    The names are part of the contract: insightface's ``ArcFaceONNX`` decides
    how to scale its input by the *names* of the first eight nodes, and uses
    mean 0 / std 1 (raw pixels) only when one starts with ``Sub`` (or
    ``_minus``) and one with ``Mul`` (or ``_mul``).  ``model`` is changed in
    place and returned.

    Raises
    ------
    ValueError
        If the graph has not exactly one input, or an output is the input itself.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    if len(graph.input) != 1:
        raise ValueError(f"input normalisation needs a graph with one input, not "
                         f"{len(graph.input)}")
    source = graph.input[0].name
    if any(out.name == source for out in graph.output):
        raise ValueError(f"graph output {source!r} is its input: nothing to normalise")
    taken = ({n.name for n in graph.node} | {o for n in graph.node for o in n.output}
             | {i.name for i in graph.initializer})
    names = {key: f"{source}_{key}" for key in ("mean", "scale", "centred", "normalised")}
    names.update(sub=f"Sub_{source}", mul=f"Mul_{source}")
    clash = sorted(set(names.values()) & taken)
    if clash:
        raise ValueError(f"cannot add the input normalisation: name(s) {clash} already used")
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == source:
                node.input[k] = names["normalised"]
    graph.initializer.extend([
        numpy_helper.from_array(onp.array(mean, dtype=onp.float32), names["mean"]),
        numpy_helper.from_array(onp.array(scale, dtype=onp.float32), names["scale"])])
    nodes = [helper.make_node("Sub", [source, names["mean"]], [names["centred"]],
                              name=names["sub"]),
             helper.make_node("Mul", [names["centred"], names["scale"]], [names["normalised"]],
                              name=names["mul"])]
    nodes.extend(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def finish_model(onnx, model):
    """Declare the opset the converters wrote, fix PReLU slopes, keep weights out of inputs.

    mx.onnx stamps the model with the newest opset of the installed onnx but
    writes every node with its opset-13 translations (``ReduceMean`` with an
    ``axes`` attribute, valid only before opset 18); it writes per-channel PReLU
    slopes with a shape ONNX broadcasts along the wrong axis
    (:func:`fix_prelu_slopes`); and it lists every weight as a graph input as
    well as an initializer, so onnxruntime treats the weights as overridable
    inputs (no constant folding, one warning per weight).  The first axis of the
    input and output is named :data:`BATCH_AXIS` (:func:`name_batch_axis`).  None
    of this changes a node or a weight value.  ``model`` is changed in place and
    returned.
    """
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, ONNX_OPSET)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    fix_prelu_slopes(onnx, model)
    name_batch_axis(model)
    return model

"""The legacy view of a numpy-mode graph: one operator table for every client.

A hybridized numpy-mode network (``@use_np``) traces ``_npi_add`` for ``x + y``,
``_npi_multiply_scalar`` for ``x * s``, ``_np_sum`` for a norm...  The tools
gluon_face hands the graph to know the *legacy* operators only: ``mx.onnx``
has no converter for the numpy ones, ``mxnet.contrib.amp``'s lists and
MKLDNN's fusion and quantization passes name legacy operators.
:data:`NUMPY_TO_LEGACY` is the one table from numpy operators to the legacy
operators with the same float32 arithmetic; :func:`to_legacy_graph` applies
it (and the attribute rewrites of reductions and reshapes) to a JSON graph,
:func:`legacy_symbol` to a ``Symbol``.

The one mapping that depends on the client is the residual sum ``_npi_add``.
The table says ``broadcast_add``, correct for any shapes.  Given the graph's
shapes (``shapes=``, which :func:`legacy_symbol` always infers), a sum of two
equal shapes becomes ``elemwise_add`` instead: oneDNN's sum, the only add
MKLDNN's passes fuse into the convolution before it, and the one with
bfloat16 and INT8 kernels.  The ONNX export renames the exported JSON without
shapes: both operators convert to ONNX ``Add``.
"""
import ast
import collections
import json
import warnings

from . import mxnet_compat as compat

__all__ = ["NUMPY_TO_LEGACY", "to_legacy_graph", "legacy_symbol", "trace", "output_name"]

#: numpy-mode operator -> legacy operator with the same float32 semantics and the
#: same attributes.  Only operators whose legacy twin mx.onnx converts are listed.
NUMPY_TO_LEGACY = {
    "_npi_add": "broadcast_add",
    "_npi_subtract": "broadcast_sub",
    "_npi_multiply": "broadcast_mul",
    "_npi_true_divide": "broadcast_div",
    "_npi_minimum": "broadcast_minimum",
    "_npi_add_scalar": "_plus_scalar",
    "_npi_subtract_scalar": "_minus_scalar",
    "_npi_rsubtract_scalar": "_rminus_scalar",
    "_npi_multiply_scalar": "_mul_scalar",
    "_npi_true_divide_scalar": "_div_scalar",
    "_npi_rtrue_divide_scalar": "_rdiv_scalar",
    "_npi_power_scalar": "_power_scalar",
    "_npi_sqrt": "sqrt",
    "_npi_exp": "exp",
    "_npi_log": "log",
    "_npi_tanh": "tanh",
    "_npi_negative": "negative",
    "_npi_square": "square",
    "_npi_absolute": "abs",
    "_np_copy": "_copy",
    "_npx_relu": "relu",
    "_npx_sigmoid": "sigmoid",
}

#: What a same-shape ``_npi_add`` becomes when shapes are known (see the module docstring).
SAME_SHAPE_ADD = "elemwise_add"


def _parse_axis(text):
    return ast.literal_eval(text) if text not in (None, "None") else None


def _reduce_attrs(node):
    """Legacy ``sum``/``mean`` attributes for ``_np_sum``/``_npi_mean``, or None."""
    attrs = node.get("attrs", {})
    if attrs.get("dtype", "None") != "None" or attrs.get("initial", "None") != "None":
        return None
    axis = _parse_axis(attrs.get("axis"))
    if axis is None:  # numpy gives shape (), the legacy reduction (1,): not the same
        return None
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return {"axis": str(axis), "keepdims": attrs.get("keepdims", "False")}


def _reshape_attrs(node):
    """Legacy ``Reshape`` attributes for ``_np_reshape``/``_npx_reshape``, or None."""
    attrs = node.get("attrs", {})
    if attrs.get("order", "C") != "C":
        return None
    shape = _parse_axis(attrs.get("newshape"))
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if node["op"] == "_npx_reshape":
        # The special codes differ: npx -2 copy one input dim (legacy 0), -4 copy the
        # rest (legacy -2), -5 merge two (legacy -3), -6 split one (legacy -4);
        # npx -3 (drop a size-1 dim) has no legacy twin.  -1 infers in both.
        codes = {-1: -1, -2: 0, -4: -2, -5: -3, -6: -4}
        if any(s < 0 and s not in codes for s in shape):
            return None
        shape = tuple(codes.get(s, s) for s in shape)
    elif any(s < -1 or s == 0 for s in shape):  # numpy 0 is an empty axis, legacy 0 copies
        return None
    if sum(1 for s in shape if s == -1) > 1:
        return None
    return {"shape": str(shape)}


#: numpy operators whose legacy twin takes other attributes: op -> (legacy op,
#: attrs(node) -> legacy attributes, or None where numpy and legacy disagree).
_WITH_ATTRS = {"_np_sum": ("sum", _reduce_attrs), "_npi_mean": ("mean", _reduce_attrs),
               "_np_reshape": ("Reshape", _reshape_attrs),
               "_npx_reshape": ("Reshape", _reshape_attrs)}


def output_name(nodes, entry):
    """The name ``Symbol.get_internals().list_outputs()`` gives a JSON graph entry.

    ``entry`` is ``[node index, output index, version]`` as in a node's ``inputs``.
    """
    node = nodes[entry[0]]
    if node["op"] == "null":
        return node["name"]
    return f"{node['name']}_output" if entry[1] == 0 else f"{node['name']}_output{entry[1]}"


def _same_shape_inputs(nodes, node, shapes):
    if shapes is None or len(node["inputs"]) != 2:
        return False
    a, b = (shapes.get(output_name(nodes, e)) for e in node["inputs"])
    return a is not None and b is not None and tuple(a) == tuple(b)


def to_legacy_graph(graph, shapes=None):
    """Rename numpy-mode operators of a JSON symbol graph to their legacy twins.

    Parameters
    ----------
    graph : dict
        A parsed symbol graph (``Symbol.tojson()``, or the ``prefix-symbol.json``
        written by ``HybridBlock.export``).
    shapes : dict, optional
        Output name (as :func:`output_name` gives it) -> shape of the graph's
        entries.  With it, an ``_npi_add`` of two equal shapes becomes
        ``elemwise_add`` instead of the table's ``broadcast_add`` (see the module
        docstring: oneDNN fuses and quantizes only that sum).  Without it every
        ``_npi_add`` becomes ``broadcast_add`` (what the ONNX export uses).

    Returns
    -------
    graph : dict
        A new graph; nodes listed in :data:`NUMPY_TO_LEGACY` (and ``_np_sum`` /
        ``_npi_mean`` over explicit axes, ``_np_reshape`` / ``_npx_reshape``
        without numpy-only codes) use the legacy operator, the rest are
        unchanged.
    renamed : collections.Counter
        ``{numpy op: number of nodes renamed}``.
    """
    graph = json.loads(json.dumps(graph))
    nodes = graph["nodes"]
    renamed = collections.Counter()
    for node in nodes:
        op = node["op"]
        if op == "_npi_add" and _same_shape_inputs(nodes, node, shapes):
            node["op"] = SAME_SHAPE_ADD
            node.pop("attrs", None)
            renamed[op] += 1
        elif op in NUMPY_TO_LEGACY:
            node["op"] = NUMPY_TO_LEGACY[op]
            renamed[op] += 1
        elif op in _WITH_ATTRS:
            legacy, convert = _WITH_ATTRS[op]
            attrs = convert(node)
            if attrs is not None:
                node["op"] = legacy
                node["attrs"] = attrs
                renamed[op] += 1
    return graph, renamed


def legacy_symbol(sym, input_shapes):
    """The legacy view of ``sym`` with numpy operators renamed by :func:`to_legacy_graph`.

    Parameters
    ----------
    sym : mxnet.symbol.Symbol
        A graph, numpy-mode (e.g. a traced block's) or legacy.
    input_shapes : dict
        Data input name -> shape, enough to infer every entry's shape (so that
        same-shape sums become ``elemwise_add``).

    Returns
    -------
    mxnet.symbol.Symbol
        A legacy symbol (``sym.as_nd_ndarray()`` itself when nothing was renamed).
    """
    import mxnet as mx

    legacy = sym.as_nd_ndarray()
    internals = legacy.get_internals()
    with warnings.catch_warnings():  # inference of a partly known graph warns
        warnings.simplefilter("ignore")
        _, out_shapes, _ = internals.infer_shape(**{k: tuple(v) for k, v in input_shapes.items()})
    shapes = dict(zip(internals.list_outputs(), out_shapes or ()))
    doc, renamed = to_legacy_graph(json.loads(legacy.tojson()), shapes)
    return mx.sym.load_json(json.dumps(doc)) if renamed else legacy


def trace(net, example, retrace=False):
    """``(inputs, symbol)``: the numpy-mode graph ``net`` traces for ``example``.

    ``net`` is hybridized (static memory) and run once on ``example`` when it has
    no traced graph yet, or always with ``retrace`` (so that a graph its caller
    rewrote, e.g. by ``net.optimize_for``, is not the one used).
    """
    graph = None if retrace else compat.cached_graph(net)
    if graph is None:
        net.hybridize(static_alloc=True, static_shape=True)
        net(example)
        graph = compat.cached_graph(net)
    return graph

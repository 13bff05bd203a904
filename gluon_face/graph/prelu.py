"""PReLU split into oneDNN operators, for inference graphs and for training.

MXNet 1.9.1's PReLU (``LeakyReLU(act_type='prelu')``) has no oneDNN kernel:
it runs single-threaded, in float32 only, and in an INT8 graph between a
dequantize and a quantize.  :func:`split_prelu` writes it as
``alpha*x + (1-alpha)*relu(x)``, two per-channel BatchNorm scalings and an
``elemwise_add``, all of which have oneDNN kernels in float32, bfloat16 and
INT8, forward and backward.  The inference variant computes ``1 - alpha``
once (new constant parameters); the training variant (``tied=True``,
:func:`to_split_prelu`) computes it in the graph, so gradients reach the
slopes.
"""
import json
import warnings

from mxnet.util import use_np

from .legacy import legacy_symbol, trace

__all__ = ["split_prelu", "to_split_prelu", "training_graph", "shared_block", "SPLIT_EPS"]

#: ``eps`` of the BatchNorms that :func:`split_prelu` writes: their variance is
#: stored as ``1 - eps`` so that ``sqrt(var + eps)`` is 1 (cuDNN refuses eps < 1e-5).
SPLIT_EPS = 1e-5


def split_prelu(legacy, params, tied=False):
    """``legacy`` with each PReLU written as two per-channel scalings and a sum.

    ``prelu(x) = alpha * x + (1 - alpha) * relu(x)``, each scaling a
    BatchNorm that uses fixed statistics (zero mean and shift, unit variance)
    with ``gamma`` ``alpha`` or ``1 - alpha``: ReLU, BatchNorm and
    ``elemwise_add`` run in oneDNN, multi-threaded, where PReLU would not (see
    the module docstring).

    With ``tied=False`` (inference) ``1 - alpha`` and the zero shifts are new
    parameters computed here.  With ``tied=True`` (training) they are
    computed in the graph from the ``alpha`` parameter, whose gradient then
    flows through both scalings.  Either way the fixed statistics are new
    auxiliary states.  PReLU nodes whose slope is not a plain parameter are
    left alone.

    Parameters
    ----------
    legacy : mxnet.symbol.Symbol
        Legacy (not numpy-mode) graph.
    params : dict
        Name -> legacy NDArray for at least every PReLU slope of the graph.
    tied : bool

    Returns
    -------
    (Symbol, dict)
        The graph and a copy of ``params`` with the new parameters and
        auxiliary states added (``legacy`` itself when nothing was split).
    """
    import mxnet as mx

    doc = json.loads(legacy.tojson())
    old = doc["nodes"]
    nodes, where, params = [], {}, dict(params)

    def add(op, name, inputs=(), attrs=None):
        node = {"op": op, "name": name, "inputs": [list(e) for e in inputs]}
        if attrs:
            node["attrs"] = attrs
        nodes.append(node)
        return [len(nodes) - 1, 0, 0]

    def constant(name, value):
        params[name] = value
        return add("null", name)

    def scale(name, data, gamma, beta, zero, unit):
        return add("BatchNorm", name, [data, gamma, beta, constant(f"{name}_mean", zero),
                                       constant(f"{name}_var", unit)],
                   {"eps": repr(SPLIT_EPS), "fix_gamma": "False", "use_global_stats": "True",
                    "axis": "1"})

    for i, node in enumerate(old):
        inputs = [[where[e[0]], e[1], 0] for e in node["inputs"]]
        slope = old[node["inputs"][1][0]] if len(node["inputs"]) == 2 else None
        if (node["op"] == "LeakyReLU" and node.get("attrs", {}).get("act_type") == "prelu"
                and slope is not None and slope["op"] == "null" and slope["name"] in params):
            name, alpha = node["name"], params[slope["name"]]
            zero = mx.nd.zeros(alpha.shape, ctx=alpha.context)
            unit = mx.nd.full(alpha.shape, 1.0 - SPLIT_EPS, ctx=alpha.context)
            data, gamma = inputs
            if tied:
                beta = add("zeros_like", f"{name}_beta", [gamma])
                rest = add("_rminus_scalar", f"{name}_rest_gamma", [gamma], {"scalar": "1"})
            else:
                beta = constant(f"{name}_beta", zero)
                rest = constant(f"{name}_rest_gamma", 1.0 - alpha)
            relu = add("Activation", f"{name}_relu", [data], {"act_type": "relu"})
            scaled = [scale(f"{name}_slope", data, gamma, beta, zero, unit),
                      scale(f"{name}_rest", relu, rest, beta, zero, unit)]
            # Same name as the PReLU node: its output keeps its name for later nodes.
            where[i] = add("elemwise_add", name, scaled)[0]
            continue
        node = dict(node, inputs=inputs)
        nodes.append(node)
        where[i] = len(nodes) - 1
    if len(nodes) == len(old):
        return legacy, params
    doc["nodes"] = nodes
    doc["arg_nodes"] = [i for i, n in enumerate(nodes) if n["op"] == "null"]
    doc["heads"] = [[where[h[0]], h[1], 0] for h in doc["heads"]]
    doc.pop("node_row_ptr", None)  # recomputed by the loader
    return mx.sym.load_json(json.dumps(doc)), params


def training_graph(net, example, split=True):
    """``(inputs, legacy, constants)``: ``net``'s traced graph made ready to train fast.

    The legacy view (:func:`~gluon_face.graph.legacy.legacy_symbol`: same-shape
    sums as ``elemwise_add``) with, if ``split``, PReLU split with its slope tied
    (:func:`split_prelu`); ``constants`` holds the fixed statistics that adds
    (name -> legacy NDArray).  A graph with more than one input is returned
    as traced (legacy view, nothing renamed).
    """
    inputs, sym = trace(net, example)
    if len(inputs) != 1:
        return inputs, sym.as_nd_ndarray(), {}
    legacy = legacy_symbol(sym, {inputs[0].name: tuple(example.shape)})
    if not split:
        return inputs, legacy, {}
    source = net.collect_params()
    slopes = {n: source[n].data(example.ctx).as_nd_ndarray()
              for n in legacy.list_arguments() if n in source}
    legacy, params = split_prelu(legacy, slopes, tied=True)
    return inputs, legacy, {n: v for n, v in params.items() if n not in slopes}


def shared_block(legacy, inputs, net, constants):
    """A hybridized SymbolBlock of ``legacy`` on ``net``'s own parameters.

    ``constants`` (name -> NDArray, from :func:`training_graph`) become
    parameters without gradient on every context ``net`` is initialised on.
    """
    from mxnet import gluon

    with warnings.catch_warnings():  # SymbolBlock cannot type the float32 data input
        warnings.simplefilter("ignore")
        block = gluon.SymbolBlock(legacy.as_np_ndarray(), inputs, params=net.collect_params())
    contexts = next(iter(net.collect_params().values())).list_ctx()
    for name, param in block.collect_params().items():
        if name in constants:
            param.grad_req = "null"
            param.initialize(ctx=contexts)
            param.set_data(constants[name].as_np_ndarray())
    block.hybridize(static_alloc=True, static_shape=True)
    return block


@use_np
def to_split_prelu(net, example):
    """A float32 block that trains ``net``'s parameters through oneDNN-only operators.

    ``net``'s traced graph with PReLU split into BatchNorm scalings tied to
    its slopes and residual sums as ``elemwise_add`` (:func:`split_prelu`):
    the same function and gradients (to float32 rounding), faster to train on
    the CPU, where PReLU's own kernel is single-threaded.  Networks without
    PReLU get the sums only.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised on every context the block will be called on; one input,
        numpy mode.  Hybridized as a side effect.
    example : mxnet.np.ndarray
        One device's batch (the shape the block is fed).

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Hybridized; gradients land in ``net``'s parameters, BatchNorm running
        statistics update ``net``'s; checkpoints of ``net`` are unchanged.
    """
    inputs, legacy, constants = training_graph(net, example)
    return shared_block(legacy, inputs, net, constants)

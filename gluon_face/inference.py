"""Fast embedding extraction: static graphs, MKLDNN fusion, bfloat16 and INT8 graphs.

:func:`prepare_embedder` turns a trained backbone into a block that maps a
batch of normalised images (B, 3, H, W) to embeddings (B, E) float32, in one
of these modes:

``'block'``
    the network as it is, imperative (the reference).
``'hybrid'``
    ``hybridize(static_alloc=True, static_shape=True)``: one cached graph with
    memory planned once.
``'fused'``
    :func:`to_fused`: a float32 copy of the graph with PReLU split into
    oneDNN operators (see below), then ``optimize_for(x, backend='MKLDNN')``:
    MXNet's MKLDNN subgraph pass folds each inference BatchNorm that follows
    a convolution into the convolution's weights and bias (the IR block's
    BatchNorm *before* a convolution stays) and fuses the dense layer.  Needs
    the MKLDNN (oneDNN) build, which the CPU wheel is.
``'bf16'``
    the graph rewritten by ``mxnet.contrib.amp``'s symbol pass
    (:func:`to_low_precision`): convolutions, the dense layer, BatchNorms,
    residual sums and the split PReLU run in bfloat16, with ``amp_cast``
    nodes in the graph.  Fast where oneDNN may use AMX (see
    :func:`gluon_face.training.amp.enable_amx`).
``'int8'``
    :func:`to_int8`: MXNet's MKLDNN quantization flow (convolution +
    BatchNorm + activation fusion, INT8 weights and activations) with ranges
    calibrated on a few batches of real images (``calib_data``).  CPU only.

MXNet 1.9.1's PReLU has no oneDNN kernel: single-threaded, float32 only, it
took about half of every fast graph's time.  The inference graphs of the
fused, bf16 and int8 modes write it as ``alpha*x + (1-alpha)*relu(x)`` with
two per-channel BatchNorm scalings (:func:`_split_prelu`), and same-shape
numpy adds as ``elemwise_add`` (oneDNN's sum).  ``tools/benchmark.py`` measures
what each mode gains (the README's speed table).

``mxnet.contrib.amp.convert_hybrid_block`` and
``mxnet.contrib.quantization.quantize_net(_v2)`` reject numpy-mode blocks in
1.9.1, so :func:`to_low_precision` and :func:`to_int8` do their work on the
legacy view of the cached graph; with ``share_params=True`` the
low-precision graph trains the network in mixed precision (bfloat16 on the
CPU, float16 on a GPU).

The fused, bf16 and int8 embedders are for inference (BatchNorm uses its
running statistics).  Note ``Symbol.tojson()`` hides ``amp_cast`` nodes unless
called with ``remove_amp_cast=False``.
"""
import contextlib
import os
import warnings

import mxnet as mx
import numpy as onp
from mxnet import gluon, np
from mxnet.contrib.amp import amp as _amp
from mxnet.util import use_np

#: Embedding modes :func:`prepare_embedder` knows.
MODES = ("block", "hybrid", "fused", "bf16", "int8")


def bfloat16_dtype():
    """The dtype object MXNet uses for bfloat16 (the string is rejected by ``amp_cast``)."""
    return _amp.bfloat16


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown embedding mode {mode!r}; valid modes: {', '.join(MODES)}")


def _cached_graph(net, example):
    if not net._cached_graph:
        net.hybridize(static_alloc=True, static_shape=True)
        net(example)
    return net._cached_graph


def _conditional_fp32_ops(dtype="bfloat16"):
    # PReLU stays float32 in both precisions.  bfloat16: MXNet 1.9.1's CPU LeakyReLU
    # has no bfloat16 kernel for it ("Unknown type enum 12"), though amp's default
    # list sends it bfloat16.  float16: amp would type its alpha float16 without a
    # cast, so the parameter could not be shared as a float32 master weight.
    if dtype == "bfloat16":
        from mxnet.contrib.amp.lists import symbol_bf16 as lists
    else:
        from mxnet.contrib.amp.lists import symbol_fp16 as lists

    ops = []
    for name, attr, values in lists.CONDITIONAL_FP32_FUNCS:
        if name == "LeakyReLU" and attr == "act_type":
            values = sorted(set(values) | {"prelu"})
        ops.append((name, attr, list(values)))
    if not any(name == "LeakyReLU" for name, _, _ in ops):
        ops.append(("LeakyReLU", "act_type", ["prelu"]))
    return ops


#: Low-precision dtypes :func:`to_low_precision` converts to.
LOW_PRECISION_DTYPES = ("bfloat16", "float16")


def _low_precision_dtype(dtype):
    """The numpy/MXNet dtype object for ``'bfloat16'`` or ``'float16'``."""
    return _amp.bfloat16 if dtype == "bfloat16" else onp.dtype(onp.float16)


@use_np
def to_low_precision(net, example, dtype="bfloat16", ctx=None, share_params=False,
                     split_prelu=True):
    """A mixed-precision (bfloat16 or float16) copy of the hybridizable ``net``'s graph.

    The cached float32 graph goes through ``mxnet.contrib.amp``'s symbol pass:
    convolutions and dense layers (and the BatchNorms between them) run in
    ``dtype``; ``amp_cast`` nodes inside the graph convert activations and
    weights, so the parameters stay float32.  Same-shape residual adds become
    ``elemwise_add`` first (oneDNN's sum; the numpy add has only a slow
    generic bfloat16 kernel).  PReLU itself has no bfloat16 kernel on the CPU
    in 1.9.1 (and in float16 its alpha would be stored float16): it is split
    into oneDNN operators (:func:`_split_prelu`; with ``share_params`` the
    split is tied to the slopes, for training).
    MXNet 1.9.1 has no float16 GEMM on the CPU: float16 graphs run on a GPU.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised network with one input, numpy mode.
    example : mxnet.np.ndarray, shape (B, ...)
        An input of the shape to trace with (run once through ``net``).
    dtype : {'bfloat16', 'float16'}
        The low precision compute type.
    ctx : Context, optional
        Where the copy's parameters live (default: ``example``'s context).
    share_params : bool, default False
        Use ``net``'s own parameters (with their gradients): the returned
        block then trains ``net`` in mixed precision (float32 master weights,
        low-precision compute).  Otherwise the parameters are copied,
        inference only.
    split_prelu : bool, default True
        With ``share_params``: split PReLU (else it runs in float32 between
        casts).  The inference copy always splits it.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Hybridized (static memory); ``block(x)`` -> float32 array.  ``net`` is
        hybridized as a side effect; its parameters are not changed.

    Raises
    ------
    ValueError
        For another ``dtype``; with ``share_params`` if the pass would store a
        parameter in ``dtype``.
    """
    if dtype not in LOW_PRECISION_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(LOW_PRECISION_DTYPES)}, "
                         f"not {dtype!r}")
    target = _low_precision_dtype(dtype)
    ctx = ctx or example.ctx
    if share_params:
        inputs, legacy, constants = _training_graph(net, example, split_prelu)
        data_names = [i.name for i in inputs]
    else:
        data_name, legacy, params = _inference_graph(net, example)
        data_names, inputs = [data_name], [mx.sym.var(data_name).as_np_ndarray()]
    # amp and SymbolBlock warn that they cannot type the (float32) data input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = _amp.convert_symbol(legacy, dtype,
                                        conditional_fp32_ops=_conditional_fp32_ops(dtype),
                                        data_names=data_names)
        dtypes = converted.attr_dict()
        stored_low = [name for name, attrs in dtypes.items()
                      if attrs.get("__dtype__", "-1") != "-1"
                      and _amp._DTYPE_MX_TO_NP[int(attrs["__dtype__"])] == target]
        if share_params:
            if stored_low:
                raise ValueError(f"cannot share parameters stored in {dtype}: "
                                 + ", ".join(sorted(stored_low)))
            return _shared_block(converted, inputs, net, constants)
        block = gluon.SymbolBlock(converted.as_np_ndarray(), inputs)
    params = {n: v.as_in_context(ctx) for n, v in params.items()}
    return _load_block(block, params, ctx, low=stored_low, dtype=target)


def _training_graph(net, example, split_prelu=True):
    """``(inputs, legacy, constants)``: ``net``'s cached graph made ready to train fast.

    Same-shape numpy adds become ``elemwise_add`` and (``split_prelu``) PReLU
    is split with its slope tied (:func:`_split_prelu`); ``constants`` holds
    the fixed statistics that adds (name -> legacy NDArray).
    """
    inputs, sym = _cached_graph(net, example)
    legacy = sym.as_nd_ndarray()
    if len(inputs) != 1:
        return inputs, legacy, {}
    legacy = _plain_adds(legacy, inputs[0].name, tuple(example.shape))
    if not split_prelu:
        return inputs, legacy, {}
    source = net.collect_params()
    slopes = {n: source[n].data(example.ctx).as_nd_ndarray()
              for n in legacy.list_arguments() if n in source}
    legacy, params = _split_prelu(legacy, slopes, tied=True)
    return inputs, legacy, {n: v for n, v in params.items() if n not in slopes}


def _shared_block(legacy, inputs, net, constants):
    """A hybridized SymbolBlock of ``legacy`` on ``net``'s own parameters.

    ``constants`` (name -> NDArray, from :func:`_training_graph`) become
    parameters without gradient on every context ``net`` is initialised on.
    """
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

    ``net``'s cached graph with PReLU split into BatchNorm scalings tied to
    its slopes and residual adds as ``elemwise_add`` (:func:`_split_prelu`):
    the same function and gradients (to float32 rounding), faster to train on
    the CPU, where PReLU's own kernel is single-threaded.  Networks without
    PReLU get the adds only.

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
    inputs, legacy, constants = _training_graph(net, example)
    return _shared_block(legacy, inputs, net, constants)


def to_bfloat16(net, example, ctx=None, share_params=False):
    """``to_low_precision(net, example, 'bfloat16', ctx, share_params)`` (see there)."""
    return to_low_precision(net, example, dtype="bfloat16", ctx=ctx,
                            share_params=share_params)


#: Calibration modes :func:`to_int8` knows (see ``mxnet.contrib.quantization``).
CALIB_MODES = ("naive", "entropy")


def _calibration_batches(calib_data, batch_shape):
    """``calib_data`` as one float32 numpy array (N, C, H, W) matching ``batch_shape[1:]``."""
    if hasattr(calib_data, "asnumpy"):
        calib_data = calib_data.asnumpy()
    if isinstance(calib_data, onp.ndarray):
        data = calib_data
    else:  # an iterable of batches (arrays, or (data, label) tuples as a DataLoader yields)
        chunks = []
        for batch in calib_data:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            chunks.append(batch.asnumpy() if hasattr(batch, "asnumpy") else onp.asarray(batch))
        if not chunks:
            raise ValueError("calib_data holds no batches")
        data = onp.concatenate(chunks)
    data = onp.asarray(data, dtype=onp.float32)
    if data.ndim != len(batch_shape) or data.shape[1:] != tuple(batch_shape[1:]) or not len(data):
        raise ValueError(f"calib_data must have shape (N, {', '.join(map(str, batch_shape[1:]))})"
                         f" with N >= 1, got {data.shape}")
    return data


def _plain_adds(legacy, data_name, shape):
    """``legacy`` with each same-shape numpy ``add`` (``_npi_add``) as ``elemwise_add``.

    MKLDNN's quantization pass fuses a convolution with the residual sum that
    follows it only for ``elemwise_add``; numpy-mode graphs hold ``_npi_add``
    (which broadcasts), so adds whose inputs have equal shapes are renamed.
    """
    import json

    doc = json.loads(legacy.tojson())
    internals = legacy.get_internals()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, out_shapes, _ = internals.infer_shape(**{data_name: shape})
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    nodes = doc["nodes"]

    def out_name(entry):
        node = nodes[entry[0]]
        if node["op"] == "null":
            return node["name"]
        return f"{node['name']}_output" if entry[1] == 0 else f"{node['name']}_output{entry[1]}"

    changed = False
    for node in nodes:
        if node["op"] == "_npi_add" and len(node["inputs"]) == 2:
            a, b = (shapes.get(out_name(e)) for e in node["inputs"])
            if a is not None and a == b:
                node["op"] = "elemwise_add"
                node.pop("attrs", None)
                changed = True
    return mx.sym.load_json(json.dumps(doc)) if changed else legacy


#: ``eps`` of the BatchNorms that :func:`_split_prelu` writes: their variance is
#: stored as ``1 - eps`` so that ``sqrt(var + eps)`` is 1 (cuDNN refuses eps < 1e-5).
_SPLIT_EPS = 1e-5


def _split_prelu(legacy, params, tied=False):
    """``legacy`` with each PReLU written as two per-channel scalings and a sum.

    ``prelu(x) = alpha * x + (1 - alpha) * relu(x)``, each scaling a
    BatchNorm that uses fixed statistics (zero mean and shift, unit variance)
    with ``gamma`` ``alpha`` or ``1 - alpha``.  MXNet 1.9.1's PReLU
    (``LeakyReLU``) has no oneDNN kernel: it runs single-threaded, in float32
    only, and in an INT8 graph between a dequantize and a quantize.  ReLU,
    BatchNorm and ``elemwise_add`` have oneDNN kernels in float32, bfloat16
    and INT8, forward and backward, so the split graph runs multi-threaded
    (``tools/benchmark.py`` measures the difference).

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
    import json

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
                   {"eps": repr(_SPLIT_EPS), "fix_gamma": "False", "use_global_stats": "True",
                    "axis": "1"})

    for i, node in enumerate(old):
        inputs = [[where[e[0]], e[1], 0] for e in node["inputs"]]
        slope = old[node["inputs"][1][0]] if len(node["inputs"]) == 2 else None
        if (node["op"] == "LeakyReLU" and node.get("attrs", {}).get("act_type") == "prelu"
                and slope is not None and slope["op"] == "null" and slope["name"] in params):
            name, alpha = node["name"], params[slope["name"]]
            zero = mx.nd.zeros(alpha.shape, ctx=alpha.context)
            unit = mx.nd.full(alpha.shape, 1.0 - _SPLIT_EPS, ctx=alpha.context)
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


def _inference_graph(net, example):
    """The float32 inference graph of ``net`` made ready for oneDNN, with its parameters.

    Re-traces ``net`` (so a graph its caller rewrote, e.g. by
    ``net.optimize_for``, is not the one used), renames same-shape numpy adds
    ``elemwise_add`` (:func:`_plain_adds`) and splits PReLU
    (:func:`_split_prelu`).  Returns
    ``(data_name, legacy_symbol, params)``, ``params`` name -> legacy NDArray
    on ``example``'s context for every argument and auxiliary state but the data.
    """
    net.hybridize(static_alloc=True, static_shape=True)
    net(example)
    inputs, sym = net._cached_graph
    if len(inputs) != 1:
        raise ValueError(f"a fast embedder needs a network with one input, got {len(inputs)}")
    data_name = inputs[0].name
    ctx = example.ctx
    source = net.collect_params()
    legacy = _plain_adds(sym.as_nd_ndarray(), data_name, tuple(example.shape))
    params = {n: source[n].data(ctx).as_nd_ndarray()
              for n in legacy.list_arguments() + legacy.list_auxiliary_states() if n != data_name}
    legacy, params = _split_prelu(legacy, params)
    return data_name, legacy, params


def _load_block(block, params, ctx, low=(), dtype=None):
    """Load ``params`` (name -> legacy NDArray) into ``block`` for inference.

    Parameters named in ``low`` are stored in ``dtype``.
    """
    for name, param in block.collect_params().items():
        param.grad_req = "null"  # inference only; and no gradient buffers
        data = params[name]
        if name in low:
            param.cast(dtype)
            # numpy-mode arrays cannot be copied in bfloat16: keep the legacy view.
            data = mx.nd.amp_cast(data, dtype=dtype)
        elif onp.dtype(data.dtype) != onp.dtype(param.dtype):
            param.cast(data.dtype)
        param._load_init(data, ctx)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


@contextlib.contextmanager
def _quiet_subgraph_log():
    # Binding the calibration Module logs "Subgraph backend MKLDNN is activated"
    # to stderr unless MXNET_SUBGRAPH_VERBOSE is 0; library code stays quiet.
    old = os.environ.get("MXNET_SUBGRAPH_VERBOSE")
    os.environ["MXNET_SUBGRAPH_VERBOSE"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MXNET_SUBGRAPH_VERBOSE", None)
        else:
            os.environ["MXNET_SUBGRAPH_VERBOSE"] = old


@use_np
def to_int8(net, example, calib_data=None, calib_mode="naive", num_calib_examples=None,
            quantized_dtype="auto", granularity="channel-wise", exclude_layers=None):
    """An INT8 copy of ``net`` for the CPU, quantized by MXNet's MKLDNN flow.

    ``mxnet.contrib.quantization.quantize_net(_v2)`` cannot take a numpy-mode
    block in 1.9.1: it probes the network with legacy ``mx.nd`` zeros, the
    block raises ``TypeError`` and the probe loop ends in ``IndexError: list
    assignment index out of range``.  So this function runs the same steps on
    the legacy view of the cached float32 graph:

    1. ``get_backend_symbol('MKLDNN_QUANTIZE')`` fuses convolution + following
       BatchNorm (folded into the weights) + residual sum, and the dense layer
       (same-shape numpy adds are first renamed ``elemwise_add``, the only add
       the pass fuses; that halves the quantize/dequantize nodes of a
       FaceResNet);
    2. ``quantize_graph`` inserts quantize/requantize/dequantize nodes
       (weights ``granularity``-wise int8, activations int8/uint8);
    3. calibration: the float32 graph runs on ``calib_data`` in a ``Module``
       and each quantized layer's output range is recorded
       (``'naive'``: min/max; ``'entropy'``: the KL-optimal threshold of the
       histogram).  MXNet's ``'none'`` (ranges computed at run time) is not
       offered: its graph fails in a Gluon ``CachedOp`` in 1.9.1 ("Gradient
       function not returning enough gradient");
    4. ``calib_graph`` writes the ranges into the graph, which is fused again.

    PReLU has no INT8 kernel; split into BatchNorm scalings and a ReLU
    (:func:`_split_prelu`) it is quantized with the rest, so the whole graph
    runs in INT8 between one quantize and one dequantize.  The BatchNorm that
    precedes each block's first convolution cannot be folded; it runs as
    ``quantized_batch_norm``.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone with one input, numpy mode, parameters on the CPU.
    example : mxnet.np.ndarray, shape (B, 3, H, W)
        An input of the shape that will be fed; ``B`` is also the calibration
        batch size.
    calib_data : array_like or iterable, optional
        Normalised images ``(N, 3, H, W)`` float32 (numpy or mxnet arrays, or
        an iterable of such batches, e.g. a ``DataLoader``).  A few batches of
        real images: the ranges are only as good as these are representative.
    calib_mode : {'naive', 'entropy'}
    num_calib_examples : int, optional
        Use at most this many images of ``calib_data`` (default all).
    quantized_dtype : {'auto', 'int8', 'uint8'}
        Activation type; ``'auto'`` picks uint8 after non-negative layers.
    granularity : {'channel-wise', 'tensor-wise'}
        Weight scales per output channel or per tensor.
    exclude_layers : list of str, optional
        Graph node names to keep in float32.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Hybridized (static memory), inference only: ``block(x)`` with ``x`` of
        ``example``'s shape float32 -> ``(B, E)`` float32.  ``net`` is
        re-hybridized (plain graph) as a side effect; its parameters are not
        changed.

    Raises
    ------
    ValueError
        Bad ``calib_mode``, ``calib_data`` or context.
    """
    from mxnet.contrib import quantization as quant

    if calib_mode not in CALIB_MODES:
        raise ValueError(f"calib_mode must be one of {', '.join(CALIB_MODES)}, not {calib_mode!r}")
    ctx = example.ctx
    if ctx.device_type != "cpu":
        raise ValueError(f"int8 embedding runs on the CPU (MKLDNN) only, not on {ctx}")
    if calib_data is None:
        raise ValueError("int8 needs calib_data (a few batches of normalised images)")
    calib = _calibration_batches(calib_data, example.shape)
    if num_calib_examples is not None:
        if num_calib_examples < 1:
            raise ValueError(f"num_calib_examples must be >= 1, got {num_calib_examples}")
        calib = calib[:num_calib_examples]
    data_name, legacy, params = _inference_graph(net, example)
    args = {n: params[n] for n in legacy.list_arguments() if n != data_name}
    auxs = {n: params[n] for n in legacy.list_auxiliary_states()}
    batch = tuple(example.shape)
    with mx.util.np_array(False), mx.util.np_shape(False), warnings.catch_warnings(), \
            _quiet_subgraph_log():
        warnings.simplefilter("ignore")
        fused = legacy.get_backend_symbol("MKLDNN_QUANTIZE")
        qsym, qargs, qauxs, collector = quant.quantize_graph(
            sym=fused, arg_params=args, aux_params=auxs, ctx=ctx,
            excluded_sym_names=list(exclude_layers or []), calib_mode=calib_mode,
            quantized_dtype=quantized_dtype, quantize_mode="full",
            quantize_granularity=granularity, logger=None)
        module = mx.mod.Module(symbol=fused, context=ctx, data_names=[data_name],
                               label_names=None)
        module.bind(for_training=False, data_shapes=[(data_name, batch)])
        module.set_params(args, auxs, allow_missing=False, force_init=True)
        # 'pad' wraps around to fill the last batch: ranges see real images only.
        batches = mx.io.NDArrayIter(data={data_name: calib}, batch_size=batch[0],
                                    last_batch_handle="pad")
        quant._collect_layer_statistics(module, batches, collector, len(calib))
        qsym, qargs, qauxs = quant.calib_graph(qsym, args, auxs, collector,
                                               calib_mode=calib_mode,
                                               quantized_dtype=quantized_dtype, logger=None)
        qsym = qsym.get_backend_symbol("MKLDNN_QUANTIZE")
        block = gluon.SymbolBlock(qsym.as_np_ndarray(),
                                  [mx.sym.var(data_name).as_np_ndarray()])
    return _load_block(block, dict(qauxs, **qargs), ctx)


@use_np
def prepare_embedder(net, example, mode="fused", ctx=None, calib_data=None,
                     calib_mode="naive", num_calib_examples=None):
    """``net`` made ready for fast inference in ``mode`` (see the module docstring).

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone (e.g. a FaceResNet), numpy mode.
    example : mxnet.np.ndarray, shape (B, 3, H, W)
        A batch of the shape that will be fed (static shapes: feed that shape).
    mode : {'block', 'hybrid', 'fused', 'bf16', 'int8'}
        ``'block'`` returns ``net`` imperative (the slow reference).
    ctx : Context, optional
        For ``'bf16'``: where the converted parameters live.
    calib_data, calib_mode, num_calib_examples
        For ``'int8'``: see :func:`to_int8`.

    Returns
    -------
    mxnet.gluon.HybridBlock
        ``net`` itself for ``'block'``/``'hybrid'`` (hybridized in place; call
        ``net.hybridize(active=False)`` to undo), a new inference-only block
        with copied parameters for ``'fused'``, ``'bf16'`` and ``'int8'``.
    """
    _check_mode(mode)
    if mode == "block":
        net.hybridize(active=False)
        return net
    if mode == "bf16":
        return to_bfloat16(net, example, ctx)
    if mode == "int8":
        return to_int8(net, example, calib_data=calib_data, calib_mode=calib_mode,
                       num_calib_examples=num_calib_examples)
    net.hybridize(static_alloc=True, static_shape=True)
    if mode == "fused":
        return to_fused(net, example)
    return net


@use_np
def to_fused(net, example):
    """A float32 inference copy of ``net`` with MXNet's MKLDNN graph fusion.

    The graph of :func:`_inference_graph` (residual adds as ``elemwise_add``,
    PReLU split into oneDNN operators) through ``optimize_for(example,
    backend='MKLDNN')``: each BatchNorm that follows a convolution is folded
    into its weights and bias, and the dense layer is fused.  ``net`` is
    re-hybridized as a side effect; its parameters are not changed.
    """
    data_name, legacy, params = _inference_graph(net, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = gluon.SymbolBlock(legacy.as_np_ndarray(),
                                  [mx.sym.var(data_name).as_np_ndarray()])
    block = _load_block(block, params, example.ctx)
    with _quiet_subgraph_log():
        block.optimize_for(example, backend="MKLDNN", static_alloc=True, static_shape=True)
    return block


@use_np
def extract_embeddings(embedder, images, batch_size=64, normalize=False):
    """Embeddings of ``images`` in batches of ``batch_size`` (the last batch padded).

    Padding keeps one input shape, which static graphs need.

    Parameters
    ----------
    embedder : Block
        From :func:`prepare_embedder` (built for ``batch_size``).
    images : numpy.ndarray or mxnet.np.ndarray, shape (N, 3, H, W), float32
        Normalised as the backbone expects, ``(x - 127.5) / 128``.
    batch_size : int
    normalize : bool, default False
        L2-normalise each embedding.

    Returns
    -------
    numpy.ndarray, shape (N, E), float32
    """
    import numpy as onp

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = images.asnumpy() if hasattr(images, "asnumpy") else onp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {images.shape}")
    ctx = _first_ctx(embedder)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].astype("float32")
        n = len(chunk)
        if n < batch_size:
            pad = onp.zeros((batch_size - n,) + chunk.shape[1:], dtype="float32")
            chunk = onp.concatenate([chunk, pad])
        emb = embedder(np.array(chunk, ctx=ctx))
        out.append(emb.asnumpy()[:n].astype("float32"))
    emb = onp.concatenate(out) if out else onp.zeros((0, 0), dtype="float32")
    if normalize and len(emb):
        emb = emb / onp.sqrt((emb * emb).sum(axis=1, keepdims=True) + 1e-12)
    return emb


def _first_ctx(block):
    for param in block.collect_params().values():
        try:
            return param.list_ctx()[0]
        except RuntimeError:  # deferred initialisation
            continue
    return mx.cpu()

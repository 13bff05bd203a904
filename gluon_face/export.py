"""Export a backbone to ONNX and check the exported graph against MXNet.

The route is MXNet's own: ``net.hybridize()``, one forward pass, ``net.export``
(``prefix-symbol.json`` + ``prefix-0000.params``), then
:func:`mxnet.onnx.export_model`.  Two facts shape this module:

* ``mx.onnx`` converts the *legacy* operators only: a numpy-mode network
  (``@use_np``) exports ``_npi_add`` for the residual sum, ``_np_sum`` for a
  norm, ``_npi_multiply_scalar`` for ``x * s`` ..., none of which has a
  converter.  :func:`to_legacy_graph` renames those nodes to the legacy
  operator computing the same float32 arithmetic (``_npi_add`` ->
  ``broadcast_add``, ``_npi_multiply_scalar`` -> ``_mul_scalar``, ...), in the
  exported graph only.  Likewise the ``gamma`` of every BatchNorm run with
  ``fix_gamma=True`` (``nn.BatchNorm(scale=False)``), which MXNet ignores but
  ONNX would apply, is set to ones in the exported parameters.  Before
  converting, :func:`export_onnx` runs the rewritten graph in MXNet and requires
  its output to equal the network's to ``rewrite_tol`` (measured: 0.0,
  bit-identical), so the rewrite cannot change what is exported.
* ``mx.onnx.export_model`` imports ``onnx.mapping``, removed in onnx 1.18:
  install ``onnx<1.18`` (and ``onnxruntime`` for the check).

After conversion the ``.onnx`` file is checked with ``onnx.checker`` and run
in onnxruntime on random inputs in the normalised pixel range ``[-1, 1]``; the
file is renamed into place only if the largest absolute difference to MXNet's
embeddings is at most ``atol`` (otherwise :class:`OnnxMismatchError` and no
file).
"""
import ast
import collections
import json
import os
import tempfile

import numpy as onp
from mxnet.util import use_np  # noqa: E402

from . import _mxnet  # noqa: F401  (actionable error when MXNet is missing)
from ._io import atomic_path

__all__ = ["export_onnx", "check_onnx", "to_legacy_graph", "OnnxMismatchError",
           "NUMPY_TO_LEGACY"]

_INSTALL = "pip install 'onnx<1.18' onnxruntime  (or: pip install 'gluon_face[onnx]')"

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
    "_npi_copy": "_copy",
    "_npx_relu": "relu",
    "_npx_sigmoid": "sigmoid",
}


#: Opset of mx.onnx's newest translation table (MXNet 1.9.1); the exported models declare it.
ONNX_OPSET = 13


class OnnxMismatchError(RuntimeError):
    """The exported graph does not reproduce MXNet's output within tolerance."""


def _import_onnx():
    try:
        import onnx
        import onnxruntime
        from onnx import mapping  # noqa: F401  (mx.onnx needs it; gone in onnx 1.18)
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx<1.18 and onnxruntime ({err}): "
                          f"{_INSTALL}") from None
    return onnx, onnxruntime


def _parse_axis(text):
    value = ast.literal_eval(text) if text not in (None, "None") else None
    return value


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


_SPECIAL = {"_np_sum": ("sum", _reduce_attrs), "_npi_mean": ("mean", _reduce_attrs),
            "_np_reshape": ("Reshape", _reshape_attrs),
            "_npx_reshape": ("Reshape", _reshape_attrs)}


def to_legacy_graph(graph):
    """Rename numpy-mode operators of an exported symbol graph to their legacy twins.

    Parameters
    ----------
    graph : dict
        The parsed ``prefix-symbol.json`` written by ``HybridBlock.export``.

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
    renamed = collections.Counter()
    for node in graph["nodes"]:
        op = node["op"]
        if op in NUMPY_TO_LEGACY:
            node["op"] = NUMPY_TO_LEGACY[op]
            renamed[op] += 1
        elif op in _SPECIAL:
            legacy, convert = _SPECIAL[op]
            attrs = convert(node)
            if attrs is not None:
                node["op"] = legacy
                node["attrs"] = attrs
                renamed[op] += 1
    return graph, renamed


def _fixed_gammas(graph):
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


def _set_ones(params_file, names):
    """Overwrite the named ``arg:`` parameters of an MXNet parameter file with ones."""
    import mxnet as mx

    if not names:
        return
    params = mx.nd.load(params_file)
    for name in names:
        key = "arg:" + name
        params[key] = mx.nd.ones_like(params[key])
    mx.nd.save(params_file, params)


def _unsupported_ops(graph):
    import mxnet as mx

    supported = set(mx.onnx.get_operator_support(ONNX_OPSET)) | {"null"}
    return sorted({n["op"] for n in graph["nodes"]} - supported)


def _fix_prelu_slopes(onnx, model):
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


def _finish_model(onnx, path):
    """Declare the opset the converters wrote, fix PReLU slopes, keep weights out of inputs.

    mx.onnx stamps the model with the newest opset of the installed onnx but
    writes every node with its opset-13 translations (``ReduceMean`` with an
    ``axes`` attribute, valid only before opset 18); it writes per-channel PReLU
    slopes with a shape ONNX broadcasts along the wrong axis
    (:func:`_fix_prelu_slopes`); and it lists every weight as a graph input as
    well as an initializer, so onnxruntime treats the weights as overridable
    inputs (no constant folding, one warning per weight).  None of this changes a
    node or a weight value.
    """
    model = onnx.load(path)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, ONNX_OPSET)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    _fix_prelu_slopes(onnx, model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _first_context(net):
    import mxnet as mx

    for param in net.collect_params().values():
        try:
            return param.list_ctx()[0]
        except (RuntimeError, AssertionError):
            break
    return mx.cpu()


def _random_batches(shape, trials, seed):
    rng = onp.random.RandomState(seed)
    return [rng.uniform(-1.0, 1.0, size=shape).astype(onp.float32) for _ in range(trials)]


def _run_mxnet(net, x, ctx):
    import mxnet as mx

    return net(mx.np.array(x, ctx=ctx)).asnumpy()


def _run_symbol(symbol_file, params_file, batches, ctx):
    """Outputs of a symbol + parameter file on ``batches`` (MXNet executor)."""
    import mxnet as mx

    sym = mx.sym.load(symbol_file)
    loaded = mx.nd.load(params_file) or {}  # a list when there are no parameters
    args = {k[4:]: v.as_in_context(ctx) for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v.as_in_context(ctx) for k, v in loaded.items() if k.startswith("aux:")}
    (data_name,) = [n for n in sym.list_arguments() if n not in args]
    outputs = []
    for x in batches:
        args[data_name] = mx.nd.array(x, ctx=ctx)
        exe = sym.bind(ctx, args=args, aux_states=aux, grad_req="null")
        outputs.append(exe.forward(is_train=False)[0].asnumpy())
    return outputs


@use_np  # parameter files of numpy-mode blocks load only under np semantics
def check_onnx(onnx_file, net, batches=None, input_shape=None, trials=3, seed=0, ctx=None):
    """Largest difference between onnxruntime and MXNet on random inputs, scaled.

    The difference of a batch is ``max |onnx(x) - net(x)| / max(1, max |net(x)|)``: an
    absolute difference for embeddings of ordinary size (|y| <= 1, e.g. after the
    final BatchNorm of a trained network), a relative one for networks whose raw
    outputs are large (float32 keeps about 7 significant digits whatever the scale).

    Parameters
    ----------
    onnx_file : str
        The exported model.
    net : mxnet.gluon.HybridBlock
        The MXNet network it was exported from.
    batches : list of numpy.ndarray, optional
        Inputs ``(B, 3, H, W)`` float32; default ``trials`` draws of
        ``uniform(-1, 1)`` of ``input_shape`` (the normalised pixel range).
    input_shape : tuple, optional
        Needed when ``batches`` is not given.
    trials, seed : int
        Number and seed of the random batches.
    ctx : mxnet.Context, optional
        Where ``net`` runs; default the context of its first parameter.

    Returns
    -------
    float
        The largest scaled difference over all batches.
    """
    _, ort = _import_onnx()
    ctx = _first_context(net) if ctx is None else ctx
    if batches is None:
        batches = _random_batches(tuple(input_shape), trials, seed)
    try:
        session = ort.InferenceSession(os.fspath(onnx_file), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs = [session.run(None, {name: x})[0] for x in batches]
    except Exception as err:  # onnxruntime's own exception classes are not importable API
        text = str(err).strip().splitlines()
        raise OnnxMismatchError(f"{onnx_file}: onnxruntime cannot run the model: "
                                f"{text[0] if text else type(err).__name__}") from None
    diff = 0.0
    for x, got in zip(batches, outputs):
        want = _run_mxnet(net, x, ctx)
        if got.shape != want.shape:
            raise OnnxMismatchError(f"{onnx_file}: output shape {got.shape}, "
                                    f"MXNet gives {want.shape}")
        scale = max(1.0, float(onp.max(onp.abs(want))))
        diff = max(diff, float(onp.max(onp.abs(got.astype(onp.float64) - want))) / scale)
    return diff


@use_np
def export_onnx(net, path, image_size, batch_size=1, ctx=None, atol=1e-4, trials=3, seed=0,
                rewrite_tol=0.0):
    """Export ``net`` to the ONNX file ``path`` and check it against MXNet.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone, ``(B, 3, H, W)`` float32 -> ``(B, D)``.  It is
        hybridized (and run once) here.
    path : str
        Destination ``.onnx``; written atomically, and only if the check passes.
    image_size : tuple of int
        ``(H, W)`` of the network input.
    batch_size : int
        The fixed batch dimension ``B`` of the exported graph.
    ctx : mxnet.Context, optional
        Where the MXNet reference runs; default the context of the first parameter.
    atol : float
        Largest allowed ``max |onnx - mxnet| / max(1, max |mxnet|)`` on the random
        check inputs (see :func:`check_onnx`).
    trials, seed : int
        Number and seed of the random ``uniform(-1, 1)`` check batches.
    rewrite_tol : float
        Largest allowed difference between the network and its exported graph
        after :func:`to_legacy_graph` (both run in MXNet).

    Returns
    -------
    dict
        ``path``, ``input_name``, ``input_shape`` ``(B, 3, H, W)``,
        ``output_shape``, ``renamed_ops`` (numpy op -> count),
        ``rewrite_max_abs_diff``, ``max_abs_diff`` (onnxruntime vs MXNet),
        ``atol``.

    Raises
    ------
    ImportError
        If onnx<1.18 or onnxruntime is missing.
    ValueError
        If the graph holds an operator mx.onnx cannot convert (named).
    OnnxMismatchError
        If the renamed graph or the ONNX model differ from MXNet beyond tolerance.
    """
    import mxnet as mx

    onnx, ort = _import_onnx()
    ctx = _first_context(net) if ctx is None else ctx
    height, width = (int(s) for s in image_size)
    shape = (int(batch_size), 3, height, width)
    if min(shape) < 1:
        raise ValueError(f"bad input shape {shape}: batch size and image size must be positive")
    net.hybridize()
    net(mx.np.zeros(shape, ctx=ctx))
    batches = _random_batches(shape, trials, seed)
    with tempfile.TemporaryDirectory(prefix="gluon_face_onnx_") as folder:
        prefix = os.path.join(folder, "backbone")
        net.export(prefix, epoch=0)
        symbol_file, params_file = prefix + "-symbol.json", prefix + "-0000.params"
        with open(symbol_file) as f:
            graph, renamed = to_legacy_graph(json.load(f))
        missing = _unsupported_ops(graph)
        if missing:
            raise ValueError(f"mx.onnx cannot convert operator(s) {', '.join(missing)} "
                             f"of {type(net).__name__}")
        original = _run_symbol(symbol_file, params_file, batches, ctx)
        with open(symbol_file, "w") as f:
            json.dump(graph, f)
        # gamma of a fix_gamma BatchNorm is ignored by MXNet but not by ONNX; the
        # rewrite check below runs on the new parameters too.
        _set_ones(params_file, _fixed_gammas(graph))
        legacy = _run_symbol(symbol_file, params_file, batches, ctx)
        rewrite_diff = max(float(onp.max(onp.abs(a - b))) for a, b in zip(legacy, original))
        if rewrite_diff > rewrite_tol:
            raise OnnxMismatchError("renaming numpy operators to legacy ones changed the output "
                                    f"of {type(net).__name__} by {rewrite_diff:.3g} "
                                    f"> {rewrite_tol:.3g}")
        with atomic_path(path, suffix=".onnx") as tmp:
            try:
                mx.onnx.export_model(symbol_file, params_file, in_shapes=[shape],
                                     in_types=[onp.float32], onnx_file_path=tmp)
            except (AttributeError, NotImplementedError, KeyError, TypeError) as err:
                raise ValueError(f"mx.onnx could not convert {type(net).__name__}: {err}") from None
            _finish_model(onnx, tmp)
            diff = check_onnx(tmp, net, batches=batches, ctx=ctx)
            session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name
            output_shape = tuple(session.get_outputs()[0].shape)
            if not diff <= atol:
                raise OnnxMismatchError(f"{path}: onnxruntime differs from MXNet by "
                                        f"max |diff| / max(1, max |y|) = {diff:.3g} > {atol:.3g}")
    return {"path": os.fspath(path), "input_name": input_name, "input_shape": shape,
            "output_shape": output_shape, "renamed_ops": dict(renamed),
            "rewrite_max_abs_diff": rewrite_diff, "max_abs_diff": diff, "atol": atol}

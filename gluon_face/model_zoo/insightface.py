"""insightface's MXNet checkpoints in and out: ``prefix-symbol.json`` + ``prefix-0000.params``.

insightface (https://github.com/deepinsight/insightface, ``recognition/arcface_mxnet``)
publishes its models (model-r100-ii, LResNet100E-IR, MobileFaceNet, ...) as a
symbol graph and an MXNet array file whose keys are ``arg:<name>`` / ``aux:<name>``.
Its ``fresnet`` with ``net_unit`` 3 and the ``E`` (or ``FC``) output is
:class:`~gluon_face.model_zoo.FaceResNet`: ``net_input`` 1 (a 3x3 stride-1
``conv0``) with ``stem='3x3'``, ``net_input`` 0 (a 7x7 stride-2 ``conv0``, read
from the kernel of ``conv0_weight``) with ``stem='7x7'``; and its ``fmobilefacenet`` with
the ``GDC`` output is :class:`~gluon_face.model_zoo.MobileFaceNet`: the same layers
in the same order, so every array has one place in our network.

Names (insightface -> our structural parameter keys; ``_moving_mean`` /
``_moving_var`` are our ``running_mean`` / ``running_var``, a PReLU's ``_gamma``
our ``alpha``)::

    FaceResNet       conv0, bn0, relu0             features.0, .1, .2
                     stage{i}_unit{j}_bn1, _conv1, _bn2, _relu1, _conv2, _bn3
                                                   features.{i+2}.{j-1}.body.0 ... .5
                     stage{i}_unit{j}_conv1sc, _sc features.{i+2}.{j-1}.downsample.0, .1
                     bn1, pre_fc1, fc1             output.0, the Dense, the last BatchNorm
    MobileFaceNet    <unit>_conv2d, _batchnorm, _relu      <path>.0, .1, .2
                     conv_1, conv_2_dw | res_2, dconv_23, res_3, dconv_34, res_4,
                     dconv_45, res_5, conv_6sep    features.0 ... features.8
                     <block>_conv_sep, _conv_dw, _conv_proj  <path>.0, .1, .2
                     res_k_block{n}                features.<stage>.{n}.body
                     conv_6dw7_7_conv2d, _batchnorm, pre_fc1, fc1  output.0, .1, .3, .4

Input normalisation: insightface's graph starts with ``(data - 127.5) * 0.0078125``
(nodes ``_minusscalar`` and ``_mulscalar``, after an ``identity`` named ``id`` in
``fresnet``), on raw 0-255 RGB; our networks take the normalised image,
``(pixel - 127.5) / 128`` (:class:`~gluon_face.data.FaceTransform`), and 0.0078125
is exactly 1/128, so the two compute the same function.  On import that prefix
is recognised and dropped; on export it is written back.  A graph without it
(its inputs normalised outside) is read too and reported; any other scaling is
refused.

The classifier: a symbol saved with its training graph still holds ``fc7`` (the
class centres, ``fc7_weight`` (C, E), plus ``fc7_bias`` for a softmax head).
:func:`from_insightface` cuts the graph at ``fc1`` and returns those arrays in its
``info``; :func:`to_insightface` writes the embedding graph only (what insightface
saves with ``ckpt_embedding``), so that insightface's loader
(``mx.model.load_checkpoint`` then ``Module.set_params``) takes the file as is.

Whatever cannot be mapped is refused with one line naming the file and the first
array (or layer) in question: other ``net_unit`` / ``net_input`` variants (an
input BatchNorm of ``net_input`` 2, squeeze-excitation arrays, other output
types), missing arrays and shape mismatches.  After loading, the symbol itself
is run on a random raw batch and the network's embeddings compared with it
(``verify``), so a graph that differs in something the names do not show (a
stride, an activation) is refused too.
"""
import json
import math
import os

import mxnet as mx
import numpy as onp

from .._io import atomic_path
from .._mxnet import error_message
from ..graph import mxnet_compat as compat
from .faceresnet import (
    DROPOUT_RATE,
    STEMS,
    BasicBlockV3,
    FaceResNet,
    faceresnet_spec,
    feature_side,
)
from .mobilefacenet import MOBILEFACENET_LAYERS, DepthwiseResidual, MobileFaceNet
from .registry import get_model

__all__ = ["from_insightface", "to_insightface", "insightface_paths", "insightface_names",
           "InsightFaceError", "INPUT_MEAN", "INPUT_SCALE"]

#: insightface's in-graph normalisation: ``(data - INPUT_MEAN) * INPUT_SCALE``.
INPUT_MEAN = 127.5
INPUT_SCALE = 0.0078125  # 1 / 128, exactly

_SUFFIX = {"weight": "_weight", "bias": "_bias", "gamma": "_gamma", "beta": "_beta",
           "running_mean": "_moving_mean", "running_var": "_moving_var", "alpha": "_gamma"}
_AUX = ("running_mean", "running_var")
_UNIT_NAMES = ("_bn1", "_conv1", "_bn2", "_relu1", "_conv2", "_bn3")
_MFN_STAGES = ("res_2", "res_3", "res_4", "res_5")
_MFN_DOWN = ("dconv_23", "dconv_34", "dconv_45")
# Operators that may sit between the data and the first layer, as (a, b) of a*x + b.
_SCALAR_OPS = {"_minus_scalar": lambda s: (1.0, -s), "_plus_scalar": lambda s: (1.0, s),
               "_mul_scalar": lambda s: (s, 0.0), "_div_scalar": lambda s: (1.0 / s, 0.0)}
_PASS_OPS = ("identity", "_copy")


class InsightFaceError(ValueError):
    """An insightface checkpoint that cannot be read or mapped, or a network that cannot be
    written in insightface's layout (one line naming the file and the array)."""


def insightface_paths(prefix, epoch=0):
    """``(prefix-symbol.json, prefix-%04d.params)``: insightface's / MXNet's file names."""
    prefix = os.fspath(prefix)
    return f"{prefix}-symbol.json", "%s-%04d.params" % (prefix, int(epoch))


# ------------------------------------------------------------------------------ names
def _layer_names(net):
    """``{our layer path: insightface layer name}`` of every layer that holds parameters."""
    names = {}
    if isinstance(net, FaceResNet):
        stem = net.num_stem_layers
        if stem != 3 or not all(isinstance(u, BasicBlockV3)
                                for s in list(net.features)[stem:] for u in s):
            raise InsightFaceError("only FaceResNet's conv-BN-act stem and BasicBlockV3 units "
                                   "have insightface names")
        names.update({"features.0": "conv0", "features.1": "bn0", "features.2": "relu0"})
        for i in range(len(net.layers)):
            for j in range(net.layers[i]):
                path, base = f"features.{stem + i}.{j}", f"stage{i + 1}_unit{j + 1}"
                for k, suffix in enumerate(_UNIT_NAMES):
                    names[f"{path}.body.{k}"] = base + suffix
                names[f"{path}.downsample.0"] = base + "_conv1sc"
                names[f"{path}.downsample.1"] = base + "_sc"
        children = list(compat.block_children(net.output).items())
        names["output.0"] = "bn1"
        names.update({f"output.{k}": "pre_fc1" for k, c in children
                      if isinstance(c, mx.gluon.nn.Dense)})
        names[f"output.{children[-1][0]}"] = "fc1"
        return names
    if isinstance(net, MobileFaceNet):
        def unit(path, name):
            names.update({f"{path}.0": name + "_conv2d", f"{path}.1": name + "_batchnorm",
                          f"{path}.2": name + "_relu"})

        def block(path, name):
            for k, part in enumerate(("_conv_sep", "_conv_dw", "_conv_proj")):
                unit(f"{path}.{k}", name + part)

        unit("features.0", "conv_1")
        index = 1
        for i, stage_name in enumerate(_MFN_STAGES):
            if i:
                block(f"features.{index}", _MFN_DOWN[i - 1])
                index += 1
            if i == 0 and net.layers[0] == 1:
                unit(f"features.{index}", "conv_2_dw")
            else:
                for n in range(net.layers[i]):
                    block(f"features.{index}.{n}.body", f"{stage_name}_block{n}")
            index += 1
        unit(f"features.{index}", "conv_6sep")
        names.update({"output.0": "conv_6dw7_7_conv2d", "output.1": "conv_6dw7_7_batchnorm",
                      "output.3": "pre_fc1", "output.4": "fc1"})
        return names
    raise InsightFaceError(f"{type(net).__name__} has no insightface layout (FaceResNet and "
                           f"MobileFaceNet have)")


def insightface_names(net):
    """``{our structural key: ('arg' or 'aux', insightface array name)}`` for ``net``.

    Raises
    ------
    InsightFaceError
        ``net`` is neither a FaceResNet nor a MobileFaceNet.
    """
    layers = _layer_names(net)
    out = {}
    for key in compat.structural_params(net):
        path, attr = key.rsplit(".", 1)
        if path not in layers or attr not in _SUFFIX:
            raise InsightFaceError(f"{key}: no insightface name for this parameter")
        out[key] = ("aux" if attr in _AUX else "arg", layers[path] + _SUFFIX[attr])
    return out


# ----------------------------------------------------------------------------- reading
def _load_symbol(path):
    try:
        with mx.util.np_array(False), mx.util.np_shape(False):
            return mx.sym.load(path)
    except (OSError, mx.base.MXNetError, ValueError) as err:
        raise InsightFaceError(f"{path}: not an MXNet symbol file "
                               f"({error_message(err).splitlines()[0]})") from None


def _load_arrays(path):
    try:
        with mx.util.np_array(False), mx.util.np_shape(False):
            loaded = mx.nd.load(path)
    except (OSError, mx.base.MXNetError, ValueError) as err:
        raise InsightFaceError(f"{path}: not an MXNet array file "
                               f"({error_message(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise InsightFaceError(f"{path}: holds an unnamed list of arrays, not a checkpoint's "
                               f"arg:/aux: arrays")
    arrays = {}
    for key, value in loaded.items():
        kind, _, name = key.partition(":")
        if kind not in ("arg", "aux") or not name:
            raise InsightFaceError(f"{path}: array {key!r} has no arg: or aux: prefix "
                                   f"(not an mx.model.save_checkpoint file)")
        arrays[name] = (kind, value.asnumpy().astype("float32"))
    return arrays


def _input_affine(graph, sym_path):
    """``(a, b, first node)``: the scalar ops right after ``data`` compute ``a * x + b``."""
    nodes = graph["nodes"]
    consumers = {}
    for i, node in enumerate(nodes):
        for src in node.get("inputs", []):
            consumers.setdefault(src[0], []).append(i)
    data = [i for i, n in enumerate(nodes) if n["op"] == "null" and n["name"] == "data"]
    if not data:
        raise InsightFaceError(f"{sym_path}: the graph has no input named 'data'")
    a, b, current = 1.0, 0.0, data[0]
    while len(consumers.get(current, [])) == 1:
        node = nodes[consumers[current][0]]
        if node["op"] in _PASS_OPS:
            pass
        elif node["op"] in _SCALAR_OPS:
            scalar = float(node.get("attrs", {}).get("scalar", "nan"))
            ma, mb = _SCALAR_OPS[node["op"]](scalar)
            a, b = ma * a, ma * b + mb
        else:
            break
        current = consumers[current][0]
    return a, b, nodes[current]["name"]


def _count(names, pattern):
    n = 0
    while pattern.format(n + 1) in names:
        n += 1
    return n


def _shape(arrays, name, sym_path):
    if name not in arrays:
        raise InsightFaceError(f"{sym_path}: the graph has no array {name!r}")
    return arrays[name]


def _infer_faceresnet(shapes, ops, sym_path, image_size):
    conv0 = _shape(shapes, "conv0_weight", sym_path)
    stem = f"{conv0[2]}x{conv0[3]}"
    if stem not in STEMS:
        raise InsightFaceError(
            f"{sym_path}: conv0_weight is {stem}: FaceResNet's stems are 3x3 stride 1 "
            f"(insightface's net_input 1) and 7x7 stride 2 (net_input 0)")
    want = STEMS[stem][1]
    stride = ops.get("conv0", {}).get("stride", "(1, 1)").replace(" ", "")
    if stride not in (f"({want},{want})", str(want), f"({want},)"):
        raise InsightFaceError(f"{sym_path}: conv0 has stride {stride}; FaceResNet's {stem} "
                               f"stem has stride {want}")
    layers = []
    while f"stage{len(layers) + 1}_unit1_conv1_weight" in shapes:
        i = len(layers) + 1
        layers.append(_count(shapes, f"stage{i}_unit{{}}_conv1_weight"))
    if not layers:
        raise InsightFaceError(f"{sym_path}: no stage1_unit1_conv1_weight: not insightface's "
                               f"fresnet")
    channels = [int(conv0[0])] + [int(shapes[f"stage{i + 1}_unit1_conv1_weight"][0])
                                  for i in range(len(layers))]
    fc = _shape(shapes, "pre_fc1_weight", sym_path)
    factor = 2 ** len(layers)
    if image_size is None:
        cells, rest = divmod(int(fc[1]), channels[-1])
        side = math.isqrt(cells)
        # Halving with ceil, the 7x7 stem's last map of side s comes from two sizes
        # (32 s - 16 and 32 s for four stages); the smaller is insightface's 112 for
        # its 4x4 maps.
        fits = [k * factor for k in range(1, 2 * side + 2)
                if feature_side(k * factor, len(layers), stem) == side]
        if rest or side * side != cells or not fits:
            raise InsightFaceError(f"{sym_path}: pre_fc1_weight {tuple(fc)} does not fit a "
                                   f"square last map of {channels[-1]} channels: give "
                                   f"image_size")
        image_size = fits[0]
    kwargs = {"emb_size": int(fc[0]),
              "act_type": "prelu" if "relu0_gamma" in shapes else "relu",
              "image_size": image_size}
    if stem != "3x3":
        kwargs["stem"] = stem
    if any(op["op"] == "Dropout" for op in ops.values()):
        kwargs["use_dropout"] = True
    for depth in sorted(faceresnet_spec):
        if list(faceresnet_spec[depth][1]) == layers and \
                list(faceresnet_spec[depth][2]) == channels:
            return f"faceresnet{depth}", kwargs
    return "faceresnet18", dict(kwargs, layers=layers, channels=channels)


def _infer_mobilefacenet(shapes, sym_path, image_size):
    first = 1 if "conv_2_dw_conv2d_weight" in shapes else \
        _count_from_zero(shapes, _res_pattern("res_2"))
    layers = [first] + [_count_from_zero(shapes, _res_pattern(n)) for n in _MFN_STAGES[1:]]
    if not all(layers):
        raise InsightFaceError(f"{sym_path}: a MobileFaceNet stage has no unit "
                               f"(units per stage found: {layers})")
    gdc = _shape(shapes, "conv_6dw7_7_conv2d_weight", sym_path)
    fc = _shape(shapes, "pre_fc1_weight", sym_path)
    kwargs = {"emb_size": int(fc[0]),
              "act_type": "prelu" if "conv_1_relu_gamma" in shapes else "relu",
              "image_size": image_size or (int(gdc[2]) * 16, int(gdc[3]) * 16)}
    if isinstance(kwargs["image_size"], tuple) and kwargs["image_size"][0] == \
            kwargs["image_size"][1]:
        kwargs["image_size"] = kwargs["image_size"][0]
    if layers != list(MOBILEFACENET_LAYERS):
        kwargs["layers"] = layers
    return "mobilefacenet", kwargs


def _res_pattern(stage):
    # insightface's Residual names its units <stage>_block<i>, i from 0.
    return stage + "_block{}_conv_sep_conv2d_weight"


def _count_from_zero(shapes, pattern):
    n = 0
    while pattern.format(n) in shapes:
        n += 1
    return n


def _symbol_output(sym, sym_path):
    internals = sym.get_internals()
    if "fc1_output" not in internals.list_outputs():
        raise InsightFaceError(f"{sym_path}: the graph has no fc1 layer (insightface's "
                               f"embedding output)")
    return internals["fc1_output"]


def _run_symbol(sym, arrays, x, ctx):
    """Forward ``sym`` (legacy) on the numpy batch ``x`` with ``arrays`` {name: numpy}."""
    with mx.util.np_array(False), mx.util.np_shape(False):
        args = {n: mx.nd.array(arrays[n], ctx=ctx) for n in sym.list_arguments() if n != "data"}
        args["data"] = mx.nd.array(x, ctx=ctx)
        aux = {n: mx.nd.array(arrays[n], ctx=ctx) for n in sym.list_auxiliary_states()}
        exe = sym.bind(ctx, args=args, aux_states=aux, grad_req="null")
        return exe.forward(is_train=False)[0].asnumpy()


def _run_net(net, x, ctx):
    with mx.util.np_shape(True), mx.util.np_array(True), mx.autograd.predict_mode():
        return net(mx.np.array(x, ctx=ctx)).asnumpy()


def _raw_batch(shape, seed=0):
    return onp.random.RandomState(seed).randint(0, 256, size=shape).astype("float32")


def _compare(reference, got, tolerance, what):
    diff = float(onp.abs(reference - got).max())
    scale = max(1.0, float(onp.abs(reference).max()))
    if not diff <= tolerance * scale:
        raise InsightFaceError(f"{what}: the network's embeddings differ from the symbol's "
                               f"by {diff:.3g} (allowed {tolerance:g} x {scale:.3g})")
    return diff


def from_insightface(prefix, epoch=0, ctx=None, image_size=None, verify=True, tolerance=1e-3):
    """Load insightface's ``prefix-symbol.json`` + ``prefix-%04d.params`` into our network.

    Parameters
    ----------
    prefix : str
        The checkpoint prefix (``model-r100-ii/model``).
    epoch : int, default 0
        The epoch number in the params file name.
    ctx : Context, optional
        Where the parameters go; default ``mx.cpu()``.
    image_size : int or (int, int), optional
        Input size; by default read from the arrays (the Dense input of a
        FaceResNet, for a square image; the GDC kernel of a MobileFaceNet).  A
        7x7 stem's last map of side s fits both 32 s - 16 and 32 s; the
        smaller is taken (112 for insightface's 4x4 maps): give the other here.
    verify : bool, default True
        Run the symbol and the network on two random raw images and refuse a
        difference above ``tolerance`` x max(1, max |embedding|).
    tolerance : float, default 1e-3

    Returns
    -------
    net : FaceResNet or MobileFaceNet
        Loaded, not hybridized; input ``(pixel - 127.5) / 128``.
    info : dict
        ``model`` ({'name', 'kwargs'} for :func:`get_model`), ``emb_size``,
        ``image_size`` (H, W), ``input_normalisation`` (True when the graph
        normalised raw pixels in-graph, dropped on import; False when its input
        was already normalised), ``fc7_weight`` / ``fc7_bias`` (numpy arrays of
        the classifier, or None), ``num_arrays`` (mapped), ``max_abs_diff`` (of
        the check, or None), ``symbol`` and ``params`` (the paths).

    Raises
    ------
    InsightFaceError
        A file missing or unreadable, an architecture that is not FaceResNet or
        MobileFaceNet, an array the network has no place for (or one it needs
        that is missing), a shape mismatch, or a failed check: one line naming
        the file and the array.
    """
    sym_path, params_path = insightface_paths(prefix, epoch)
    for path in (sym_path, params_path):
        if not os.path.isfile(path):
            raise InsightFaceError(f"{path}: no such file")
    ctx = mx.cpu() if ctx is None else ctx
    sym = _symbol_output(_load_symbol(sym_path), sym_path)
    arrays = _load_arrays(params_path)
    with mx.util.np_array(False), mx.util.np_shape(False):
        graph = json.loads(sym.tojson())
        graph_args = [n for n in sym.list_arguments() if n != "data"]
        graph_aux = list(sym.list_auxiliary_states())
    ops = {n["name"]: dict(n.get("attrs", {}), op=n["op"]) for n in graph["nodes"]
           if n["op"] != "null"}
    # Shapes of the graph's arrays come from the params file (the graph has none).
    missing = [n for n in graph_args + graph_aux if n not in arrays]
    fixed_gamma = [n for n in missing if n.endswith("_gamma") and
                   ops.get(n[:-len("_gamma")], {}).get("fix_gamma", "True") == "True"
                   and ops.get(n[:-len("_gamma")], {}).get("op") == "BatchNorm"]
    missing = [n for n in missing if n not in fixed_gamma]
    if missing:
        raise InsightFaceError(f"{params_path}: array {missing[0]!r} of the graph is missing")
    for name in fixed_gamma:  # a fixed BatchNorm scale is 1 whatever is stored
        beta = arrays[name[:-len("_gamma")] + "_beta"][1]
        arrays[name] = ("arg", onp.ones_like(beta))
    shapes = {n: arrays[n][1].shape for n in graph_args + graph_aux}

    a, b, _first = _input_affine(graph, sym_path)
    if abs(a - 1.0) < 1e-12 and abs(b) < 1e-9:
        normalised_in_graph = False
    elif abs(a - INPUT_SCALE) < 1e-9 and abs(b + INPUT_MEAN * INPUT_SCALE) < 1e-6:
        normalised_in_graph = True
    else:
        raise InsightFaceError(f"{sym_path}: the graph scales its input as {a:.6g} * x + "
                               f"{b:.6g}; gluon_face networks take (x - 127.5) / 128")

    if "conv_1_conv2d_weight" in shapes:
        name, kwargs = _infer_mobilefacenet(shapes, sym_path, image_size)
    elif "conv0_weight" in shapes:
        name, kwargs = _infer_faceresnet(shapes, ops, sym_path, image_size)
    else:
        raise InsightFaceError(f"{sym_path}: unknown architecture (neither insightface's "
                               f"fresnet, whose first layer is conv0, nor fmobilefacenet, "
                               f"conv_1)")
    try:
        net = get_model(name, **kwargs)
    except ValueError as err:
        raise InsightFaceError(f"{sym_path}: cannot build {name} ({err})") from None
    names = insightface_names(net)
    wanted = {iname: (key, kind) for key, (kind, iname) in names.items()}
    for iname in graph_args + graph_aux:
        if iname not in wanted:
            raise InsightFaceError(f"{sym_path}: cannot map array {iname!r} onto {name} "
                                   f"(not a layer of {name})")
    for iname, (key, _kind) in wanted.items():
        if iname not in shapes:
            raise InsightFaceError(f"{params_path}: array {iname!r} ({name}'s {key}) is "
                                   f"missing")
    classifier = {}
    for iname, (kind, value) in arrays.items():
        if iname in wanted:
            continue
        if iname in ("fc7_weight", "fc7_bias"):
            classifier[iname] = value
            continue
        raise InsightFaceError(f"{params_path}: cannot map array {kind}:{iname} (not part of "
                               f"the embedding graph, nor the fc7 classifier)")
    params = compat.structural_params(net)
    with mx.util.np_shape(True), mx.util.np_array(True):
        for iname, (key, _kind) in wanted.items():
            file_kind, value = arrays[iname]
            expected = tuple(params[key].shape)
            if tuple(value.shape) != expected:
                raise InsightFaceError(f"{params_path}: {file_kind}:{iname} has shape "
                                       f"{tuple(value.shape)}, {name}'s {key} needs "
                                       f"{expected}")
            compat.load_parameter(params[key], mx.np.array(value, dtype="float32"), ctx)
    size = net.image_size
    fc7 = classifier.get("fc7_weight")
    if fc7 is not None and (fc7.ndim != 2 or fc7.shape[1] != net.emb_size):
        raise InsightFaceError(f"{params_path}: fc7_weight has shape {fc7.shape}, not "
                               f"(classes, {net.emb_size})")
    diff = None
    if verify:
        x = _raw_batch((2, net.in_channels) + tuple(size))
        normalised = (x - INPUT_MEAN) * INPUT_SCALE
        reference = _run_symbol(sym, {n: v for n, (_, v) in arrays.items()},
                                x if normalised_in_graph else normalised, ctx)
        diff = _compare(reference, _run_net(net, normalised, ctx), tolerance,
                        f"{sym_path} as {name}")
    info = {"model": {"name": name, "kwargs": kwargs}, "emb_size": net.emb_size,
            "image_size": tuple(size), "input_normalisation": normalised_in_graph,
            "fc7_weight": fc7, "fc7_bias": classifier.get("fc7_bias"),
            "num_arrays": len(wanted), "max_abs_diff": diff, "symbol": sym_path,
            "params": params_path}
    return net, info


# ----------------------------------------------------------------------------- writing
def _emit(block, x, path, layers):
    """The legacy-symbol layers of ``block`` applied to ``x``, named as insightface."""
    from mxnet.gluon import nn

    children = compat.block_children(block)

    def child(name):
        return f"{path}.{name}" if path else name

    if isinstance(block, (FaceResNet, MobileFaceNet)):
        x = _emit(block.features, x, child("features"), layers)
        return _emit(block.output, x, child("output"), layers)
    if isinstance(block, BasicBlockV3):
        body = _emit(block.body, x, child("body"), layers)
        short = x if block.downsample is None else \
            _emit(block.downsample, x, child("downsample"), layers)
        return body + short
    if isinstance(block, DepthwiseResidual):
        return _emit(block.body, x, child("body"), layers) + x
    if isinstance(block, nn.HybridSequential):
        for name, c in children.items():
            x = _emit(c, x, child(name), layers)
        return x
    if isinstance(block, nn.Flatten):  # insightface's FullyConnected flattens by itself
        return x
    if isinstance(block, nn.Dropout):  # only FaceResNet's use_dropout makes one
        return mx.sym.Dropout(x, p=DROPOUT_RATE)
    name = layers.get(path)
    if isinstance(block, nn.Activation):  # our networks' only one is act_type='relu'
        return mx.sym.Activation(x, act_type="relu", name=name)
    if name is None:
        raise InsightFaceError(f"{path}: {type(block).__name__} has no insightface name")
    if isinstance(block, nn.Conv2D):
        kw = compat.operator_kwargs(block)
        return mx.sym.Convolution(x, num_filter=kw["num_filter"], kernel=kw["kernel"],
                                  stride=kw["stride"], pad=kw["pad"],
                                  num_group=kw["num_group"], no_bias=kw["no_bias"], name=name)
    if isinstance(block, nn.BatchNorm):
        kw = compat.operator_kwargs(block)
        return mx.sym.BatchNorm(x, fix_gamma=kw["fix_gamma"], eps=kw["eps"],
                                momentum=kw["momentum"], name=name)
    if isinstance(block, nn.PReLU):
        return mx.sym.LeakyReLU(x, act_type="prelu", name=name)
    if isinstance(block, nn.Dense):
        units, _flatten = compat.dense_config(block)
        return mx.sym.FullyConnected(x, num_hidden=units, no_bias=block.bias is None,
                                     name=name)
    raise InsightFaceError(f"{path}: cannot write a {type(block).__name__} in insightface's "
                           f"layout")


def _build_symbol(net):
    layers = _layer_names(net)
    with mx.util.np_array(False), mx.util.np_shape(False), mx.name.NameManager():
        data = mx.sym.Variable("data")
        x = mx.sym.identity(data, name="id") if isinstance(net, FaceResNet) else data
        x = (x - INPUT_MEAN) * INPUT_SCALE
        return _emit(net, x, "", layers)


def to_insightface(net, prefix, epoch=0, verify=True, tolerance=1e-4, ctx=None):
    """Write ``net`` as insightface's ``prefix-symbol.json`` + ``prefix-%04d.params``.

    The symbol takes raw 0-255 RGB (``data``, (N, 3, H, W) float32) and normalises
    it in-graph as insightface does; its output is ``fc1`` (the embedding graph
    insightface saves with ``ckpt_embedding``), so ``mx.model.load_checkpoint`` +
    ``sym.get_internals()['fc1_output']`` + ``Module.set_params`` load it.  A
    FaceResNet is written as ``fresnet``'s ``net_input`` 1 graph, or with
    ``stem='7x7'`` as its ``net_input`` 0 graph (the same ``id`` and
    normalisation, then ``conv0`` 7x7 stride 2 padding 3).  Arrays
    are float32 under ``arg:`` / ``aux:`` names in MXNet's legacy array format.
    Both files are written under temporary names and renamed; existing files of
    those names are replaced (the commands refuse that unless told).

    Parameters
    ----------
    net : FaceResNet or MobileFaceNet
        Initialised.
    prefix : str
    epoch : int, default 0
    verify : bool, default True
        Read the files back, run the symbol on two random raw images and refuse
        (after writing) a difference above ``tolerance`` x max(1, max |embedding|).
    tolerance : float, default 1e-4
    ctx : Context, optional
        Where the check runs; default ``mx.cpu()``.

    Returns
    -------
    dict
        ``symbol``, ``params`` (paths), ``num_arrays``, ``max_abs_diff`` (or None).

    Raises
    ------
    InsightFaceError
        ``net`` has no insightface layout, or the check failed.
    """
    prefix = os.fspath(prefix)
    sym_path, params_path = insightface_paths(prefix, epoch)
    ctx = mx.cpu() if ctx is None else ctx
    names = insightface_names(net)
    params = compat.structural_params(net)
    sym = _build_symbol(net)
    values = {}
    for key, (kind, iname) in names.items():
        values[f"{kind}:{iname}"] = params[key].data().asnumpy().astype("float32")
    with mx.util.np_array(False), mx.util.np_shape(False):
        with atomic_path(sym_path) as tmp:
            sym.save(tmp)
        with atomic_path(params_path, suffix=".params") as tmp:
            mx.nd.save(tmp, {k: mx.nd.array(v, dtype="float32") for k, v in values.items()})
    diff = None
    if verify:
        with mx.util.np_array(False), mx.util.np_shape(False):
            saved_sym, arg, aux = mx.model.load_checkpoint(prefix, int(epoch))
            arrays = {k: v.asnumpy() for k, v in list(arg.items()) + list(aux.items())}
        x = _raw_batch((2, net.in_channels) + tuple(net.image_size))
        reference = _run_symbol(_symbol_output(saved_sym, sym_path), arrays, x, ctx)
        diff = _compare(reference, _run_net(net, (x - INPUT_MEAN) * INPUT_SCALE, ctx),
                        tolerance, sym_path)
    return {"symbol": sym_path, "params": params_path, "num_arrays": len(values),
            "max_abs_diff": diff}


"""Export a backbone to ONNX and check the exported graph against MXNet.

The route is MXNet's own: ``net.hybridize()``, one forward pass, ``net.export``
(``prefix-symbol.json`` + ``prefix-0000.params``), then
:func:`mxnet.onnx.export_model`.  Two facts shape this module:

* ``mx.onnx`` converts the *legacy* operators only: a numpy-mode network
  (``@use_np``) exports ``_npi_add`` for the residual sum, ``_np_sum`` for a
  norm, ``_npi_multiply_scalar`` for ``x * s`` ..., none of which has a
  converter.  :func:`to_legacy_graph` (the operator table of
  :mod:`gluon_face.graph.legacy`, shared with the inference graphs) renames
  those nodes to the legacy operator computing the same float32 arithmetic
  (``_npi_add`` -> ``broadcast_add``, ``_npi_multiply_scalar`` ->
  ``_mul_scalar``, ...), in the exported graph only.  Likewise the ``gamma`` of
  every BatchNorm run with ``fix_gamma=True`` (``nn.BatchNorm(scale=False)``),
  which MXNet ignores but ONNX would apply, is set to ones in the exported
  parameters.  Before converting, :func:`export_onnx` runs the rewritten graph
  in MXNet and requires its output to equal the network's to ``rewrite_tol``
  (default 0: bit-identical), so the rewrite cannot change what is exported.
  These rewrites, and those of the converted model, are
  :mod:`gluon_face.graph.onnx`; this module runs, checks and writes.
* ``mx.onnx.export_model`` imports ``onnx.mapping``, removed in onnx 1.18:
  install ``onnx<1.18`` (and ``onnxruntime`` for the check).

The exported model
------------------
* **Input** ``data``: ``(batch, 3, H, W)`` float32 RGB.  The batch axis is
  symbolic (``dim_param`` ``"batch"``): one file runs batches of any size.
  With ``input="raw"`` (the default) the values are raw pixels ``0..255`` and the
  graph starts with the normalisation, a ``Sub`` node ``Sub_data`` and a ``Mul``
  node ``Mul_data``: ``(x - 127.5) * (1/128)``, bit for bit the
  ``(pixel - 127.5) / 128`` of :class:`gluon_face.data.FaceTransform`.  With
  ``input="normalized"`` the model is the bare backbone and takes
  ``(pixel - 127.5) / 128`` itself (the format of earlier exports).
* **Output**: ``(batch, D)`` float32 embeddings, not L2-normalised (the same
  numbers as ``extract_embeddings(..., normalize=False)``).
* ``metadata_props``: ``gluon_face.input`` (``raw`` or ``normalized``) and
  ``gluon_face.normalization``.

Loading it with insightface
---------------------------
insightface's ``model_zoo.get_model(path)`` picks a wrapper from the shapes of
the first input and the number of outputs (``ModelRouter`` in
``insightface/model_zoo/model_zoo.py``), in this order: five or more outputs:
detector (SCRFD); ``H = W = 192``: landmarks; ``H = W = 96``: attributes;
two inputs and ``H = W = 128``: face swapper; **``H == W``, ``H >= 112`` and
``H % 16 == 0``: recognition (``ArcFaceONNX``)**; anything else: ``None`` (no
model, no error).  So a backbone for 112x112 (or 128, 144, 160, 176, 208,
224, ...) faces loads as a recogniser; one for 192x192 faces is taken for a
landmark model, and smaller or non-square inputs (the 32x32 of the built-in
glyph sets, 96x112, ...) are not loaded at all.  :func:`insightface_loading`
applies these rules to a file and the export reports its verdict.

``ArcFaceONNX`` scales its input by what it finds among the *names* of the first
eight graph nodes: a name starting with ``Sub`` (or ``_minus``) together with
one starting with ``Mul`` (or ``_mul``) means "the model normalises itself" and
it feeds raw pixels (``input_mean = 0``, ``input_std = 1``); otherwise it feeds
``(pixel - 127.5) / 127.5``.  Its ``get_feat(images)`` takes a list of
``(H, W, 3)`` uint8 **BGR** images (OpenCV's order) and builds the batch with
``cv2.dnn.blobFromImages(images, 1/std, (W, H), (mean,)*3, swapRB=True)``:
resize to the input size if needed, ``(pixel - mean) / std``, BGR -> RGB,
``NCHW`` float32.  A ``raw`` export therefore gets exactly the pixels it
expects, and its ``get_feat`` equals ``extract_embeddings(net, rgb_images,
normalize=False)``; a ``normalized`` export would get ``/127.5`` instead of
``/128``, inputs scaled by ``128 / 127.5``, and embeddings other than ours.

The check
---------
After conversion the ``.onnx`` file is checked with ``onnx.checker`` and run in
onnxruntime on random batches, one of 1 image and the others of ``batch_size``
images: random integer pixels ``0..255`` (``raw``; MXNet gets them normalised)
or ``uniform(-1, 1)`` (``normalized``).  The file is renamed into place only if
the largest absolute difference to MXNet's embeddings is at most ``atol``
(otherwise :class:`OnnxMismatchError` and no file).
"""
import json
import os
import tempfile

import numpy as onp
from mxnet.util import use_np  # noqa: E402

from . import _mxnet  # noqa: F401  (actionable error when MXNet is missing)
from ._io import atomic_path
from .graph import onnx as _passes
from .graph.legacy import NUMPY_TO_LEGACY, to_legacy_graph
from .graph.onnx import ONNX_OPSET

__all__ = ["export_onnx", "check_onnx", "insightface_loading", "to_legacy_graph",
           "OnnxMismatchError", "NUMPY_TO_LEGACY", "ONNX_OPSET", "INPUT_MODES"]

_INSTALL = "pip install 'onnx<1.18' onnxruntime  (or: pip install 'gluon_face[onnx]')"

#: Values of ``input``: raw pixels with the normalisation in the graph, or normalised input.
INPUT_MODES = ("raw", "normalized")
_MEAN, _SCALE = 127.5, 128.0
_METADATA_INPUT = "gluon_face.input"
#: insightface's ArcFaceONNX looks at the names of this many leading nodes.
_INSIGHTFACE_SCAN = 8


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


def _check_input_mode(input):
    if input not in INPUT_MODES:
        raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}, got {input!r}")
    return input


def _finish_model(onnx, path, input):
    """Rewrite the converted model at ``path`` in place, then run ``onnx.checker`` on it.

    The rewrites are :func:`gluon_face.graph.onnx.finish_model`'s, and for
    ``input="raw"`` :func:`gluon_face.graph.onnx.add_input_normalization`.
    """
    model = _passes.finish_model(onnx, onnx.load(path))
    if input == "raw":
        _passes.add_input_normalization(onnx, model, mean=_MEAN, scale=1.0 / _SCALE)
    onnx.helper.set_model_props(model, {
        _METADATA_INPUT: input,
        "gluon_face.normalization": "(pixel - 127.5) / 128, RGB, NCHW"
                                    + (" (inside the graph)" if input == "raw" else
                                       " (done by the caller)")})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _model_input_mode(onnx, path):
    """The ``gluon_face.input`` metadata of an exported file (``normalized`` if absent)."""
    props = {p.key: p.value for p in onnx.load(os.fspath(path)).metadata_props}
    return props.get(_METADATA_INPUT, "normalized")


def insightface_loading(model):
    """What insightface's ``model_zoo.get_model`` would make of an ONNX model.

    Our own statement of the rules of insightface's ``ModelRouter.get_model``
    and ``ArcFaceONNX.__init__`` (``python-package/insightface/model_zoo/``),
    applied to the first graph input, the graph outputs and the names of the
    first eight nodes; see the module docstring.  No insightface import.

    Parameters
    ----------
    model : str or onnx.ModelProto
        A path or a loaded model.

    Returns
    -------
    dict
        ``task``: ``'recognition'`` (``ArcFaceONNX``), ``'detection'``,
        ``'landmark'``, ``'attribute'``, ``'swapper'`` or None (not loaded);
        ``reason``: one line saying why; ``input_size``: ``(W, H)`` as
        insightface stores it; and for ``'recognition'`` ``input_mean`` and
        ``input_std``, the normalisation ``get_feat`` applies to BGR uint8
        images before swapping them to RGB.
    """
    onnx, _ = _import_onnx()
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    height, width = (dims[2], dims[3]) if len(dims) >= 4 else (None, None)
    out = {"task": None, "input_size": (width, height), "reason": ""}
    square = isinstance(height, int) and height == width
    if len(graph.output) >= 5:
        out.update(task="detection", reason=f"{len(graph.output)} outputs: taken for SCRFD")
    elif square and height == 192:
        out.update(task="landmark", reason="192x192 input: taken for the landmark model")
    elif square and height == 96:
        out.update(task="attribute", reason="96x96 input: taken for the attribute model")
    elif len(inputs) == 2 and square and height == 128:
        out.update(task="swapper", reason="two inputs of 128x128: taken for INSwapper")
    elif square and height >= 112 and height % 16 == 0:
        names = [node.name for node in graph.node[:_INSIGHTFACE_SCAN]]
        sub = any(n.startswith(("Sub", "_minus")) for n in names)
        mul = any(n.startswith(("Mul", "_mul")) for n in names)
        mean, std = (0.0, 1.0) if sub and mul else (127.5, 127.5)
        out.update(task="recognition", input_mean=mean, input_std=std,
                   reason=f"{height}x{width} input: ArcFaceONNX, fed (BGR pixel - {mean:g}) / "
                          f"{std:g} swapped to RGB")
    else:
        out.update(reason=f"input {height}x{width}: insightface loads a recogniser only for "
                          "square inputs of at least 112 that are a multiple of 16 "
                          "(and not 192), so get_model returns None")
    return out


def _first_context(net):
    import mxnet as mx

    for param in net.collect_params().values():
        try:
            return param.list_ctx()[0]
        except (RuntimeError, AssertionError):
            break
    return mx.cpu()


def _batch_sizes(batch_size, trials):
    """One batch of 1 image, then batches of ``batch_size``: ``max(trials, 2)`` in all."""
    return [1] + [int(batch_size)] * max(1, int(trials) - 1)


def _random_batches(image_shape, sizes, seed, input):
    """Check inputs: integer pixels 0..255 (``raw``) or ``uniform(-1, 1)`` (``normalized``)."""
    rng = onp.random.RandomState(seed)
    if input == "raw":
        return [rng.randint(0, 256, size=(n,) + tuple(image_shape)).astype(onp.float32)
                for n in sizes]
    return [rng.uniform(-1.0, 1.0, size=(n,) + tuple(image_shape)).astype(onp.float32)
            for n in sizes]


def _normalized(x, input):
    """What the MXNet backbone takes for the ONNX input ``x``."""
    if input == "raw":
        return (x.astype(onp.float32) - onp.float32(_MEAN)) / onp.float32(_SCALE)
    return x


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
def check_onnx(onnx_file, net, batches=None, input_shape=None, trials=3, seed=0, ctx=None,
               input=None, batch_size=5):
    """Largest difference between onnxruntime and MXNet on random inputs, scaled.

    The difference of a batch is ``max |onnx(x) - net(x')| / max(1, max |net(x')|)``,
    with ``x'`` the normalised ``x`` for a ``raw`` model: an absolute difference
    for embeddings of ordinary size (|y| <= 1, e.g. after the final BatchNorm of a
    trained network), a relative one for networks whose raw outputs are large
    (float32 keeps about 7 significant digits whatever the scale).

    Parameters
    ----------
    onnx_file : str
        The exported model.
    net : mxnet.gluon.HybridBlock
        The MXNet network it was exported from (it takes normalised input).
    batches : list of numpy.ndarray, optional
        ONNX inputs ``(B, 3, H, W)`` float32 (raw pixels for a ``raw`` model);
        default: one random batch of 1 image and ``max(trials, 2) - 1`` of
        ``batch_size`` images of ``input_shape``.
    input_shape : tuple, optional
        ``(3, H, W)`` or ``(B, 3, H, W)`` (``B`` is ignored); needed when
        ``batches`` is not given.
    trials, seed, batch_size : int
        Number, seed and size of the random batches.
    ctx : mxnet.Context, optional
        Where ``net`` runs; default the context of its first parameter.
    input : {'raw', 'normalized'}, optional
        What the model takes; default the file's ``gluon_face.input`` metadata
        (``normalized`` for files without it).

    Returns
    -------
    float
        The largest scaled difference over all batches.
    """
    onnx, ort = _import_onnx()
    ctx = _first_context(net) if ctx is None else ctx
    input = _model_input_mode(onnx, onnx_file) if input is None else _check_input_mode(input)
    if batches is None:
        image_shape = tuple(input_shape)[-3:]
        batches = _random_batches(image_shape, _batch_sizes(batch_size, trials), seed, input)
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
        want = _run_mxnet(net, _normalized(x, input), ctx)
        if got.shape != want.shape:
            raise OnnxMismatchError(f"{onnx_file}: output shape {got.shape}, "
                                    f"MXNet gives {want.shape}")
        scale = max(1.0, float(onp.max(onp.abs(want))))
        diff = max(diff, float(onp.max(onp.abs(got.astype(onp.float64) - want))) / scale)
    return diff


@use_np
def export_onnx(net, path, image_size, batch_size=5, ctx=None, atol=1e-4, trials=3, seed=0,
                rewrite_tol=0.0, input="raw"):
    """Export ``net`` to the ONNX file ``path`` and check it against MXNet.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone, ``(B, 3, H, W)`` float32 normalised as
        ``(pixel - 127.5) / 128`` -> ``(B, D)``.  It is hybridized (and run once)
        here.
    path : str
        Destination ``.onnx``; written atomically, and only if the check passes.
    image_size : tuple of int
        ``(H, W)`` of the network input.  insightface loads the file as a
        recogniser only for ``H == W >= 112``, a multiple of 16, not 192 (see the
        module docstring); other sizes export all the same.
    batch_size : int
        Size of the check batches after the first one (which holds 1 image).  The
        exported batch axis is symbolic whatever this is.
    ctx : mxnet.Context, optional
        Where the MXNet reference runs; default the context of the first parameter.
    atol : float
        Largest allowed ``max |onnx - mxnet| / max(1, max |mxnet|)`` on the random
        check inputs (see :func:`check_onnx`).
    trials, seed : int
        Number (at least 2 are run) and seed of the random check batches.
    rewrite_tol : float
        Largest allowed difference between the network and its exported graph
        after :func:`to_legacy_graph` (both run in MXNet).
    input : {'raw', 'normalized'}
        ``raw`` (default): the model takes RGB pixels ``0..255`` and normalises
        them in its first two nodes (``Sub``, ``Mul``), which is what
        insightface's ``ArcFaceONNX`` expects of such a model.  ``normalized``:
        the model takes ``(pixel - 127.5) / 128``.

    Returns
    -------
    dict
        ``path``, ``input`` (the mode), ``input_name``, ``input_shape``
        ``('batch', 3, H, W)``, ``output_shape`` ``('batch', D)``,
        ``check_batch_sizes``, ``renamed_ops`` (numpy op -> count),
        ``rewrite_max_abs_diff``, ``max_abs_diff`` (onnxruntime vs MXNet),
        ``atol`` and ``insightface`` (:func:`insightface_loading` of the file).

    Raises
    ------
    ImportError
        If onnx<1.18 or onnxruntime is missing.
    ValueError
        If the graph holds an operator mx.onnx cannot convert (named), or on a bad
        argument.
    OnnxMismatchError
        If the renamed graph or the ONNX model differ from MXNet beyond tolerance.
    """
    import mxnet as mx

    onnx, ort = _import_onnx()
    input = _check_input_mode(input)
    ctx = _first_context(net) if ctx is None else ctx
    height, width = (int(s) for s in image_size)
    image_shape = (3, height, width)
    if min(height, width, int(batch_size)) < 1:
        raise ValueError(f"bad input shape {(batch_size,) + image_shape}: batch size and image "
                         "size must be positive")
    sizes = _batch_sizes(batch_size, trials)
    net.hybridize()
    net(mx.np.zeros((1,) + image_shape, ctx=ctx))
    batches = _random_batches(image_shape, sizes, seed, input)
    normalized = [_normalized(x, input) for x in batches]
    with tempfile.TemporaryDirectory(prefix="gluon_face_onnx_") as folder:
        prefix = os.path.join(folder, "backbone")
        net.export(prefix, epoch=0)
        symbol_file, params_file = prefix + "-symbol.json", prefix + "-0000.params"
        with open(symbol_file) as f:
            graph, renamed = _passes.prepare_graph(json.load(f))
        missing = _passes.unsupported_ops(graph)
        if missing:
            raise ValueError(f"mx.onnx cannot convert operator(s) {', '.join(missing)} "
                             f"of {type(net).__name__}")
        original = _run_symbol(symbol_file, params_file, normalized, ctx)
        with open(symbol_file, "w") as f:
            json.dump(graph, f)
        # gamma of a fix_gamma BatchNorm is ignored by MXNet but not by ONNX; the
        # rewrite check below runs on the new parameters too.
        _passes.set_ones(params_file, _passes.fixed_gammas(graph))
        legacy = _run_symbol(symbol_file, params_file, normalized, ctx)
        rewrite_diff = max(float(onp.max(onp.abs(a - b))) for a, b in zip(legacy, original))
        if rewrite_diff > rewrite_tol:
            raise OnnxMismatchError("renaming numpy operators to legacy ones changed the output "
                                    f"of {type(net).__name__} by {rewrite_diff:.3g} "
                                    f"> {rewrite_tol:.3g}")
        with atomic_path(path, suffix=".onnx") as tmp:
            try:
                # dynamic: the batch axis stays symbolic, so one file serves any batch size
                mx.onnx.export_model(symbol_file, params_file, in_shapes=[(1,) + image_shape],
                                     in_types=[onp.float32], onnx_file_path=tmp, dynamic=True,
                                     dynamic_input_shapes=[(None,) + image_shape])
            except (AttributeError, NotImplementedError, KeyError, TypeError) as err:
                raise ValueError(f"mx.onnx could not convert {type(net).__name__}: {err}") from None
            _finish_model(onnx, tmp, input)
            diff = check_onnx(tmp, net, batches=batches, ctx=ctx, input=input)
            session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name
            input_shape = tuple(session.get_inputs()[0].shape)
            output_shape = tuple(session.get_outputs()[0].shape)
            loading = insightface_loading(tmp)
            if not diff <= atol:
                raise OnnxMismatchError(f"{path}: onnxruntime differs from MXNet by "
                                        f"max |diff| / max(1, max |y|) = {diff:.3g} > {atol:.3g}")
    return {"path": os.fspath(path), "input": input, "input_name": input_name,
            "input_shape": input_shape, "output_shape": output_shape,
            "check_batch_sizes": sizes, "renamed_ops": dict(renamed),
            "rewrite_max_abs_diff": rewrite_diff, "max_abs_diff": diff, "atol": atol,
            "insightface": loading}

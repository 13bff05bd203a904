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

After conversion the ``.onnx`` file is checked with ``onnx.checker`` and run
in onnxruntime on random inputs in the normalised pixel range ``[-1, 1]``; the
file is renamed into place only if the largest absolute difference to MXNet's
embeddings is at most ``atol`` (otherwise :class:`OnnxMismatchError` and no
file).
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

__all__ = ["export_onnx", "check_onnx", "to_legacy_graph", "OnnxMismatchError",
           "NUMPY_TO_LEGACY", "ONNX_OPSET"]

_INSTALL = "pip install 'onnx<1.18' onnxruntime  (or: pip install 'gluon_face[onnx]')"


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


def _finish_model(onnx, path):
    """Rewrite the converted model at ``path`` in place, then run ``onnx.checker`` on it.

    The rewrites are :func:`gluon_face.graph.onnx.finish_model`'s.
    """
    model = _passes.finish_model(onnx, onnx.load(path))
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
            graph, renamed = _passes.prepare_graph(json.load(f))
        missing = _passes.unsupported_ops(graph)
        if missing:
            raise ValueError(f"mx.onnx cannot convert operator(s) {', '.join(missing)} "
                             f"of {type(net).__name__}")
        original = _run_symbol(symbol_file, params_file, batches, ctx)
        with open(symbol_file, "w") as f:
            json.dump(graph, f)
        # gamma of a fix_gamma BatchNorm is ignored by MXNet but not by ONNX; the
        # rewrite check below runs on the new parameters too.
        _passes.set_ones(params_file, _passes.fixed_gammas(graph))
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

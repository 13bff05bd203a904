"""Fast embedding extraction: static graphs, MKLDNN fusion and a bfloat16 graph.

:func:`prepare_embedder` turns a trained backbone into a block that maps a
batch of normalised images (B, 3, H, W) to embeddings (B, E) float32, in one
of these modes:

``'block'``
    the network as it is, imperative (the reference).
``'hybrid'``
    ``hybridize(static_alloc=True, static_shape=True)``: one cached graph with
    memory planned once.
``'fused'``
    as ``'hybrid'``, then ``optimize_for(x, backend='MKLDNN')``: MXNet's
    MKLDNN subgraph pass folds each inference BatchNorm that follows a
    convolution into the convolution's weights and bias (the IR block's
    BatchNorm *before* a convolution stays) and fuses the dense layer.  Needs
    the MKLDNN (oneDNN) build, which the CPU wheel is.
``'bf16'``
    the cached float32 graph rewritten by ``mxnet.contrib.amp``'s symbol pass:
    convolutions, the dense layer and BatchNorms between them run in
    bfloat16, with ``amp_cast`` nodes in the graph (weights stay float32 and
    are cast on the fly); PReLU stays float32 (no bfloat16 kernel in 1.9.1).

``mxnet.contrib.amp.convert_hybrid_block`` rejects numpy-mode arrays in 1.9.1,
so :func:`to_bfloat16` does its work on the legacy view of the graph; with
``share_params=True`` the same graph trains the network in mixed precision.

The fused and bf16 embedders are for inference (BatchNorm uses its running
statistics).  Note ``Symbol.tojson()`` hides ``amp_cast`` nodes unless called
with ``remove_amp_cast=False``.
"""
import warnings

import mxnet as mx
from mxnet import gluon, np
from mxnet.contrib.amp import amp as _amp
from mxnet.util import use_np

#: Embedding modes :func:`prepare_embedder` knows.
MODES = ("block", "hybrid", "fused", "bf16")


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


def _conditional_fp32_ops():
    # MXNet 1.9.1's CPU LeakyReLU has no bfloat16 kernel for PReLU ("Unknown type
    # enum 12"), though amp's default lists send it bfloat16: keep it in float32.
    from mxnet.contrib.amp.lists import symbol_bf16

    ops = []
    for name, attr, values in symbol_bf16.CONDITIONAL_FP32_FUNCS:
        if name == "LeakyReLU" and attr == "act_type":
            values = sorted(set(values) | {"prelu"})
        ops.append((name, attr, list(values)))
    if not any(name == "LeakyReLU" for name, _, _ in ops):
        ops.append(("LeakyReLU", "act_type", ["prelu"]))
    return ops


@use_np
def to_bfloat16(net, example, ctx=None, share_params=False):
    """A bfloat16 copy of the hybridizable ``net``'s graph.

    Convolutions and dense layers (and the BatchNorms between them) run in
    bfloat16; ``amp_cast`` nodes inside the graph convert activations and
    weights, so the parameters stay float32.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised network with one input, numpy mode.
    example : mxnet.np.ndarray, shape (B, ...)
        An input of the shape to trace with (run once through ``net``).
    ctx : Context, optional
        Where the copy's parameters live (default: ``example``'s context).
    share_params : bool, default False
        Use ``net``'s own parameters (with their gradients): the returned
        block then trains ``net`` in mixed precision (float32 master weights,
        bfloat16 compute).  Otherwise the parameters are copied, inference only.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Hybridized (static memory); ``block(x)`` -> float32 array.  ``net`` is
        hybridized as a side effect; its parameters are not changed.
    """
    ctx = ctx or example.ctx
    inputs, sym = _cached_graph(net, example)
    # amp and SymbolBlock warn that they cannot type the (float32) data input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = _amp.convert_symbol(sym.as_nd_ndarray(), "bfloat16",
                                        conditional_fp32_ops=_conditional_fp32_ops(),
                                        data_names=[i.name for i in inputs])
        dtypes = converted.attr_dict()
        stored_bf16 = [name for name, attrs in dtypes.items()
                       if attrs.get("__dtype__", "-1") != "-1"
                       and _amp._DTYPE_MX_TO_NP[int(attrs["__dtype__"])] == _amp.bfloat16]
        if share_params:
            if stored_bf16:
                raise ValueError("cannot share parameters stored in bfloat16: "
                                 + ", ".join(sorted(stored_bf16)))
            block = gluon.SymbolBlock(converted.as_np_ndarray(), inputs,
                                      params=net.collect_params())
            block.hybridize(static_alloc=True, static_shape=True)
            return block
        block = gluon.SymbolBlock(converted.as_np_ndarray(), inputs)
    source = net.collect_params()
    for name, param in block.collect_params().items():
        param.grad_req = "null"  # inference only; and no bfloat16 gradient buffers in numpy mode
        data = source[name].data(ctx)
        if name in stored_bf16:
            param.cast(_amp.bfloat16)
            # numpy-mode arrays cannot be copied in bfloat16: keep the legacy view.
            data = mx.nd.amp_cast(data.as_nd_ndarray(), dtype=_amp.bfloat16)
        param._load_init(data, ctx)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


@use_np
def prepare_embedder(net, example, mode="fused", ctx=None):
    """``net`` made ready for fast inference in ``mode`` (see the module docstring).

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone (e.g. a FaceResNet), numpy mode.
    example : mxnet.np.ndarray, shape (B, 3, H, W)
        A batch of the shape that will be fed (static shapes: feed that shape).
    mode : {'block', 'hybrid', 'fused', 'bf16'}
        ``'block'`` returns ``net`` imperative (the slow reference).
    ctx : Context, optional
        For ``'bf16'``: where the converted parameters live.

    Returns
    -------
    mxnet.gluon.HybridBlock
        ``net`` itself for ``'block'``/``'hybrid'``/``'fused'`` (changed in
        place: ``'fused'`` replaces its cached graph; call
        ``net.hybridize(active=False)`` to undo), a new block for ``'bf16'``.
    """
    _check_mode(mode)
    if mode == "block":
        net.hybridize(active=False)
        return net
    if mode == "bf16":
        return to_bfloat16(net, example, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    if mode == "fused":
        net.optimize_for(example, backend="MKLDNN", static_alloc=True, static_shape=True)
    return net


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

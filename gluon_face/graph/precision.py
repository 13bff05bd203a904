"""Mixed precision (bfloat16 / float16) graphs through ``mxnet.contrib.amp``'s symbol pass.

``mxnet.contrib.amp.convert_hybrid_block`` rejects numpy-mode blocks in
MXNet 1.9.1, so :func:`to_low_precision` converts the legacy view of the
traced graph (:mod:`.legacy`: amp's operator lists name legacy operators)
and wraps the result in a ``SymbolBlock``: a copy for inference, or, with
``share_params=True``, a block on the network's own parameters that trains
it in mixed precision (bfloat16 on the CPU, float16 on a GPU).

Note ``Symbol.tojson()`` hides ``amp_cast`` nodes unless called with
``remove_amp_cast=False``.
"""
import json
import warnings

import numpy as onp
from mxnet.util import use_np

from . import mxnet_compat as compat
from .fused import inference_graph, load_inference_block
from .prelu import shared_block, training_graph

__all__ = ["LOW_PRECISION_DTYPES", "bfloat16_dtype", "grouped_convolutions", "to_low_precision",
           "to_bfloat16"]

#: Low-precision dtypes :func:`to_low_precision` converts to.
LOW_PRECISION_DTYPES = ("bfloat16", "float16")


def bfloat16_dtype():
    """The dtype object MXNet uses for bfloat16 (the string is rejected by ``amp_cast``)."""
    from mxnet.contrib.amp import amp

    return amp.bfloat16


def _low_precision_dtype(dtype):
    """The numpy/MXNet dtype object for ``'bfloat16'`` or ``'float16'``."""
    return bfloat16_dtype() if dtype == "bfloat16" else onp.dtype(onp.float16)


def conditional_fp32_ops(dtype="bfloat16"):
    """amp's ``conditional_fp32_ops`` for ``dtype``, with PReLU kept in float32.

    bfloat16: MXNet 1.9.1's CPU LeakyReLU has no bfloat16 kernel for PReLU
    ("Unknown type enum 12"), though amp's default list sends it bfloat16.
    float16: amp would type its alpha float16 without a cast, so the parameter
    could not be shared as a float32 master weight.
    """
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


def grouped_convolutions(sym):
    """Names of the grouped (``num_group > 1``, e.g. depthwise) convolutions of a legacy symbol."""
    return [node["name"] for node in json.loads(sym.tojson())["nodes"]
            if node["op"] == "Convolution"
            and int(node.get("attrs", {}).get("num_group", "1")) > 1]


@use_np
def to_low_precision(net, example, dtype="bfloat16", ctx=None, share_params=False,
                     split_prelu=True):
    """A mixed-precision (bfloat16 or float16) copy of the hybridizable ``net``'s graph.

    The traced float32 graph goes through ``mxnet.contrib.amp``'s symbol pass:
    convolutions and dense layers (and the BatchNorms between them) run in
    ``dtype``; ``amp_cast`` nodes inside the graph convert activations and
    weights, so the parameters stay float32.  Same-shape residual sums become
    ``elemwise_add`` first (oneDNN's sum; the numpy add has only a slow
    generic bfloat16 kernel).  PReLU itself has no bfloat16 kernel on the CPU
    in 1.9.1 (and in float16 its alpha would be stored float16): it is split
    into oneDNN operators (:func:`~.prelu.split_prelu`; with ``share_params``
    the split is tied to the slopes, for training).
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
    import mxnet as mx
    from mxnet import gluon
    from mxnet.contrib.amp import amp

    if dtype not in LOW_PRECISION_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(LOW_PRECISION_DTYPES)}, "
                         f"not {dtype!r}")
    target = _low_precision_dtype(dtype)
    ctx = ctx or example.ctx
    if share_params:
        inputs, legacy, constants = training_graph(net, example, split_prelu)
        data_names = [i.name for i in inputs]
        excluded = grouped_convolutions(legacy)
    else:
        data_name, legacy, params = inference_graph(net, example)
        data_names, inputs = [data_name], [mx.sym.var(data_name).as_np_ndarray()]
        excluded = []
    # amp and SymbolBlock warn that they cannot type the (float32) data input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = amp.convert_symbol(legacy, dtype,
                                       conditional_fp32_ops=conditional_fp32_ops(dtype),
                                       excluded_sym_names=excluded, data_names=data_names)
        stored_low = [name for name, attrs in converted.attr_dict().items()
                      if attrs.get("__dtype__", "-1") != "-1"
                      and compat.dtype_from_code(attrs["__dtype__"]) == target]
        if share_params:
            if stored_low:
                raise ValueError(f"cannot share parameters stored in {dtype}: "
                                 + ", ".join(sorted(stored_low)))
            return shared_block(converted, inputs, net, constants)
        block = gluon.SymbolBlock(converted.as_np_ndarray(), inputs)
    params = {n: v.as_in_context(ctx) for n, v in params.items()}
    return load_inference_block(block, params, ctx, low=stored_low, dtype=target)


def to_bfloat16(net, example, ctx=None, share_params=False):
    """``to_low_precision(net, example, 'bfloat16', ctx, share_params)`` (see there)."""
    return to_low_precision(net, example, dtype="bfloat16", ctx=ctx,
                            share_params=share_params)

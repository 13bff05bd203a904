"""The float32 inference graph and MKLDNN's fusion of it (BatchNorm folded into convolutions).

:func:`inference_graph` is the starting point of every fast inference copy
(fused, bfloat16, INT8): ``net`` traced afresh, its legacy view with
same-shape sums as ``elemwise_add`` (:mod:`.legacy`), PReLU split into oneDNN
operators (:mod:`.prelu`), and its parameters copied.  :func:`to_fused` runs
it through ``optimize_for(backend='MKLDNN')``, which folds each inference
BatchNorm that follows a convolution into the convolution's weights and bias
and fuses the dense layer.  Needs the MKLDNN (oneDNN) build, which MXNet's
CPU wheel is.
"""
import contextlib
import os
import warnings

import numpy as onp
from mxnet.util import use_np

from . import mxnet_compat as compat
from .legacy import legacy_symbol, trace
from .prelu import split_prelu

__all__ = ["inference_graph", "load_inference_block", "quiet_subgraph_log", "to_fused"]


def inference_graph(net, example):
    """The float32 inference graph of ``net`` made ready for oneDNN, with its parameters.

    Re-traces ``net`` (so a graph its caller rewrote, e.g. by
    ``net.optimize_for``, is not the one used), takes its legacy view
    (same-shape sums as ``elemwise_add``, :func:`~.legacy.legacy_symbol`) and
    splits PReLU (:func:`~.prelu.split_prelu`).

    Returns
    -------
    (data_name, legacy_symbol, params)
        ``params``: name -> legacy NDArray on ``example``'s context for every
        argument and auxiliary state but the data.

    Raises
    ------
    ValueError
        If ``net`` has more than one input.
    """
    inputs, sym = trace(net, example, retrace=True)
    if len(inputs) != 1:
        raise ValueError(f"a fast embedder needs a network with one input, got {len(inputs)}")
    data_name = inputs[0].name
    ctx = example.ctx
    source = net.collect_params()
    legacy = legacy_symbol(sym, {data_name: tuple(example.shape)})
    params = {n: source[n].data(ctx).as_nd_ndarray()
              for n in legacy.list_arguments() + legacy.list_auxiliary_states() if n != data_name}
    legacy, params = split_prelu(legacy, params)
    return data_name, legacy, params


def load_inference_block(block, params, ctx, low=(), dtype=None):
    """Load ``params`` (name -> legacy NDArray) into ``block`` for inference; hybridize it.

    Parameters named in ``low`` are stored in ``dtype``; every parameter gets
    ``grad_req='null'`` (inference only, and no gradient buffers).
    """
    import mxnet as mx

    for name, param in block.collect_params().items():
        param.grad_req = "null"
        data = params[name]
        if name in low:
            param.cast(dtype)
            # numpy-mode arrays cannot be copied in bfloat16: keep the legacy view.
            data = mx.nd.amp_cast(data, dtype=dtype)
        elif onp.dtype(data.dtype) != onp.dtype(param.dtype):
            param.cast(data.dtype)
        compat.load_parameter(param, data, ctx)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


@contextlib.contextmanager
def quiet_subgraph_log():
    """Silence MXNet's "Subgraph backend MKLDNN is activated" lines in the block.

    MXNet writes them to stderr when it binds a graph with a subgraph backend
    unless ``MXNET_SUBGRAPH_VERBOSE`` is 0; library code stays quiet.
    """
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
def to_fused(net, example):
    """A float32 inference copy of ``net`` with MXNet's MKLDNN graph fusion.

    The graph of :func:`inference_graph` (residual sums as ``elemwise_add``,
    PReLU split into oneDNN operators) through ``optimize_for(example,
    backend='MKLDNN')``: each BatchNorm that follows a convolution is folded
    into its weights and bias, and the dense layer is fused.  ``net`` is
    re-hybridized as a side effect; its parameters are not changed.
    """
    import mxnet as mx
    from mxnet import gluon

    data_name, legacy, params = inference_graph(net, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = gluon.SymbolBlock(legacy.as_np_ndarray(),
                                  [mx.sym.var(data_name).as_np_ndarray()])
    block = load_inference_block(block, params, example.ctx)
    with quiet_subgraph_log():
        block.optimize_for(example, backend="MKLDNN", static_alloc=True, static_shape=True)
    return block

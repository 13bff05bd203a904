"""INT8 graphs for the CPU: MXNet's MKLDNN quantization flow on the legacy graph view.

``mxnet.contrib.quantization.quantize_net(_v2)`` cannot take a numpy-mode
block in MXNet 1.9.1: it probes the network with legacy ``mx.nd`` zeros, the
block raises ``TypeError`` and the probe loop ends in ``IndexError: list
assignment index out of range``.  :func:`to_int8` runs the same steps on the
legacy view of the float32 inference graph (:func:`~.fused.inference_graph`).
"""
import warnings

import numpy as onp
from mxnet.util import use_np

from . import mxnet_compat as compat
from .fused import inference_graph, load_inference_block, quiet_subgraph_log

__all__ = ["CALIB_MODES", "calibration_batches", "to_int8"]

#: Calibration modes :func:`to_int8` knows (see ``mxnet.contrib.quantization``).
CALIB_MODES = ("naive", "entropy")


def calibration_batches(calib_data, batch_shape):
    """``calib_data`` as one float32 numpy array (N, C, H, W) matching ``batch_shape[1:]``.

    ``calib_data`` is an array (numpy or MXNet) or an iterable of batches
    (arrays, or ``(data, label)`` tuples as a ``DataLoader`` yields them).

    Raises
    ------
    ValueError
        For no batches or a shape other than ``(N, *batch_shape[1:])``, N >= 1.
    """
    if hasattr(calib_data, "asnumpy"):
        calib_data = calib_data.asnumpy()
    if isinstance(calib_data, onp.ndarray):
        data = calib_data
    else:
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


@use_np
def to_int8(net, example, calib_data=None, calib_mode="naive", num_calib_examples=None,
            quantized_dtype="auto", granularity="channel-wise", exclude_layers=None):
    """An INT8 copy of ``net`` for the CPU, quantized by MXNet's MKLDNN flow.

    The steps of ``quantize_net`` (see the module docstring for why not it):

    1. ``get_backend_symbol('MKLDNN_QUANTIZE')`` fuses convolution + following
       BatchNorm (folded into the weights) + residual sum, and the dense layer
       (same-shape numpy sums are ``elemwise_add`` in the inference graph, the
       only sum the pass fuses; that halves the quantize/dequantize nodes of a
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
    (:func:`~.prelu.split_prelu`) it is quantized with the rest, so the whole
    graph runs in INT8 between one quantize and one dequantize.  The BatchNorm
    that precedes each block's first convolution cannot be folded; it runs as
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
    import mxnet as mx
    from mxnet import gluon
    from mxnet.contrib import quantization as quant

    if calib_mode not in CALIB_MODES:
        raise ValueError(f"calib_mode must be one of {', '.join(CALIB_MODES)}, not {calib_mode!r}")
    ctx = example.ctx
    if ctx.device_type != "cpu":
        raise ValueError(f"int8 embedding runs on the CPU (MKLDNN) only, not on {ctx}")
    if calib_data is None:
        raise ValueError("int8 needs calib_data (a few batches of normalised images)")
    calib = calibration_batches(calib_data, example.shape)
    if num_calib_examples is not None:
        if num_calib_examples < 1:
            raise ValueError(f"num_calib_examples must be >= 1, got {num_calib_examples}")
        calib = calib[:num_calib_examples]
    data_name, legacy, params = inference_graph(net, example)
    args = {n: params[n] for n in legacy.list_arguments() if n != data_name}
    auxs = {n: params[n] for n in legacy.list_auxiliary_states()}
    batch = tuple(example.shape)
    with mx.util.np_array(False), mx.util.np_shape(False), warnings.catch_warnings(), \
            quiet_subgraph_log():
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
        compat.collect_layer_statistics(module, batches, collector, len(calib))
        qsym, qargs, qauxs = quant.calib_graph(qsym, args, auxs, collector,
                                               calib_mode=calib_mode,
                                               quantized_dtype=quantized_dtype, logger=None)
        qsym = qsym.get_backend_symbol("MKLDNN_QUANTIZE")
        block = gluon.SymbolBlock(qsym.as_np_ndarray(),
                                  [mx.sym.var(data_name).as_np_ndarray()])
    return load_inference_block(block, dict(qauxs, **qargs), ctx)

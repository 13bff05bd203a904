"""One entry point from an embedding mode to the block that embeds: :func:`prepare_embedder`.

``'block'``
    the network as it is, imperative (the reference).
``'hybrid'``
    ``hybridize(static_alloc=True, static_shape=True)``: one cached graph with
    memory planned once.
``'fused'``
    :func:`~.fused.to_fused`: a float32 copy with PReLU split into oneDNN
    operators and MKLDNN's fusion (BatchNorm after a convolution folded into
    it, the dense layer fused).
``'bf16'``
    :func:`~.precision.to_bfloat16`: convolutions, the dense layer,
    BatchNorms, residual sums and the split PReLU in bfloat16.
``'int8'``
    :func:`~.int8.to_int8`: MXNet's MKLDNN quantization flow with ranges
    calibrated on ``calib_data``.  CPU only.

Training asks for an inference copy of its backbone here too (verification
between epochs), without going through :mod:`gluon_face.inference`.
"""
from mxnet.util import use_np

from .fused import to_fused
from .int8 import to_int8
from .precision import to_bfloat16

__all__ = ["MODES", "check_mode", "prepare_embedder"]

#: Embedding modes :func:`prepare_embedder` knows.
MODES = ("block", "hybrid", "fused", "bf16", "int8")


def check_mode(mode):
    """Raise ``ValueError`` naming the valid modes unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"unknown embedding mode {mode!r}; valid modes: {', '.join(MODES)}")


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
        For ``'int8'``: see :func:`~.int8.to_int8`.

    Returns
    -------
    mxnet.gluon.HybridBlock
        ``net`` itself for ``'block'``/``'hybrid'`` (hybridized in place; call
        ``net.hybridize(active=False)`` to undo), a new inference-only block
        with copied parameters for ``'fused'``, ``'bf16'`` and ``'int8'``.
    """
    check_mode(mode)
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

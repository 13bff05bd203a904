"""Device strings (``cpu``, ``gpu:0,1``) to lists of MXNet contexts.

MXNet is imported inside the functions, not at module level, so importing this
module costs nothing beyond the package itself and needs no MXNet.
"""

__all__ = ["parse_ctx"]


def parse_ctx(text):
    """Parse a device string into a list of MXNet contexts.

    Accepted forms: ``cpu``, ``cpu:0,1`` (separate CPU contexts), ``gpu`` (=
    ``gpu:0``), ``gpu:0,1,3``.

    Parameters
    ----------
    text : str
        The device string.

    Returns
    -------
    list of mxnet.Context
        One context per index, in the order given.

    Raises
    ------
    ValueError
        On any other form, or a GPU index that is not visible.
    """
    _require_mxnet()
    import mxnet as mx

    kind, _, ids = str(text).strip().partition(":")
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"unknown device {text!r}: use cpu, cpu:0,1, gpu or gpu:0,1")
    try:
        idx = [int(i) for i in ids.split(",")] if ids else [0]
    except ValueError:
        raise ValueError(f"bad device list in {text!r}: use e.g. gpu:0,1") from None
    if any(i < 0 for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"bad device list in {text!r}: indices must be distinct and >= 0")
    if kind == "cpu":
        return [mx.cpu(i) for i in idx]
    available = mx.context.num_gpus()
    missing = [i for i in idx if i >= available]
    if missing:
        raise ValueError(f"device {text!r} asks for gpu {','.join(map(str, missing))} "
                         f"but {available} GPU(s) are visible")
    return [mx.gpu(i) for i in idx]


def _require_mxnet():
    """Import :mod:`gluon_face._mxnet`: when MXNet cannot be imported, its error says why.

    Called before a function's own ``import mxnet``, which would otherwise fail
    with a bare ``No module named 'mxnet'`` (or an ``AttributeError`` from inside
    MXNet under a numpy it does not support).

    Raises
    ------
    ImportError
        One line naming what to install.
    """
    from . import _mxnet  # noqa: F401


def _as_contexts(ctx_list):
    """``ctx_list`` as a non-empty list of contexts.

    Parameters
    ----------
    ctx_list : mxnet.Context, sequence of mxnet.Context or None
        None means ``[mx.cpu()]``; a single context becomes a list of one.

    Returns
    -------
    list of mxnet.Context

    Raises
    ------
    ValueError
        If ``ctx_list`` is an empty sequence.
    """
    _require_mxnet()
    import mxnet as mx

    if ctx_list is None:
        return [mx.cpu()]
    if isinstance(ctx_list, mx.Context):
        return [ctx_list]
    ctx_list = list(ctx_list)
    if not ctx_list:
        raise ValueError("ctx_list is empty: give at least one mxnet Context")
    return ctx_list

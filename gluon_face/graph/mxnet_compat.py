"""The one place gluon_face touches MXNet's private API (checked against MXNet 1.9.1).

Gluon 1.x leaves some things gluon_face needs without a public accessor: a
hybridized block's traced graph, loading an array into a parameter, the
optimizer's per-parameter update counts, a trainer's parameter list...  Every
such use goes through a small function of this module, so that a new MXNet
version means checking this file only (``CHECKED_MXNET_VERSION`` names the one
it was written against; :func:`check_version` compares).  What each function
relies on in 1.9.1:

Blocks (``mxnet.gluon.Block`` / ``HybridBlock``)
    :func:`cached_graph`           ``HybridBlock._cached_graph``: ``(inputs, symbol)``
                                   after a hybridized forward pass, ``()`` before.
    :func:`block_children`         ``Block._children``: name -> child block, in
                                   registration order.
    :func:`declared_params`        ``Block._reg_params``: the block's own parameters
                                   by attribute name.
    :func:`structural_params`      ``Block._collect_params_with_prefix()``: the
                                   ``features.0.weight`` keys of ``save_parameters``.
    :func:`operator_kwargs`,       ``_kwargs``: the operator attributes that
    :func:`set_operator_kwarg`     ``nn.Conv2D`` / ``nn.BatchNorm`` & co. pass to their
                                   operator at every call (hence read at call time).
    :func:`dense_config`           ``nn.Dense._units`` and ``._flatten``.

Parameters
    :func:`load_parameter`         ``Parameter._load_init(data, ctx)``: (re)initialise
                                   from an array, deferred shape and dtype checks
                                   included (what ``load_parameters`` runs per key).

Trainer and optimizer
    :func:`trainer_params`         ``Trainer._params``: the parameters in optimizer
                                   index order.
    :func:`trainer_updaters`,      ``Trainer._updaters`` (one per context) and
    :func:`updates_on_kvstore`     ``Trainer._update_on_kvstore`` (None until the
                                   kvstore is set up, then a bool).
    :func:`ensure_trainer_initialized`  ``Trainer._kv_initialized``, ``_init_kvstore()``,
                                   ``_params_to_init``, ``_init_params()``: what
                                   ``Trainer.step`` runs lazily at its first call.
    :func:`update_counts`,         ``Optimizer._all_index_update_counts`` (device ->
    :func:`current_update_counts`, {index: count}) and ``_index_update_count`` (the
    :func:`set_update_counts`,     current device's dict, an alias of one of them);
    :func:`advance_update_counts`  ``begin_num_update`` / ``num_update`` are public.
    :func:`begin_update`           ``Optimizer._update_count``, ``_get_lr``, ``_get_wd``
                                   and ``_index_update_count``: the hooks every
                                   built-in optimizer's ``update`` starts with.

Data loading
    :func:`close_data_loader`      ``DataLoader._worker_pool``: the loader's
                                   ``multiprocessing`` (thread) pool, None without
                                   workers.

Graph passes
    :func:`dtype_from_code`        ``mxnet.ndarray.ndarray._DTYPE_MX_TO_NP``: the
                                   ``__dtype__`` attribute codes of a symbol.
    :func:`collect_layer_statistics`  ``mxnet.contrib.quantization.
                                   _collect_layer_statistics``: run calibration
                                   batches through a bound ``Module`` into a collector
                                   (``quantize_net`` itself refuses numpy-mode blocks).

Arrays
    :func:`ndarray_address`        ``mxnet.base._LIB.MXNDArrayGetData``: the address of
                                   an NDArray's buffer (no public accessor; ``asnumpy``
                                   copies).

Public MXNet API (``mx.base.MXNetError``, ``mx.base.check_call``, ``mx.nd.contrib.*``)
is used directly elsewhere.
"""
import ctypes

import mxnet as mx

from .. import _mxnet  # noqa: F401  (actionable error when MXNet is missing)

__all__ = [
    "CHECKED_MXNET_VERSION", "check_version", "cached_graph", "block_children",
    "declared_params", "structural_params", "operator_kwargs", "set_operator_kwarg",
    "dense_config", "load_parameter", "trainer_params", "trainer_updaters",
    "updates_on_kvstore", "ensure_trainer_initialized", "update_counts",
    "current_update_counts", "set_update_counts", "advance_update_counts", "begin_update",
    "dtype_from_code", "collect_layer_statistics", "ndarray_address",
]

#: The MXNet release every function here was checked against.
CHECKED_MXNET_VERSION = "1.9.1"


def check_version(version=None):
    """True when ``version`` (default: the installed MXNet's) is :data:`CHECKED_MXNET_VERSION`.

    Nothing calls this on import: another version may well work; this tells a
    caller (or a test) that the private attributes were not checked for it.
    """
    return (mx.__version__ if version is None else version) == CHECKED_MXNET_VERSION


# ------------------------------------------------------------------------------- blocks
def cached_graph(block):
    """``(inputs, symbol)`` of ``block``'s traced graph, or ``None`` before it has one.

    A hybridized ``HybridBlock`` traces its graph at its first forward pass;
    ``inputs`` are the data variables, ``symbol`` the (numpy-mode) outputs.
    """
    graph = block._cached_graph
    return tuple(graph) if graph else None


def block_children(block):
    """``{name: child}`` of ``block``'s direct child blocks, in registration order (a copy)."""
    return dict(block._children)


def declared_params(block):
    """``{attribute name: Parameter}`` of the parameters ``block`` itself registers (a copy).

    Not those of its children: see ``collect_params`` / :func:`structural_params`.
    """
    return dict(block._reg_params)


def structural_params(block):
    """``{structural key: Parameter}`` of ``block`` and its children.

    The keys are attribute paths (``features.3.0.body.1.weight``), as
    ``save_parameters`` writes them: independent of the instance-numbered name
    prefixes that ``collect_params`` uses.
    """
    return block._collect_params_with_prefix()


def operator_kwargs(block):
    """The operator attributes a layer passes to its operator (a copy), e.g. ``kernel``.

    ``nn.Conv2D``, ``nn.BatchNorm`` and the other layers that wrap one operator
    keep them in one dict and hand it to the operator at every call.
    """
    return dict(block._kwargs)


def set_operator_kwarg(block, key, value):
    """Change one operator attribute of a layer, e.g. BatchNorm's ``use_global_stats``.

    The layer reads the dict at every call, so this takes effect at the next
    forward pass; a hybridized block must be re-hybridized (or not yet traced).

    Raises
    ------
    KeyError
        If the layer's operator has no attribute ``key`` (a typo would otherwise
        reach the operator as an unknown argument).
    """
    kwargs = block._kwargs
    if key not in kwargs:
        raise KeyError(f"{type(block).__name__} has no operator attribute {key!r} "
                       f"(it has {', '.join(sorted(kwargs))})")
    kwargs[key] = value


def dense_config(dense):
    """``(units, flatten)`` of an ``nn.Dense`` layer.

    ``units`` is the output size; ``flatten`` says whether all input axes but
    the first are flattened into one (else only the last is contracted).
    """
    return int(dense._units), bool(dense._flatten)


# --------------------------------------------------------------------------- parameters
def load_parameter(param, data, ctx):
    """Initialise ``param`` with ``data`` on ``ctx`` (a Context or a list of them).

    Works on initialised and uninitialised (deferred-shape) parameters alike;
    the shape must match where ``param`` knows it, and ``param.dtype`` must equal
    ``data.dtype`` (cast ``param`` first to load another type).
    """
    param._load_init(data, ctx)


# -------------------------------------------------------------------- trainer/optimizer
def trainer_params(trainer):
    """The parameters of a ``gluon.Trainer`` in its optimizer's index order (a list copy)."""
    return list(trainer._params)


def trainer_updaters(trainer):
    """The trainer's updaters, one per context; each holds ``states`` {index: state}.

    Meaningful only when the trainer updates locally (:func:`updates_on_kvstore`
    false); otherwise the optimizer state lives on the kvstore.
    """
    return trainer._updaters


def updates_on_kvstore(trainer):
    """True when ``trainer`` applies updates on the kvstore (no local optimizer state).

    False also before the kvstore is set up (the first ``step``, or
    :func:`ensure_trainer_initialized`), when MXNet has not decided yet.
    """
    return bool(getattr(trainer, "_update_on_kvstore", False))


def ensure_trainer_initialized(trainer):
    """Set up the trainer's kvstore and push initial parameters, as its first ``step`` would.

    Returns True when parameters were initialised in the kvstore now (callers
    that must not overlap this with other traffic wait for it, e.g.
    ``mx.nd.waitall()``); False when there was nothing left to do.  Calling it
    again is harmless.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
        return True
    return False


def close_data_loader(loader):
    """End a ``gluon.data.DataLoader``'s worker threads or processes and wait for them.

    The loader keeps its pool in ``_worker_pool`` and only terminates it (from
    ``__del__``, or when a batch fails).  ``terminate`` does not wait for the
    threads of a thread pool (``thread_pool=True``): one still decoding a prefetched
    batch when Python exits is stopped inside the image decoder's C++ frames, and
    the process aborts ('terminate called without an active exception', exit 134).
    Harmless for a loader without workers and when called again.
    """
    pool = getattr(loader, "_worker_pool", None)
    if pool is not None:
        pool.terminate()
        pool.join()


def update_counts(optimizer):
    """``{device id: {parameter index: updates}}`` the optimizer counted (a deep copy)."""
    return {dev: dict(counts) for dev, counts in optimizer._all_index_update_counts.items()}


def current_update_counts(optimizer):
    """``{parameter index: updates}`` of the optimizer's current device (a copy).

    An optimizer driven directly (``update_multi_precision``), not through a
    trainer's updaters, stays on device 0.
    """
    return dict(optimizer._index_update_count)


def set_update_counts(optimizer, counts):
    """Replace the optimizer's update counts with ``{device id: {index: updates}}``.

    The lowest device id becomes the current one; an empty ``counts`` leaves one
    empty device 0 (the state of a fresh optimizer).  ``num_update`` is the
    caller's to set.
    """
    counts = {int(dev): dict(c) for dev, c in counts.items()} or {0: {}}
    optimizer._all_index_update_counts = counts
    optimizer._index_update_count = counts[min(counts)]


def advance_update_counts(optimizer, steps=1):
    """Add ``steps`` to every parameter's update count on every device.

    ``num_update`` (public) is not changed here.
    """
    for counts in optimizer._all_index_update_counts.values():
        for index in counts:
            counts[index] += steps


def begin_update(optimizer, index):
    """Count one update of parameter ``index``; ``(t, lr, wd)`` for it.

    What MXNet's own optimizers do at the start of ``update``: ``t`` is the
    parameter's update count including this one (for bias corrections), ``lr``
    the scheduled learning rate times its ``lr_mult``, ``wd`` the weight decay
    times its ``wd_mult``.  For use in ``Optimizer.update`` of a subclass.
    """
    optimizer._update_count(index)
    return (optimizer._index_update_count[index], optimizer._get_lr(index),
            optimizer._get_wd(index))


# --------------------------------------------------------------------------- graph passes
def dtype_from_code(code):
    """The numpy dtype of MXNet type code ``code`` (a symbol's ``__dtype__`` attribute).

    bfloat16 maps to the structured dtype ``mxnet.contrib.amp`` uses for it.
    """
    from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

    return _DTYPE_MX_TO_NP[int(code)]


def collect_layer_statistics(module, batches, collector, num_examples):
    """Run ``batches`` (a DataIter) through a bound ``Module`` into a calibration ``collector``.

    The collector is the one ``mxnet.contrib.quantization.quantize_graph``
    returned; at most ``num_examples`` examples are run.
    """
    from mxnet.contrib import quantization

    return quantization._collect_layer_statistics(module, batches, collector, num_examples)


# -------------------------------------------------------------------------------- arrays
def ndarray_address(arr):
    """The address (int) of the first element of an NDArray's buffer.

    For a CPU array, a view of it may be built with ``ctypes``; the caller keeps
    ``arr`` alive and must have waited for pending writes (``wait_to_read``).
    """
    ptr = ctypes.c_void_p()
    mx.base.check_call(mx.base._LIB.MXNDArrayGetData(arr.handle, ctypes.byref(ptr)))
    return ptr.value

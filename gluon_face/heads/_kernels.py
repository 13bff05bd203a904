"""Two fused CPU kernels for the margin heads, as MXNet custom operators.

MXNet 1.9.1 has no multi-threaded operator for two steps of a margin head over
its (C, E) class centres and (B, C) logits:

``gf_row_normalize``
    rows divided by their L2 norm, ``w / sqrt(sum(w**2, axis=1) + eps)``.
    The legacy ``L2Normalization`` computes the same, but its backward pass
    runs on one thread, a large share of a margin head's step over many
    classes (``tools/benchmark_head.py`` shows it).
``gf_set_targets``
    ``out = logits`` with ``out[i, y[i]] = values[i]``: the margin's B target
    logits written into the (B, C) logits.  ``index_copy`` on a flattened
    view needs a reshape back, which copies the whole array, and one-hot
    masks pass over it several times.  With ``allow_missing`` a label of -1
    means "no target in this row" (the row is copied unchanged): the sharded
    and Partial FC heads, whose shards hold only some of the classes.

Both are numba kernels, parallel over rows (each row is summed by one
thread, in float64, in the order the compiled kernel fixes: results do not
depend on the thread count), working in place on the arrays' memory.  They
run when numba is importable (the ``cpu`` extra installs it) and the arrays
are float32 on the CPU; otherwise the same
operators compute with MXNet operators (slower on the CPU, the normal path
on a GPU).  :data:`AVAILABLE` says whether the kernels can run.

Kernel calls hold a lock: numba's default threading layer must not be
entered from two threads at once, and MXNet runs custom operators of
different devices (``cpu:0``, ``cpu:1``) on several threads.

Custom operators run on MXNet's own worker threads, which its exit hook
(``MXNotifyShutdown``) stops before it waits for the engine.  A custom operator
still queued at that moment never runs: the wait then never ends (a hang at
exit), or a worker thread is destroyed while still joinable (``terminate called
without an active exception``, exit 134).  Both happen when a program leaves
right after queueing a head's forward pass, e.g. on an error raised before its
first result was read.  :func:`_drain_engine` runs first at exit (``atexit``
calls its hooks in reverse order of registration, and MXNet registered its own
when it was imported above) and lets all queued work finish while the custom
operators still can run.
"""
import atexit
import contextlib
import ctypes
import math
import threading

import mxnet as mx
import numpy as onp

from ..graph import mxnet_compat
from ._utils import as_legacy, index_copy_targets

try:
    import numba
except ImportError:  # pragma: no cover - numba is part of the cpu extra
    numba = None

def _drain_engine():
    """Wait for all queued MXNet work, before MXNet's own exit hook stops custom operators."""
    with contextlib.suppress(Exception):  # an operator's error was the program's to read
        mx.nd.waitall()


atexit.register(_drain_engine)

#: Whether the numba kernels are used for float32 CPU arrays.
AVAILABLE = numba is not None
_LOCK = threading.Lock()


@contextlib.contextmanager
def disabled():
    """Within: heads trace their MXNet-operator graph and the operators take their fallback.

    For references that must normalise exactly as MXNet's operators do.
    """
    global AVAILABLE
    saved, AVAILABLE = AVAILABLE, False
    try:
        yield
    finally:
        AVAILABLE = saved


#: Reassociation lets the row sums vectorise (float64 accumulators; NaN and inf are
#: kept, unlike with fastmath=True).
_FASTMATH = {"reassoc", "contract", "nsz"}


def _jit(fn):
    return numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)(fn) if AVAILABLE else fn


_prange = numba.prange if AVAILABLE else range


@_jit
def _normalize_rows(w, out, inv, eps):
    for c in _prange(w.shape[0]):
        s = 0.0
        for d in range(w.shape[1]):
            s += w[c, d] * w[c, d]
        r = 1.0 / math.sqrt(s + eps)
        inv[c] = r
        for d in range(w.shape[1]):
            out[c, d] = w[c, d] * r


@_jit
def _normalize_rows_backward(g, wn, inv, dw, add):
    # d(w/|w|) = (g - wn * <g, wn>) / |w|
    for c in _prange(g.shape[0]):
        dot = 0.0
        for d in range(g.shape[1]):
            dot += g[c, d] * wn[c, d]
        r = inv[c]
        if add:
            for d in range(g.shape[1]):
                dw[c, d] += (g[c, d] - wn[c, d] * dot) * r
        else:
            for d in range(g.shape[1]):
                dw[c, d] = (g[c, d] - wn[c, d] * dot) * r


@_jit
def _set_targets(logits, cols, values, out):
    # a column of -1: no target in the row (checked by _columns)
    for i in _prange(logits.shape[0]):
        for j in range(logits.shape[1]):
            out[i, j] = logits[i, j]
        if cols[i] >= 0:
            out[i, cols[i]] = values[i]


@_jit
def _set_targets_backward(g, cols, dlogits, dvalues, add_logits, add_values, want_logits,
                          want_values):
    for i in _prange(g.shape[0]):
        c = cols[i]
        if want_logits:
            if add_logits:
                for j in range(g.shape[1]):
                    dlogits[i, j] += g[i, j]
                if c >= 0:
                    dlogits[i, c] -= g[i, c]
            else:
                for j in range(g.shape[1]):
                    dlogits[i, j] = g[i, j]
                if c >= 0:
                    dlogits[i, c] = 0.0
        if want_values:
            picked = g[i, c] if c >= 0 else 0.0
            if add_values:
                dvalues[i] += picked
            else:
                dvalues[i] = picked


def _view(arr):
    """A numpy array on ``arr``'s own memory (CPU, float32, contiguous NDArray)."""
    address = mxnet_compat.ndarray_address(arr)
    buf = (ctypes.c_float * int(onp.prod(arr.shape))).from_address(address)
    return onp.frombuffer(buf, dtype=onp.float32).reshape(arr.shape)


def _fast(*arrays):
    return AVAILABLE and all(a.context.device_type == "cpu" and a.dtype == onp.float32
                             for a in arrays)


_legacy = as_legacy


def _numpy_mode(arr):
    return arr if isinstance(arr, mx.np.ndarray) else arr.as_np_ndarray()


def _assign(op, dst, req, src):
    """``op.assign`` of a result of either array kind into ``dst`` of either kind."""
    op.assign(dst, req, _numpy_mode(src) if isinstance(dst, mx.np.ndarray) else _legacy(src))


def _columns(labels, num_classes, allow_missing=False):
    """``labels`` (float) as int64 column indices; ValueError if outside [0, C).

    With ``allow_missing``, -1 (no target in the row) is accepted too.
    """
    cols = labels.asnumpy().astype(onp.int64)
    low = -1 if allow_missing else 0
    if len(cols) and (cols.min() < low or cols.max() >= num_classes):
        valid = f"[0, {num_classes}) or -1" if allow_missing else f"[0, {num_classes})"
        raise ValueError(f"labels must be in {valid}, got values from "
                         f"{cols.min()} to {cols.max()}")
    return cols


def _blend_targets(logits, labels, values, num_classes):
    """The one-hot form of ``gf_set_targets`` (legacy arrays); a label of -1 keeps its row.

    ``one_hot`` of -1 is an all-zero row, so that row's target is masked out.
    """
    one_hot = mx.nd.one_hot(labels, num_classes)
    return logits * (1 - one_hot) + one_hot * mx.nd.expand_dims(values, axis=1)


class _RowNormalize(mx.operator.CustomOp):
    def __init__(self, eps):
        super().__init__()
        self.eps = eps
        self.inv = None

    def forward(self, is_train, req, in_data, out_data, aux):
        w, out = in_data[0], out_data[0]
        if _fast(w, out):
            if self.inv is None or self.inv.shape[0] != w.shape[0]:
                self.inv = onp.empty(w.shape[0], dtype=onp.float32)
            with _LOCK:
                _normalize_rows(_view(w), _view(out), self.inv, self.eps)
        else:
            lw = _legacy(w)
            normed = mx.nd.L2Normalization(lw, mode="instance", eps=self.eps)
            _assign(self, out, req[0], normed)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        if req[0] == "null":
            return
        g, wn, w, dw = out_grad[0], out_data[0], in_data[0], in_grad[0]
        if _fast(g, wn, dw) and self.inv is not None:
            with _LOCK:
                _normalize_rows_backward(_view(g), _view(wn), self.inv, _view(dw),
                                         req[0] == "add")
            return
        lg, lwn, lw = _legacy(g), _legacy(wn), _legacy(w)
        inv = 1.0 / mx.nd.sqrt(mx.nd.sum(lw * lw, axis=1, keepdims=True) + self.eps)
        dot = mx.nd.sum(lg * lwn, axis=1, keepdims=True)
        grad = mx.nd.broadcast_mul(lg - mx.nd.broadcast_mul(lwn, dot), inv)
        _assign(self, dw, req[0], grad)


@mx.operator.register("gf_row_normalize")
class _RowNormalizeProp(mx.operator.CustomOpProp):
    def __init__(self, eps="1e-12"):
        super().__init__(need_top_grad=True)
        self.eps = float(eps)

    def list_arguments(self):
        return ["data"]

    def list_outputs(self):
        return ["output"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        return [out_grad[0], in_data[0], out_data[0]]

    def create_operator(self, ctx, shapes, dtypes):
        return _RowNormalize(self.eps)


class _SetTargets(mx.operator.CustomOp):
    def __init__(self, allow_missing=False):
        super().__init__()
        self.allow_missing = allow_missing

    def forward(self, is_train, req, in_data, out_data, aux):
        logits, labels, values = in_data
        out = out_data[0]
        cols = _columns(labels, logits.shape[1], self.allow_missing)
        if _fast(logits, values, out):
            with _LOCK:
                _set_targets(_view(logits), cols, _view(values), _view(out))
            return
        if self.allow_missing:
            _assign(self, out, req[0], _blend_targets(_legacy(logits), _legacy(labels),
                                                      _legacy(values), logits.shape[1]))
            return
        _assign(self, out, req[0], index_copy_targets(
            mx.nd, _numpy_mode(logits), _numpy_mode(labels), _numpy_mode(values),
            logits.shape[1]))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        g = out_grad[0]
        logits, labels, values = in_data
        cols = _columns(labels, g.shape[1], self.allow_missing)
        if req[1] != "null":  # labels are not differentiable
            _assign(self, in_grad[1], req[1], mx.nd.zeros(labels.shape, ctx=labels.context))
        want_logits, want_values = req[0] != "null", req[2] != "null"
        wanted = [a for a, want in ((in_grad[0], want_logits), (in_grad[2], want_values)) if want]
        if _fast(g, *wanted):
            unused = onp.zeros((1, 1), dtype=onp.float32)
            with _LOCK:
                _set_targets_backward(_view(g), cols,
                                      _view(in_grad[0]) if want_logits else unused,
                                      _view(in_grad[2]) if want_values else unused[0],
                                      req[0] == "add", req[2] == "add", want_logits,
                                      want_values)
            return
        lg, index = _legacy(g), mx.nd.array(cols, ctx=g.context)
        # one_hot of -1 is an all-zero row: a row without target passes g unchanged
        one_hot = mx.nd.one_hot(index, g.shape[1])
        if want_values:
            picked = mx.nd.pick(lg, index, axis=1)  # -1 picks column 0: masked out below
            _assign(self, in_grad[2], req[2], picked * (index >= 0) if self.allow_missing
                    else picked)
        if want_logits:
            _assign(self, in_grad[0], req[0], lg * (1 - one_hot))


@mx.operator.register("gf_set_targets")
class _SetTargetsProp(mx.operator.CustomOpProp):
    def __init__(self, allow_missing="0"):
        super().__init__(need_top_grad=True)
        self.allow_missing = allow_missing in ("1", "True", "true")

    def list_arguments(self):
        return ["logits", "labels", "values"]

    def list_outputs(self):
        return ["output"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        # The logits are not needed, but declared: MXNet 1.9.1 keeps the last created custom
        # operator's dependency indices in one registry-wide set and uses it for every
        # custom operator's backward; an input left out (an empty array) that gf_row_normalize's
        # set names then fails the backward ("stype = -1"). Both operators declare indices
        # 0, 1, 2, so whichever set is in force is right.
        return [out_grad[0], in_data[0], in_data[1]]

    def create_operator(self, ctx, shapes, dtypes):
        return _SetTargets(self.allow_missing)


def row_normalize(F, w, eps):
    """``w`` (N, D) with rows divided by their L2 norm (``gf_row_normalize``)."""
    out = F.Custom(_legacy(w), op_type="gf_row_normalize", eps=repr(float(eps)))
    return out.as_np_ndarray()


def set_targets(F, logits, labels, values, allow_missing=False):
    """``logits`` (B, C) with ``logits[i, labels[i]] = values[i]`` (``gf_set_targets``).

    With ``allow_missing`` a label of -1 leaves its row as it is (no target).
    """
    out = F.Custom(_legacy(logits), _legacy(labels), _legacy(values),
                   op_type="gf_set_targets", allow_missing="1" if allow_missing else "0")
    return out.as_np_ndarray()

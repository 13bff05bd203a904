"""Small pieces shared by the heads: argument checks and row normalisation."""
import math
import numbers

#: Added under the square root when rows are normalised, so that an all-zero
#: row maps to zero (cosine 0) instead of NaN, with a finite gradient.
NORM_EPS = 1e-12


def l2_normalize(F, x):
    """Rows of ``x`` divided by their L2 norm: ``x / sqrt(sum(x**2, axis=1) + NORM_EPS)``.

    Numpy-mode MXNet has no ``npx.l2_normalization``; this calls the fused legacy
    operator ``L2Normalization(mode='instance')`` on a legacy view of ``x`` (no
    copy, autograd and hybridization see one operator) and views the result as a
    numpy-mode array again.  The written-out formula (:func:`l2_normalize_plain`)
    runs five separate broadcast/reduce operators forward and more backward, so
    the fused operator is the faster one on a large class-centre matrix
    (``tools/benchmark_head.py`` measures both; tests/heads/test_speed_paths.py
    checks they agree).

    Parameters
    ----------
    F : module
        ``mxnet.ndarray`` or ``mxnet.symbol`` (the ``F`` of ``hybrid_forward``).
    x : array, shape (N, D)
        Numpy-mode array or symbol.

    Returns
    -------
    array, shape (N, D)
    """
    out = F.L2Normalization(as_legacy(x), mode="instance", eps=NORM_EPS)
    return out.as_np_ndarray()


def as_legacy(x):
    """The legacy (``mx.nd`` / ``mx.sym``) view of a numpy-mode array or symbol; ``x`` if legacy."""
    return x.as_nd_ndarray() if hasattr(x, "as_nd_ndarray") else x


def index_copy_targets(F, logits, labels, values, num_classes):
    """``logits`` (B, C) with ``logits[i, labels[i]] = values[i]``, by MXNet operators.

    Writes the B values into the flattened (B*C, 1) logits with the legacy
    ``index_copy`` (numpy mode has no scatter): one copy forward, one backward,
    instead of one-hot masks that pass several times over the (B, C) array.
    Positions are int64: ``B * C`` passes float32's exact-integer range at 1M
    classes.  Numpy-mode arrays or symbols in, numpy-mode out; the heads' path
    without the numba kernel (:mod:`._kernels`), and that kernel's fallback.
    """
    rows = F.npx.arange_like(labels).astype("int64")
    positions = rows * num_classes + labels.astype("int64")
    flat = F.np.reshape(logits, (-1, 1)).as_nd_ndarray()
    out = F.contrib.index_copy(flat, positions.as_nd_ndarray(),
                               F.np.expand_dims(values, axis=1).as_nd_ndarray())
    return F.np.reshape(out.as_np_ndarray(), (-1, num_classes))


def normalize_centres(F, w):
    """The (C, E) class centres ``w`` row-normalised, by the fastest operator at hand.

    :func:`gluon_face.heads._kernels.row_normalize` (numba kernel, backward on
    every core) when numba is installed, else :func:`l2_normalize`.  The two
    agree to float32 rounding (tests/heads/test_kernels.py).
    """
    from . import _kernels

    if _kernels.AVAILABLE:
        return _kernels.row_normalize(F, w, NORM_EPS)
    return l2_normalize(F, w)


def l2_normalize_plain(F, x):
    """The written-out form of :func:`l2_normalize`, kept as its reference.

    ``x / sqrt(sum(x * x, axis=1, keepdims=True) + NORM_EPS)`` with numpy-mode operators.
    """
    return x / F.np.sqrt(F.np.sum(x * x, axis=1, keepdims=True) + NORM_EPS)


def check_positive_int(name, value):
    """``value`` as an ``int`` if it is a positive integer, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_real(name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a ``float`` if finite and inside the given bounds, else ``ValueError``.

    ``low_open``/``high_open`` make the bound strict.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        op = "<" if high_open else "<="
        raise ValueError(f"{name} must be {op} {high:g}, got {value:g}")
    return value


def check_bool(name, value):
    """``value`` if it is a ``bool``, else ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value

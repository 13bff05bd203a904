"""Figures for the chapters and tools: embeddings, ROC and CMC curves, training curves, margins.

Every function returns a :class:`matplotlib.figure.Figure` built directly on the
Agg canvas (no ``pyplot``), so calling them never opens a window, never switches
the global backend and never leaves figures registered with ``pyplot``; in Jupyter
the returned figure displays as the cell's value.  With ``path`` the figure is
also written as PNG, atomically (see :func:`gluon_face._io.atomic_path`).
"""
import csv
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._io import atomic_path
from .dunn import check_labelled
from .identification import IdentificationResult
from .margins import MARGIN_PRESETS, target_logit_numpy
from .verification import VerificationResult, l2_normalize

__all__ = ["plot_cmc", "plot_curves", "plot_embeddings", "plot_roc", "plot_target_logits"]

_MAX_LEGEND = 20


def _named_results(results, kind, what):
    """``results`` as a non-empty ``{name: value}`` dict; one ``kind`` result is 'model'."""
    if isinstance(results, kind):
        results = {"model": results}
    if not isinstance(results, dict) or not results:
        raise ValueError(f"results must be a non-empty dict name -> {what}")
    return results


def _figure(nrows=1, ncols=1, figsize=(6, 5)):
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path, dpi=100):
    if path is not None:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    return fig


def _colors(n):
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0, 1, n)]


# ----------------------------------------------------------------------------- embeddings
def plot_embeddings(embeddings, labels, title=None, unit_circle=False, centers=None, path=None,
                    normalize=False):
    """Scatter plot of embeddings, one colour per class.

    Parameters
    ----------
    embeddings : array_like, shape (N, D), D >= 2
        Two-dimensional embeddings are drawn as they are; for ``D > 2`` the points
        are projected on their first two principal components (centred SVD).
    labels : array_like, shape (N,)
        Class of every point; a legend is drawn for up to 20 classes.
    title : str, optional
    unit_circle : bool
        Draw the unit circle (for normalised embeddings: NormFace/ArcFace).
    centers : array_like, shape (C, 2), optional
        Class-centre matrix of a head (only for ``D = 2``), row ``j`` belonging to
        the ``j``-th class in sorted label order (class ``j`` for labels
        ``0..C-1``).  Drawn as arrows from the origin along the normalised centre
        directions, of length 1 with ``unit_circle``/``normalize``, else of the
        largest embedding norm.
    path : str, optional
        Also write the figure there as PNG.
    normalize : bool
        L2-normalise the embeddings before plotting (puts them on the unit circle).

    Returns
    -------
    matplotlib.figure.Figure
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError("embeddings must be 2-D (N, D) with N >= 1 and D >= 2, "
                         f"got shape {x.shape}")
    labels = check_labelled(x, labels)
    dim = x.shape[1]
    if normalize:
        x = l2_normalize(x)
    if dim > 2:
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        x = centred @ vt[:2].T
        axis_names = ("PC 1", "PC 2")
    else:
        axis_names = ("dim 1", "dim 2")
    classes = np.unique(labels)
    colors = _colors(len(classes))

    fig, axes = _figure()
    ax = axes[0, 0]
    for color, c in zip(colors, classes):
        pts = x[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.7, color=color, label=str(c),
                   edgecolors="none")
    if unit_circle:
        t = np.linspace(0, 2 * np.pi, 361)
        ax.plot(np.cos(t), np.sin(t), color="0.3", lw=0.8, ls="--")
    if centers is not None:
        w = np.asarray(centers, dtype=np.float64)
        if dim != 2:
            raise ValueError(f"centers can only be drawn for 2-D embeddings, got D={dim}")
        if w.shape != (len(classes), 2):
            raise ValueError(f"centers must have shape ({len(classes)}, 2) (one row per class), "
                             f"got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(~np.any(w, axis=1)):
            raise ValueError("centers must be finite and non-zero")
        radius = 1.0 if (unit_circle or normalize) else float(np.max(np.linalg.norm(x, axis=1)))
        radius = radius or 1.0
        tips = radius * l2_normalize(w)
        for color, (dx, dy) in zip(colors, tips):
            ax.arrow(0, 0, dx, dy, width=0.012 * radius, length_includes_head=True,
                     color=color, ec="k", lw=0.5, zorder=3)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    if len(classes) <= _MAX_LEGEND:
        ax.legend(title="class", fontsize="small", markerscale=2, loc="best")
    return _save(fig, path)


# ----------------------------------------------------------------------------- ROC
def _roc_arrays(name, value):
    if isinstance(value, VerificationResult):
        return value.fpr, value.tpr, value
    if isinstance(value, dict):
        if "fpr" not in value or "tpr" not in value:
            raise ValueError(f"results[{name!r}] must have 'fpr' and 'tpr' keys")
        return value["fpr"], value["tpr"], None
    try:
        fpr, tpr = value
    except (TypeError, ValueError):
        raise ValueError(f"results[{name!r}] must be a VerificationResult, an (fpr, tpr) pair or a "
                         "dict with 'fpr' and 'tpr'") from None
    return fpr, tpr, None


def plot_roc(results, path=None, title="ROC"):
    """ROC curves (true vs false positive rate) on a logarithmic FPR axis.

    Parameters
    ----------
    results : dict or VerificationResult
        ``name -> VerificationResult`` (its mean ``fpr``/``tpr``; the legend shows
        accuracy and AUC), or ``name -> (fpr, tpr)`` / ``{'fpr':..., 'tpr':...}``.
        A single result is plotted under the name ``'model'``.
    path : str, optional
        Also write the figure there as PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Points with ``FPR = 0`` cannot sit on a log axis and are left out.
    """
    results = _named_results(results, VerificationResult, "VerificationResult or (fpr, tpr)")
    fig, axes = _figure()
    ax = axes[0, 0]
    lowest = 1.0
    for name, value in results.items():
        fpr, tpr, res = _roc_arrays(name, value)
        fpr = np.asarray(fpr, dtype=np.float64).ravel()
        tpr = np.asarray(tpr, dtype=np.float64).ravel()
        if fpr.shape != tpr.shape:
            raise ValueError(f"results[{name!r}]: fpr and tpr lengths differ "
                             f"({fpr.size} vs {tpr.size})")
        order = np.argsort(fpr, kind="stable")
        fpr, tpr = fpr[order], tpr[order]
        keep = np.isfinite(fpr) & np.isfinite(tpr) & (fpr > 0)
        label = str(name)
        if res is not None:
            label += f" (acc {res.accuracy:.4f}, AUC {res.auc:.4f})"
        ax.plot(fpr[keep], tpr[keep], lw=1.5, label=label)
        if np.any(keep):
            lowest = min(lowest, float(fpr[keep].min()))
    lowest = min(lowest, 1e-3)
    chance = np.logspace(np.log10(lowest), 0, 50)
    ax.plot(chance, chance, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false positive rate (log scale)")
    ax.set_ylabel("true positive rate")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


# ----------------------------------------------------------------------------- CMC
def plot_cmc(results, path=None, title=None):
    """Cumulative match characteristic: share of mated probes found within rank ``k``.

    Parameters
    ----------
    results : dict or IdentificationResult
        ``name -> IdentificationResult`` (its ``cmc``; the legend shows rank-1), or
        ``name -> cmc`` with ``cmc[k-1]`` the rate at rank ``k``.  A single result is
        plotted under the name ``'model'``.
    path : str, optional
        Also write the figure there as PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    The rank axis is logarithmic when some curve is longer than 20 ranks.
    """
    results = _named_results(results, IdentificationResult, "IdentificationResult or cmc")
    fig, axes = _figure()
    ax = axes[0, 0]
    longest = 1
    for name, value in results.items():
        cmc = value.cmc if isinstance(value, IdentificationResult) else value
        try:
            cmc = np.asarray(cmc, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"results[{name!r}] must be an IdentificationResult or a 1-D "
                             "array of rates") from None
        if cmc.ndim != 1 or cmc.size == 0 or not np.all(np.isfinite(cmc)):
            raise ValueError(f"results[{name!r}] must be a non-empty 1-D array of finite rates, "
                             f"got shape {cmc.shape}")
        ranks = np.arange(1, cmc.size + 1)
        ax.plot(ranks, cmc, lw=1.5, marker="o" if cmc.size <= 20 else None, ms=3,
                drawstyle="steps-post", label=f"{name} (rank-1 {cmc[0]:.4f})")
        longest = max(longest, cmc.size)
    if longest > 20:
        ax.set_xscale("log")
    ax.set_xlim(1, max(longest, 2))
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("rank" + (" (log scale)" if longest > 20 else ""))
    ax.set_ylabel("identification rate")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


# ----------------------------------------------------------------------------- curves
_X_KEYS = ("step", "iteration", "iter", "batch", "epoch")
_LR_KEYS = ("lr", "learning_rate")
_IGNORED = {"time", "seconds", "elapsed", "speed", "samples_per_sec", "throughput"}


def _read_csv(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ValueError(f"cannot read history CSV {path}: {err}") from None
    if not rows:
        raise ValueError(f"history CSV {path} has no data rows")
    return {key: [row.get(key) for row in rows] for key in rows[0] if key is not None}


def _numeric(values):
    """float array with None/'' as NaN, or None when the column is not numeric."""
    out = []
    for v in values:
        if v is None or (isinstance(v, str) and not v.strip()):
            out.append(np.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return np.asarray(out, dtype=np.float64)


def _is_accuracy(name, values):
    lowered = name.lower()
    if any(tag in lowered for tag in ("acc", "val", "auc")):
        return True
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() >= 0 and finite.max() <= 1


def plot_curves(history, path=None, title=None):
    """Loss and accuracy (and learning rate, if logged) against training progress.

    Parameters
    ----------
    history : dict or str or os.PathLike
        Either ``column -> list`` (equal lengths; ``None``/NaN for steps where a
        value was not logged) or the path of a CSV file with a header row (empty
        cells are missing values).  The x axis is the first of ``step``,
        ``iteration``, ``iter``, ``batch``, ``epoch`` present (else the row number).
        Panels: every column whose name contains ``loss``; every column whose name
        contains ``acc``, ``val`` or ``auc`` or whose values lie in ``[0, 1]``
        (e.g. ``lfw``, ``open_set``); ``lr``/``learning_rate`` on a log axis.
        Non-numeric columns and timing columns (``time``, ``speed``, ...) are skipped.
    path : str, optional
        Also write the figure there as PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(history, (str, os.PathLike)):
        source = os.fspath(history)
        history = _read_csv(source)
    elif isinstance(history, dict):
        source = "history"
    else:
        raise ValueError("history must be a dict of lists or a CSV path, "
                         f"got {type(history).__name__}")
    columns = {}
    for key, values in history.items():
        values = np.atleast_1d(np.asarray(values, dtype=object))
        arr = _numeric(values.ravel().tolist())
        if arr is not None:
            columns[str(key)] = arr
    if not columns:
        raise ValueError(f"{source} has no numeric columns")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        sizes = {k: len(v) for k, v in columns.items()}
        raise ValueError(f"{source}: columns differ in length {sizes}; pad with None")
    n = lengths.pop()

    x_key = next((k for k in _X_KEYS if k in columns and np.any(np.isfinite(columns[k]))), None)
    x = columns[x_key] if x_key else np.arange(n, dtype=np.float64)
    loss, acc, lr = [], [], []
    for key, values in columns.items():
        lowered = key.lower()
        if key == x_key or lowered in _X_KEYS or lowered in _IGNORED:
            continue
        if lowered in _LR_KEYS:
            lr.append(key)
        elif "loss" in lowered:
            loss.append(key)
        elif _is_accuracy(key, values):
            acc.append(key)
    if not loss and not acc:
        raise ValueError(f"{source} has no loss or accuracy column (got {sorted(columns)})")

    panels = [("loss", loss, False), ("accuracy", acc, False)]
    if lr:
        panels.append(("learning rate", lr, True))
    fig, axes = _figure(1, len(panels), figsize=(4.5 * len(panels), 4))
    for ax, (name, keys, log) in zip(axes[0], panels):
        for key in keys:
            y = columns[key]
            ok = np.isfinite(y) & np.isfinite(x)
            sparse = ok.sum() < max(2, n // 2)  # e.g. one validation point per epoch
            ax.plot(x[ok], y[ok], marker="o" if sparse else None, ms=3, lw=1.2, label=key)
        if not keys:
            ax.text(0.5, 0.5, f"no {name} column", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
        elif log and np.all(np.concatenate([columns[k][np.isfinite(columns[k])]
                                            for k in keys]) > 0):
            ax.set_yscale("log")
        ax.set_xlabel(x_key or "row")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if keys:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ----------------------------------------------------------------------------- margins
def plot_target_logits(margins=None, path=None, title="target logit vs angle", num=361):
    """Target logit ``s * psi(theta)`` over ``theta`` in ``[0, pi]`` for several margins.

    Parameters
    ----------
    margins : dict, optional
        ``name -> (s, m, a, b)``; default :data:`MARGIN_PRESETS` (cosine/NormFace,
        SphereFace, CosFace, ArcFace and combined, all with ``s = 1``).
    path : str, optional
        Also write the figure there as PNG.
    title : str, optional
    num : int
        Number of angles sampled.

    Returns
    -------
    matplotlib.figure.Figure

    See Also
    --------
    target_logit_numpy : the formula.
    """
    if margins is None:
        margins = MARGIN_PRESETS
    if not isinstance(margins, dict) or not margins:
        raise ValueError("margins must be a non-empty dict name -> (s, m, a, b)")
    theta = np.linspace(0, np.pi, int(num))
    fig, axes = _figure(figsize=(6.5, 4.5))
    ax = axes[0, 0]
    for name, params in margins.items():
        try:
            s, m, a, b = (float(v) for v in params)
        except (TypeError, ValueError):
            raise ValueError(f"margins[{name!r}] must be a tuple (s, m, a, b), "
                             f"got {params!r}") from None
        ax.plot(theta, target_logit_numpy(theta, s, m, a, b), lw=1.5, label=str(name))
    ax.set_xlim(0, np.pi)
    ax.set_xticks(np.linspace(0, np.pi, 5))
    ax.set_xticklabels(["0", "π/4", "π/2", "3π/4", "π"])
    ax.set_xlabel("θ, angle to the class centre (radians)")
    ax.set_ylabel("target logit")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return _save(fig, path)

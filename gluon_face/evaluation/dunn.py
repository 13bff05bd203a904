"""Dunn index of labelled embeddings: how far apart the classes are relative to their size.

Dunn (1973), "A Fuzzy Relative of the ISODATA Process and Its Use in Detecting
Compact Well-Separated Clusters", https://doi.org/10.1080/01969727308546046.
"""
import numpy as np
from scipy.spatial import distance

__all__ = ["dunn_index"]

_METRICS = ("euclidean", "cosine")


def check_labelled(x, labels):
    """``labels`` as an array, after checking ``x`` (N, D) is finite and ``labels`` is (N,).

    ``ValueError`` naming the argument otherwise.
    """
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings has NaN or infinite values")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(x):
        raise ValueError(f"labels must be 1-D with one entry per embedding ({len(x)}), "
                         f"got shape {labels.shape}")
    return labels


def _blocks(n, size):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _extreme_distance(a, b, metric, reduce, max_block):
    """``reduce`` (np.min or np.max) of ``cdist(a, b)`` without building it whole.

    At most ``max_block`` distances are held in memory at a time.
    """
    rows = max(1, min(len(a), int(np.sqrt(max_block))))
    cols = max(1, max_block // rows)
    best = None
    for i in _blocks(len(a), rows):
        for j in _blocks(len(b), cols):
            value = reduce(distance.cdist(a[i], b[j], metric=metric))
            best = value if best is None else reduce([best, value])
    return float(best)


def _trim(points, percentile, metric):
    """Members whose distance to the class centroid is at most the given percentile."""
    if percentile is None or percentile >= 100 or len(points) < 2:
        return points
    centroid = points.mean(axis=0, keepdims=True)
    if metric == "cosine" and not np.any(centroid):
        return points  # no direction to measure from
    r = distance.cdist(points, centroid, metric=metric)[:, 0]
    return points[r <= np.percentile(r, percentile)]


def dunn_index(embeddings, labels, percentile=95, metric="euclidean", return_parts=False,
               max_block=1 << 20):
    r"""Dunn index ``min separation / max diameter``; larger is better.

    .. math::

        DI = \frac{\min_{c \ne c'} \delta(C_c, C_{c'})}{\max_c \Delta(C_c)},\quad
        \delta(A, B) = \min_{x \in A, y \in B} d(x, y),\quad
        \Delta(A) = \max_{x, y \in A} d(x, y)

    i.e. the separation of two classes is the distance of their *closest pair of
    members* (single linkage, as in Dunn 1973) and the size of a class is its
    *diameter*, the largest distance between two of its members.  Since the
    smallest separation over class pairs is the smallest distance between any two
    points with different labels, the numerator is that.

    Robust variant (``percentile`` < 100): because one stray embedding can set the
    diameter or the separation, each class first drops the members whose distance
    to the class centroid (mean of its members, measured with ``metric``) is above
    the class's ``percentile``-th percentile of those distances (``np.percentile``,
    linear interpolation); everything above is then computed on the kept members.
    ``percentile=None`` or ``100`` gives the classic index.

    Parameters
    ----------
    embeddings : array_like, shape (N, D)
    labels : array_like, shape (N,)
        Class of every row (any hashable numpy dtype); at least two classes.
    percentile : float or None
        Trimming percentile in ``(0, 100]``; default 95.
    metric : {'euclidean', 'cosine'}
        ``'cosine'`` is ``1 - cos(x, y)`` (zero embeddings are rejected).
    return_parts : bool
        Also return the separation and the diameter.
    max_block : int
        Largest number of distances held in memory at once; classes are processed
        pair-wise in blocks, so memory stays ``O(max_block + N D)``.

    Returns
    -------
    float, or (float, float, float) if ``return_parts``
        The index (``inf`` when every kept class is a single point, ``nan`` if also
        two classes share a point), and optionally
        ``(index, min_separation, max_diameter)``.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"embeddings must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    labels = check_labelled(x, labels)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if metric == "cosine" and np.any(~np.any(x, axis=1)):
        raise ValueError("embeddings has an all-zero row: cosine distance is undefined")
    if percentile is not None and not (np.isfinite(percentile) and 0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100] or None, got {percentile!r}")
    if int(max_block) < 1:
        raise ValueError(f"max_block must be positive, got {max_block!r}")
    max_block = int(max_block)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"labels must contain at least two classes, got {len(classes)}")

    members = [_trim(x[labels == c], percentile, metric) for c in classes]
    diameter = 0.0
    for pts in members:
        if len(pts) > 1:
            diameter = max(diameter, _extreme_distance(pts, pts, metric, np.max, max_block))
    separation = np.inf
    for i in range(len(members) - 1):
        others = np.concatenate(members[i + 1:])
        separation = min(separation,
                         _extreme_distance(members[i], others, metric, np.min, max_block))
    if diameter > 0:
        index = separation / diameter
    else:
        index = np.inf if separation > 0 else np.nan
    if return_parts:
        return float(index), float(separation), float(diameter)
    return float(index)

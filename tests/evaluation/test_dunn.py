"""dunn_index against a naive O(n^2) double loop, trimming included."""
import math

import numpy as onp
import pytest

from gluon_face.evaluation import dunn_index


# ---------------------------------------------------------------- naive reference
def naive_dist(x, y, metric):
    if metric == "euclidean":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)))
    dot = sum(a * b for a, b in zip(x, y))
    nx = math.sqrt(sum(a * a for a in x))
    ny = math.sqrt(sum(b * b for b in y))
    return 1.0 - dot / (nx * ny)


def naive_percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def naive_trim(points, q, metric):
    if q is None or q >= 100 or len(points) < 2:
        return points
    dim = len(points[0])
    centroid = [sum(p[k] for p in points) / len(points) for k in range(dim)]
    r = [naive_dist(p, centroid, metric) for p in points]
    cut = naive_percentile(r, q)
    return [p for p, ri in zip(points, r) if ri <= cut]


def naive_dunn(x, labels, q=95, metric="euclidean"):
    classes = sorted(set(labels))
    members = {c: naive_trim([list(map(float, x[i])) for i in range(len(x)) if labels[i] == c],
                             q, metric) for c in classes}
    diameter = 0.0
    for c in classes:
        pts = members[c]
        for i in range(len(pts)):
            for j in range(len(pts)):
                diameter = max(diameter, naive_dist(pts[i], pts[j], metric))
    separation = math.inf
    for a in classes:
        for b in classes:
            if a == b:
                continue
            for p in members[a]:
                for r in members[b]:
                    separation = min(separation, naive_dist(p, r, metric))
    return separation / diameter, separation, diameter


def blobs(rng, num_classes=4, per_class=25, dim=3, spread=1.0, gap=6.0):
    centers = rng.randn(num_classes, dim) * gap
    x = onp.concatenate([c + spread * rng.randn(per_class, dim) for c in centers])
    labels = onp.repeat(onp.arange(num_classes), per_class)
    return x, labels


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("percentile", [None, 100, 95, 80, 50])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_naive(percentile, metric):
    rng = onp.random.RandomState(0)
    x, labels = blobs(rng, per_class=21)
    got = dunn_index(x, labels, percentile=percentile, metric=metric, return_parts=True)
    want = naive_dunn(x, labels.tolist(), percentile, metric)
    onp.testing.assert_allclose(got, want, rtol=1e-10)


def test_blocked_computation_equals_whole():
    rng = onp.random.RandomState(1)
    x, labels = blobs(rng, num_classes=3, per_class=30)
    whole = dunn_index(x, labels, return_parts=True)
    tiny = dunn_index(x, labels, return_parts=True, max_block=7)
    onp.testing.assert_allclose(tiny, whole, rtol=1e-12)


def test_trimming_drops_an_outlier():
    """One stray point inflates its class diameter and wrecks the classic index;
    the 95th-percentile trim removes it."""
    rng = onp.random.RandomState(2)
    x, labels = blobs(rng, num_classes=3, per_class=40, spread=0.5, gap=10.0)
    x_out = x.copy()
    x_out[0] += 50.0
    classic_clean = dunn_index(x, labels, percentile=None)
    classic_out = dunn_index(x_out, labels, percentile=None)
    robust_out = dunn_index(x_out, labels, percentile=95)
    assert classic_out < 0.5 * classic_clean
    assert robust_out == pytest.approx(naive_dunn(x_out, labels.tolist(), 95)[0], rel=1e-10)
    assert robust_out > 2 * classic_out


def test_separation_over_diameter_on_a_line():
    # class 0 at {0, 1}, class 1 at {4, 6}: separation 3, diameter 2
    x = onp.array([[0.0], [1.0], [4.0], [6.0]])
    di, sep, diam = dunn_index(x, [0, 0, 1, 1], percentile=None, return_parts=True)
    assert (di, sep, diam) == (1.5, 3.0, 2.0)
    # the labels may be strings, in any order
    assert dunn_index(x, ["b", "b", "a", "a"], percentile=None) == 1.5


def test_single_point_classes():
    x = onp.array([[0.0, 0.0], [3.0, 4.0]])
    assert dunn_index(x, [0, 1]) == math.inf


@pytest.mark.parametrize("kwargs,match", [
    (dict(embeddings=onp.zeros((4,)), labels=[0, 0, 1, 1]), "2-D"),
    (dict(embeddings=onp.zeros((4, 2)), labels=[0, 0, 0, 0]), "two classes"),
    (dict(embeddings=onp.zeros((4, 2)), labels=[0, 1]), "one entry per embedding"),
    (dict(embeddings=onp.full((4, 2), onp.inf), labels=[0, 0, 1, 1]), "NaN or infinite"),
    (dict(embeddings=onp.ones((4, 2)), labels=[0, 0, 1, 1], percentile=0), "percentile"),
    (dict(embeddings=onp.ones((4, 2)), labels=[0, 0, 1, 1], metric="l1"), "metric"),
    (dict(embeddings=onp.zeros((4, 2)), labels=[0, 0, 1, 1], metric="cosine"), "all-zero"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dunn_index(**kwargs)

"""The verification protocol against a deliberately naive per-pair numpy reimplementation.

The reference below follows insightface's ``verification.py`` step by step, one
pair and one threshold at a time, with its own fold split (no scikit-learn), its
own normalisation and its own interpolation (no SciPy).
"""
import json
import math

import numpy as onp
import pytest

from gluon_face.evaluation import (
    VerificationResult,
    combine_flip,
    l2_normalize,
    optimistic_accuracy,
    pair_distances,
    verification_accuracy,
)

THRESHOLDS = [i * 0.01 for i in range(400)]        # arange(0, 4, 0.01)
VAL_THRESHOLDS = [i * 0.001 for i in range(4000)]  # arange(0, 4, 0.001)


# ---------------------------------------------------------------- naive reference
def naive_unit(v):
    n = math.sqrt(sum(float(a) * float(a) for a in v))
    return [float(a) / n for a in v] if n > 0 else [0.0 for _ in v]


def naive_distances(emb):
    out = []
    for i in range(len(emb) // 2):
        u, v = naive_unit(emb[2 * i]), naive_unit(emb[2 * i + 1])
        out.append(sum((a - b) ** 2 for a, b in zip(u, v)))
    return out


def naive_folds(n, k):
    """Consecutive folds, the first ``n % k`` one larger (KFold(k, shuffle=False))."""
    folds, start = [], 0
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        test = list(range(start, start + size))
        train = [j for j in range(n) if j < start or j >= start + size]
        folds.append((train, test))
        start += size
    return folds


def naive_accuracy(t, dist, same):
    tp = fp = tn = fn = 0
    for d, s in zip(dist, same):
        pred = d < t
        if pred and s:
            tp += 1
        elif pred and not s:
            fp += 1
        elif not pred and not s:
            tn += 1
        else:
            fn += 1
    tpr = 0.0 if tp + fn == 0 else tp / (tp + fn)
    fpr = 0.0 if fp + tn == 0 else fp / (fp + tn)
    return tpr, fpr, (tp + tn) / len(dist)


def naive_val_far(t, dist, same):
    ta = sum(1 for d, s in zip(dist, same) if d < t and s)
    fa = sum(1 for d, s in zip(dist, same) if d < t and not s)
    n_same = sum(1 for s in same if s)
    n_diff = len(same) - n_same
    return (ta / n_same if n_same else 0.0), (fa / n_diff if n_diff else 0.0)


def naive_val_at_far(dist, same, thresholds, target):
    """``(TAR, FAR, threshold)`` at FAR = target on the ROC of these pairs.

    The ROC runs from the origin (threshold 0) through (FAR(t), TAR(t)) for every
    threshold in increasing order, one threshold at a time; walk it and interpolate
    TAR and the threshold linearly between the last point with FAR <= target and the
    point after it (past the last point: that point).
    """
    points = [(0.0, 0.0, 0.0)] + [naive_val_far(t, dist, same)[::-1] + (t,)
                                   for t in thresholds]
    last = None
    for i, (f, _, _) in enumerate(points):
        if f <= target:
            last = i  # the last, i.e. highest, point of a vertical step wins
    if last == len(points) - 1:
        return points[-1][1], points[-1][0], points[-1][2]
    (f0, v0, t0), (f1, v1, t1) = points[last], points[last + 1]
    w = (target - f0) / (f1 - f0)
    return v0 + (v1 - v0) * w, target, t0 + (t1 - t0) * w


def naive_protocol(emb, same, k=10, far_target=1e-3):
    dist = naive_distances(emb)
    same = [bool(s) for s in same]
    accs, thrs, vals, fars, tprs, fprs = [], [], [], [], [], []
    for train, test in naive_folds(len(dist), k):
        d_tr, s_tr = [dist[i] for i in train], [same[i] for i in train]
        d_te, s_te = [dist[i] for i in test], [same[i] for i in test]
        best_acc, best_t = -1.0, None
        for t in THRESHOLDS:
            acc = naive_accuracy(t, d_tr, s_tr)[2]
            if acc > best_acc:  # strict: the first (smallest) threshold wins ties
                best_acc, best_t = acc, t
        accs.append(naive_accuracy(best_t, d_te, s_te)[2])
        thrs.append(best_t)
        rates = [naive_accuracy(t, d_te, s_te) for t in THRESHOLDS]
        tprs.append([r[0] for r in rates])
        fprs.append([r[1] for r in rates])
    # VAL@FAR: the ROC of all pairs; the folds' TAR/FAR at its operating threshold
    val, far, t_val = naive_val_at_far(dist, same, VAL_THRESHOLDS, far_target)
    for _, test in naive_folds(len(dist), k):
        v, f = naive_val_far(t_val, [dist[i] for i in test], [same[i] for i in test])
        vals.append(v)
        fars.append(f)

    def mean(x):
        return sum(x) / len(x)

    def std(x):
        m = mean(x)
        return math.sqrt(sum((a - m) ** 2 for a in x) / len(x))

    return {"accuracy": mean(accs), "accuracy_std": std(accs), "val": val,
            "val_std": std(vals), "far": far, "val_threshold": t_val, "threshold": mean(thrs),
            "fold_val": vals, "fold_far": fars,
            "fold_accuracy": accs, "fold_threshold": thrs,
            "tpr": [mean(c) for c in zip(*tprs)], "fpr": [mean(c) for c in zip(*fprs)]}


def naive_optimistic(emb, same):
    dist = naive_distances(emb)
    best_acc, best_t = -1.0, None
    for t in THRESHOLDS:
        acc = naive_accuracy(t, dist, same)[2]
        if acc > best_acc:
            best_acc, best_t = acc, t
    return best_acc, best_t


def make_pairs(rng, num_pairs, dim=8, noise=0.8, same_rate=0.5):
    """Embeddings where "same" pairs are noisy copies of one vector."""
    same = rng.rand(num_pairs) < same_rate
    emb = onp.zeros((2 * num_pairs, dim))
    for i in range(num_pairs):
        a = rng.randn(dim)
        emb[2 * i] = a + noise * rng.randn(dim)
        emb[2 * i + 1] = (a if same[i] else rng.randn(dim)) + noise * rng.randn(dim)
    return emb * rng.uniform(0.5, 20.0, size=(2 * num_pairs, 1)), same


# ---------------------------------------------------------------- protocol
@pytest.mark.parametrize("num_pairs,noise,seed,far_target", [
    (200, 0.8, 1, 1e-3), (137, 0.6, 2, 0.05), (64, 1.0, 3, 0.2), (300, 1.2, 4, 0.02)])
def test_verification_matches_naive(num_pairs, noise, seed, far_target):
    rng = onp.random.RandomState(seed)
    emb, same = make_pairs(rng, num_pairs, noise=noise)
    want = naive_protocol(emb, same, far_target=far_target)
    if far_target > 1e-3:  # the case must reach the interpolation, not VAL = 0
        assert 0 < want["val"] < 1 and 0 < want["far"]
    got = verification_accuracy(emb, same, far_target=far_target)
    assert got.far_target == far_target
    assert isinstance(got, VerificationResult)
    assert got.nfolds == 10 and got.num_pairs == num_pairs
    for key in ("accuracy", "accuracy_std", "val", "val_std", "far", "threshold",
                "val_threshold"):
        assert getattr(got, key) == pytest.approx(want[key], abs=1e-9), key
    onp.testing.assert_allclose(got.fold_val, want["fold_val"], atol=1e-12)
    onp.testing.assert_allclose(got.fold_far, want["fold_far"], atol=1e-12)
    onp.testing.assert_allclose(got.fold_accuracy, want["fold_accuracy"], atol=1e-12)
    onp.testing.assert_allclose(got.fold_threshold, want["fold_threshold"], atol=1e-12)
    onp.testing.assert_allclose(got.tpr, want["tpr"], atol=1e-12)
    onp.testing.assert_allclose(got.fpr, want["fpr"], atol=1e-12)
    assert got.tpr.shape == (400,)
    # AUC of the mean ROC by the trapezoid rule over FPR
    order = onp.lexsort((got.tpr, got.fpr))
    f, t = got.fpr[order], got.tpr[order]
    assert got.auc == pytest.approx(float(onp.sum(onp.diff(f) * (t[1:] + t[:-1]) / 2)), abs=1e-9)


def test_separable_pairs_score_perfectly():
    rng = onp.random.RandomState(4)
    emb, same = make_pairs(rng, 100, noise=0.01)
    res = verification_accuracy(emb, same)
    assert res.accuracy == 1.0 and res.accuracy_std == 0.0
    assert res.val == 1.0 and res.far == pytest.approx(1e-3, abs=1e-15)  # TAR 1 up to 1e-3
    assert res.auc > 0.99


def _pairs_at(distances):
    """Unit 2-D embeddings whose pair ``i`` has squared distance ``distances[i]``."""
    emb = []
    for d in distances:
        angle = math.acos(1 - d / 2)
        emb += [[1.0, 0.0], [math.cos(angle), math.sin(angle)]]
    return onp.array(emb)


def test_val_interpolates_between_the_bracketing_thresholds():
    """One set of 4 different and 3 same pairs, twice (two identical folds).

    The same pair at 1.0003 and the different pair at 1.0004 both enter between the
    grid thresholds 1.000 and 1.001: there FAR steps from 1/4 to 2/4 and TAR from
    2/3 to 3/3.  VAL@FAR=0.3 lies on that segment, a fifth of the way up.
    """
    dist = [0.5, 0.2, 1.0004, 0.7, 1.5, 1.0003, 2.0]
    same = [False, True, False, True, False, True, False]
    emb, flags = _pairs_at(dist + dist), same + same
    onp.testing.assert_allclose(pair_distances(emb), dist + dist, atol=1e-12)
    res = verification_accuracy(emb, flags, nfolds=2, far_target=0.3)
    want = 2 / 3 + (1 / 3) * (0.3 - 0.25) / (0.5 - 0.25)
    assert res.val == pytest.approx(want, abs=1e-12) and res.far == 0.3
    # the operating point's threshold, a fifth of the way from 1.000 to 1.001, where
    # each fold accepts the same pairs at 0.2 and 0.7 and the different pair at 0.5
    assert res.val_threshold == pytest.approx(1.0002, abs=1e-12)
    onp.testing.assert_allclose(res.fold_val, [2 / 3, 2 / 3], atol=1e-12)
    onp.testing.assert_allclose(res.fold_far, [1 / 4, 1 / 4], atol=1e-12)
    assert res.val_std == 0.0
    assert naive_val_at_far(dist, same, VAL_THRESHOLDS, 0.3)[:2] == \
        pytest.approx((want, 0.3), abs=1e-12)
    # a FAR level hit exactly: the highest point of the vertical step at FAR 1/4
    assert verification_accuracy(emb, flags, nfolds=2, far_target=0.25).val == \
        pytest.approx(2 / 3, abs=1e-12)
    # below 1/4: between t = 0.500 (FAR 0, TAR 1/3: only the same pair at 0.2 is in)
    # and t = 0.501 (the different pair at 0.5 enters, TAR still 1/3)
    assert verification_accuracy(emb, flags, nfolds=2, far_target=0.1).val == \
        pytest.approx(1 / 3, abs=1e-12)
    # a target above every FAR of the grid reads the last point
    top = verification_accuracy(emb, flags, nfolds=2, far_target=1.0)
    assert top.val == 1.0 and top.far == 1.0


def test_folds_are_consecutive_not_shuffled():
    """Pairs 0..9 wrong in fold 0 only: exactly one fold loses accuracy."""
    rng = onp.random.RandomState(5)
    emb, same = make_pairs(rng, 100, noise=0.01)
    same = same.copy()
    same[:10] = ~same[:10]
    res = verification_accuracy(emb, same)
    assert res.fold_accuracy[0] == 0.0
    onp.testing.assert_array_equal(res.fold_accuracy[1:], 1.0)
    assert res.accuracy == pytest.approx(0.9)
    assert res.accuracy_std == pytest.approx(onp.std([0.0] + [1.0] * 9))


def test_scale_invariant_and_nfolds():
    rng = onp.random.RandomState(6)
    emb, same = make_pairs(rng, 90)
    a = verification_accuracy(emb, same, nfolds=5)
    b = verification_accuracy(emb * 1e3, same, nfolds=5)
    assert a.nfolds == 5 and len(a.fold_accuracy) == 5
    assert a.accuracy == pytest.approx(b.accuracy, abs=1e-12)
    want = naive_protocol(emb, same, k=5)
    assert a.accuracy == pytest.approx(want["accuracy"], abs=1e-12)


def test_as_dict_is_json_and_repr():
    rng = onp.random.RandomState(7)
    emb, same = make_pairs(rng, 40)
    res = verification_accuracy(emb, same)
    d = json.loads(json.dumps(res.as_dict()))
    assert d["accuracy"] == res.accuracy and len(d["tpr"]) == 400
    assert "accuracy=" in repr(res)


def test_pair_distances_and_normalize():
    rng = onp.random.RandomState(8)
    emb = rng.randn(10, 5)
    onp.testing.assert_allclose(pair_distances(emb), naive_distances(emb), atol=1e-12)
    n = l2_normalize(onp.vstack([emb, onp.zeros((1, 5))]))
    onp.testing.assert_allclose(onp.linalg.norm(n[:-1], axis=1), 1.0)
    onp.testing.assert_array_equal(n[-1], 0.0)


# ---------------------------------------------------------------- flip, optimistic
def test_combine_flip_matches_naive():
    rng = onp.random.RandomState(9)
    e, ef = rng.randn(12, 6), rng.randn(12, 6)
    want = [naive_unit([a + b for a, b in zip(e[i], ef[i])]) for i in range(12)]
    onp.testing.assert_allclose(combine_flip(e, ef), want, atol=1e-12)
    # the flip test of an embedding with itself is just its normalisation
    onp.testing.assert_allclose(combine_flip(e, e), [naive_unit(r) for r in e], atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        combine_flip(e, ef[:5])


def test_optimistic_matches_naive():
    rng = onp.random.RandomState(10)
    emb, same = make_pairs(rng, 120)
    acc, t = optimistic_accuracy(emb, same)
    want_acc, want_t = naive_optimistic(emb, same)
    assert acc == pytest.approx(want_acc, abs=1e-12)
    assert t == pytest.approx(want_t, abs=1e-12)


def test_optimistic_beats_proper_on_random_embeddings():
    """Random embeddings carry no information: 10-fold stays near chance, the
    threshold fitted on the scored pairs does not."""
    opt, proper = [], []
    for seed in range(20):
        rng = onp.random.RandomState(100 + seed)
        emb = rng.randn(200, 16)
        same = rng.rand(100) < 0.5
        o, _ = optimistic_accuracy(emb, same)
        r = verification_accuracy(emb, same)
        assert o >= r.accuracy, seed
        opt.append(o)
        proper.append(r.accuracy)
    assert onp.mean(opt) > onp.mean(proper) + 0.03
    assert onp.mean(opt) > 0.55
    assert abs(onp.mean(proper) - 0.5) < 0.05


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("emb,same,match", [
    (onp.zeros((5, 3)), [True, False], "even number of rows"),
    (onp.ones((20, 3)), [True] * 9, "issame has 9 entries"),
    (onp.ones(20), [True] * 10, "2-D"),
    (onp.full((20, 3), onp.nan), [True] * 10, "NaN"),
    (onp.ones((20, 3)), [2] * 10, "booleans"),
])
def test_bad_input(emb, same, match):
    with pytest.raises(ValueError, match=match):
        verification_accuracy(emb, same)


def test_bad_nfolds_and_far():
    emb, same = make_pairs(onp.random.RandomState(11), 20)
    with pytest.raises(ValueError, match="nfolds"):
        verification_accuracy(emb, same, nfolds=21)
    with pytest.raises(ValueError, match="nfolds"):
        verification_accuracy(emb, same, nfolds=1)
    with pytest.raises(ValueError, match="far_target"):
        verification_accuracy(emb, same, far_target=0)


def test_strict_less_than_and_smallest_threshold_on_ties():
    """Same pairs at distance exactly 0, different pairs at exactly 2: "same" needs
    ``d < t``, so the first perfect threshold is 0.01, not 0 (and not 2.0)."""
    same = onp.array([True, False] * 20)
    emb = []
    for s in same:
        emb += [[3.0, 0.0], [5.0, 0.0] if s else [0.0, 2.0]]
    emb = onp.array(emb)
    onp.testing.assert_array_equal(pair_distances(emb), onp.where(same, 0.0, 2.0))
    acc, t = optimistic_accuracy(emb, same)
    assert (acc, t) == (1.0, 0.01)
    res = verification_accuracy(emb, same)
    onp.testing.assert_array_equal(res.fold_threshold, 0.01)
    assert res.accuracy == 1.0
    # at t = 2.0 exactly the different pairs (d = 2) are still rejected
    k = int(onp.flatnonzero(onp.isclose(res.thresholds, 2.0))[0])
    assert res.fpr[k] == 0.0 and res.fpr[k + 1] == 1.0

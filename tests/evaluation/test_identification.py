"""Open-set metrics against a deliberately naive per-pair / per-probe pure-Python reference.

The reference scores every pair and every probe in Python loops, with its own
normalisation, its own float32 rounding (``struct``), its own count at every
threshold and its own linear interpolation: no vectorised numpy.  Hand-made sets
of exactly representable vectors pin the definitions (ties, ranks, interpolation)
with numbers worked out on paper.
"""
import json
import math
import struct

import numpy as onp
import pytest

from gluon_face.evaluation import (
    AllPairsResult,
    IdentificationResult,
    all_pairs_verification,
    identification,
    split_gallery_probes,
)

INF = float("inf")


# ---------------------------------------------------------------- naive reference
def naive_unit(v):
    n = math.sqrt(sum(float(a) * float(a) for a in v))
    return [float(a) / n for a in v] if n > 0 else [0.0 for _ in v]


def naive_f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def naive_cos(u, v):
    """Cosine of two unit vectors, rounded to float32 as the library stores scores."""
    return naive_f32(sum(a * b for a, b in zip(u, v)))


def naive_interp(xs, ys, x):
    """y between the last vertex with xs <= x and the next one (ys[-1] past the end)."""
    j = 0
    for k in range(len(xs)):
        if xs[k] <= x:
            j = k
    if j == len(xs) - 1:
        return ys[j]
    return ys[j] + (ys[j + 1] - ys[j]) * (x - xs[j]) / (xs[j + 1] - xs[j])


def naive_smallest_threshold(thresholds, rates, target):
    """Smallest threshold whose rate is at most the target."""
    return min(t for t, r in zip(thresholds, rates) if r <= target)


def naive_prune(thresholds, far, tar):
    """Drop vertices inside a horizontal or a vertical run of the curve."""
    keep = [0]
    for k in range(1, len(thresholds) - 1):
        flat = tar[k - 1] == tar[k] == tar[k + 1]
        upright = far[k - 1] == far[k] == far[k + 1]
        if not (flat or upright):
            keep.append(k)
    keep.append(len(thresholds) - 1)
    return ([thresholds[k] for k in keep], [far[k] for k in keep], [tar[k] for k in keep])


def naive_all_pairs(emb, labels, far_targets):
    units = [naive_unit(row) for row in emb]
    labels = list(labels)
    genuine, impostor = [], []
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            s = naive_cos(units[i], units[j])
            if labels[i] == labels[j]:
                genuine.append(s)
            else:
                impostor.append(s)
    thresholds = [INF] + sorted(set(genuine) | set(impostor), reverse=True)
    far, tar = [], []
    for t in thresholds:
        far.append(sum(1 for s in impostor if s >= t) / len(impostor))
        tar.append(sum(1 for s in genuine if s >= t) / len(genuine))
    auc = sum((far[k + 1] - far[k]) * (tar[k + 1] + tar[k]) / 2 for k in range(len(far) - 1))
    return {
        "num_genuine": len(genuine), "num_impostor": len(impostor), "genuine": genuine,
        "impostor": impostor, "full": (thresholds, far, tar),
        "pruned": naive_prune(thresholds, far, tar), "auc": auc,
        "tar_at_far": {f: naive_interp(far, tar, f) for f in far_targets},
        "threshold_at_far": {f: naive_smallest_threshold(thresholds, far, f)
                             for f in far_targets},
        "reliable": {f: f * len(impostor) >= 10 for f in far_targets},
    }


def naive_identification(gallery, gallery_labels, probes, probe_labels, fpir_targets):
    g_units = [naive_unit(row) for row in gallery]
    identities = sorted(set(gallery_labels))
    ranks, tops, trues, mated = [], [], [], []
    for row, label in zip(probes, probe_labels):
        u = naive_unit(row)
        per_id = {}
        for g, gl in zip(g_units, gallery_labels):
            s = naive_cos(u, g)
            if gl not in per_id or s > per_id[gl]:
                per_id[gl] = s
        tops.append(max(per_id.values()))
        is_mated = label in per_id
        mated.append(is_mated)
        if is_mated:
            true = per_id[label]
            ranks.append(1 + sum(1 for c in identities if c != label and per_id[c] >= true))
            trues.append(true)
        else:
            ranks.append(None)
            trues.append(None)
    num_mated = sum(mated)
    num_nonmated = len(mated) - num_mated
    cmc = [sum(1 for r in ranks if r is not None and r <= k) / num_mated
           for k in range(1, len(identities) + 1)]
    hits = [s for s, r in zip(trues, ranks) if r == 1]
    false = [s for s, m in zip(tops, mated) if not m]
    thresholds = [INF] + sorted(set(hits) | set(false), reverse=True)
    tpir = [sum(1 for s in hits if s >= t) / num_mated for t in thresholds]
    out = {"cmc": cmc, "num_mated": num_mated, "num_nonmated": num_nonmated,
           "thresholds": thresholds, "tpir": tpir, "ranks": ranks}
    if num_nonmated:
        fpir = [sum(1 for s in false if s >= t) / num_nonmated for t in thresholds]
        out.update(fpir=fpir,
                   tpir_at_fpir={f: naive_interp(fpir, tpir, f) for f in fpir_targets},
                   threshold_at_fpir={f: naive_smallest_threshold(thresholds, fpir, f)
                                      for f in fpir_targets},
                   reliable={f: f * num_nonmated >= 10 for f in fpir_targets})
    return out


# ---------------------------------------------------------------- data
def make_set(rng, sizes, dim=8, noise=0.7, duplicates=0):
    """Class centres plus noise, rows shuffled and rescaled; ``duplicates`` rows are
    exact copies of other rows (possibly of another identity), so scores tie."""
    labels, emb = [], []
    for c, size in enumerate(sizes):
        centre = rng.randn(dim)
        for _ in range(size):
            emb.append(centre + noise * rng.randn(dim))
            labels.append(c)
    emb, labels = onp.array(emb), onp.array(labels)
    for _ in range(duplicates):
        i, j = rng.choice(len(emb), 2, replace=False)
        emb[j] = emb[i]
    order = rng.permutation(len(emb))
    return emb[order], labels[order]


SIZES = [5, 4, 6, 3, 1, 7, 2, 5, 4, 6, 5]  # 48 images, one single-image identity


def check_all_pairs(res, want, far_targets):
    assert isinstance(res, AllPairsResult)
    assert (res.num_genuine, res.num_impostor) == (want["num_genuine"], want["num_impostor"])
    thresholds, far, tar = want["pruned"]
    onp.testing.assert_array_equal(res.thresholds, thresholds)
    onp.testing.assert_allclose(res.far, far, rtol=0, atol=1e-15)
    onp.testing.assert_allclose(res.tar, tar, rtol=0, atol=1e-15)
    assert res.auc == pytest.approx(want["auc"], abs=1e-12)
    assert res.far_targets == tuple(far_targets)
    for f in far_targets:
        assert res.tar_at_far[f] == pytest.approx(want["tar_at_far"][f], abs=1e-12), f
        assert res.threshold_at_far[f] == want["threshold_at_far"][f], f
        assert res.reliable[f] is want["reliable"][f], f


# ---------------------------------------------------------------- all pairs
@pytest.mark.parametrize("seed,noise,duplicates,block_size,far_targets", [
    (0, 0.7, 4, 7, (0.01, 0.05, 0.3)),
    (1, 1.2, 6, 5, (1e-3, 0.02, 0.1, 1.0)),
    (2, 0.4, 0, None, (0.005, 0.2)),
])
def test_all_pairs_matches_naive(seed, noise, duplicates, block_size, far_targets):
    rng = onp.random.RandomState(seed)
    emb, labels = make_set(rng, SIZES, noise=noise, duplicates=duplicates)
    emb = emb * rng.uniform(0.5, 5.0, size=(len(emb), 1))  # the scale must not matter
    want = naive_all_pairs(emb, labels, far_targets)
    # the case is not trivial: the TARs are strictly between 0 and 1 somewhere
    assert any(0 < v < 1 for v in want["tar_at_far"].values())
    res = all_pairs_verification(emb, labels, far_targets=far_targets, block_size=block_size)
    check_all_pairs(res, want, far_targets)
    # every distinct score is a vertex without pruning, and pruning changed nothing else
    full = all_pairs_verification(emb, labels, far_targets=far_targets, block_size=block_size,
                                  drop_intermediate=False)
    thresholds, far, tar = want["full"]
    onp.testing.assert_array_equal(full.thresholds, thresholds)
    onp.testing.assert_allclose(full.far, far, rtol=0, atol=1e-15)
    onp.testing.assert_allclose(full.tar, tar, rtol=0, atol=1e-15)
    assert len(full.far) > len(res.far)
    assert full.auc == pytest.approx(res.auc, abs=1e-12)
    assert full.tar_at_far == pytest.approx(res.tar_at_far, abs=1e-12)
    assert full.threshold_at_far == res.threshold_at_far


def test_all_pairs_ties_make_sloped_steps():
    """Duplicated rows across identities tie genuine with impostor scores: the ROC
    then has steps where FAR and TAR move together, and the reference agrees."""
    rng = onp.random.RandomState(3)
    emb, labels = make_set(rng, [4, 4, 4, 4], noise=0.5)
    emb[1] = emb[0]
    other = int(onp.flatnonzero(labels != labels[0])[0])
    emb[other] = emb[0]  # a copy under another identity
    want = naive_all_pairs(emb, labels, (0.1,))
    res = all_pairs_verification(emb, labels, far_targets=(0.1,), block_size=3)
    check_all_pairs(res, want, (0.1,))
    sloped = (onp.diff(res.far) > 0) & (onp.diff(res.tar) > 0)
    assert sloped.any()


def test_all_pairs_hand_example():
    """Exactly representable unit vectors, worked out on paper.

    genuine: x0.x1 = 0.5, x2.x3 = 1; impostor: two at 0 and six at 0.5.
    ROC vertices (thr: FAR, TAR): inf: (0, 0); 1: (0, 1/2); 0.5: (6/8, 1); 0: (1, 1).
    """
    h = 0.5
    emb = [[1, 0, 0, 0], [h, h, h, h], [0, 1, 0, 0], [0, 1, 0, 0], [h, h, h, -h]]
    res = all_pairs_verification(emb, ["a", "a", "b", "b", "c"], far_targets=(0.1, 0.5, 0.75, 1))
    assert (res.num_genuine, res.num_impostor) == (2, 8)
    onp.testing.assert_array_equal(res.thresholds, [INF, 1.0, 0.5, 0.0])
    onp.testing.assert_array_equal(res.far, [0, 0, 0.75, 1])
    onp.testing.assert_array_equal(res.tar, [0, 0.5, 1, 1])
    assert res.auc == pytest.approx(0.75 * 1.5 / 2 + 0.25)
    # on the sloped segment (ties at 0.5) the value is interpolated, not attained
    assert res.tar_at_far[0.1] == pytest.approx(0.5 + 0.5 * 0.1 / 0.75)
    assert res.tar_at_far[0.5] == pytest.approx(0.5 + 0.5 * 0.5 / 0.75)
    assert res.tar_at_far[0.75] == 1.0 and res.tar_at_far[1.0] == 1.0
    assert res.threshold_at_far == {0.1: 1.0, 0.5: 1.0, 0.75: 0.5, 1.0: 0.0}
    assert res.reliable == {0.1: False, 0.5: False, 0.75: False, 1.0: False}


def test_all_pairs_vertical_end_and_infinite_threshold():
    """The only genuine pair is the lowest score: the ROC runs right along TAR 0, then
    up at FAR 1, where the highest vertex is read; FAR 1/2 needs threshold +inf."""
    res = all_pairs_verification([[1, 0], [-1, 0], [0, 1]], [7, 7, 8],
                                 far_targets=(0.5, 1.0))
    onp.testing.assert_array_equal(res.thresholds, [INF, 0.0, -1.0])
    onp.testing.assert_array_equal(res.far, [0, 1, 1])
    onp.testing.assert_array_equal(res.tar, [0, 0, 1])
    assert res.auc == 0.0
    assert res.tar_at_far == {0.5: 0.0, 1.0: 1.0}
    assert res.threshold_at_far == {0.5: INF, 1.0: -1.0}


def test_all_pairs_perfect_separation():
    """Near one-hot class centres: every genuine score beats every impostor score."""
    rng = onp.random.RandomState(4)
    labels = onp.repeat(onp.arange(8), 5)
    emb = 10 * onp.eye(16)[labels] + 0.01 * rng.randn(len(labels), 16)
    targets = (1e-4, 1e-2, 0.5, 1.0)
    res = all_pairs_verification(emb, labels, far_targets=targets, block_size=6)
    want = naive_all_pairs(emb, labels, targets)
    check_all_pairs(res, want, targets)
    lowest_genuine, lowest = min(want["genuine"]), min(want["impostor"])
    assert lowest_genuine > max(want["impostor"])
    onp.testing.assert_array_equal(res.far, [0, 0, 1])
    onp.testing.assert_array_equal(res.tar, [0, 1, 1])
    onp.testing.assert_array_equal(res.thresholds, [INF, lowest_genuine, lowest])
    assert res.auc == 1.0
    assert all(v == 1.0 for v in res.tar_at_far.values())
    # 1e-4 is below 1 / num_impostor (700 pairs): TAR at FAR 0, flagged as unmeasured
    assert res.num_impostor == 700 and 1e-4 < 1 / res.num_impostor
    assert res.threshold_at_far[1e-4] == lowest_genuine
    assert res.threshold_at_far[1.0] == lowest
    assert res.reliable == {1e-4: False, 1e-2: False, 0.5: True, 1.0: True}
    # reliable means at least ten impostor pairs allowed above the threshold
    edge = all_pairs_verification(emb, labels, far_targets=(9.5 / 700, 10 / 700)).reliable
    assert edge == {9.5 / 700: False, 10 / 700: True}


def test_all_pairs_random_embeddings_give_chance():
    """No information: genuine and impostor scores share one distribution, so
    TAR(FAR = f) ~ f and AUC ~ 0.5 (1,800 genuine pairs: sampling sd < 0.012)."""
    rng = onp.random.RandomState(5)
    labels = onp.repeat(onp.arange(40), 10)
    res = all_pairs_verification(rng.randn(400, 32), labels, far_targets=(0.05, 0.2, 0.5),
                                 block_size=64)
    assert (res.num_genuine, res.num_impostor) == (1800, 78000)
    for f, tar in res.tar_at_far.items():
        assert abs(tar - f) < 0.05, (f, tar)
    assert abs(res.auc - 0.5) < 0.03
    # the same labels with structure are far from chance
    centres = rng.randn(40, 32)
    good = all_pairs_verification(centres[labels] + 0.5 * rng.randn(400, 32), labels,
                                  far_targets=(0.05,))
    assert good.tar_at_far[0.05] > 0.9


def test_all_pairs_block_size_and_label_kinds_do_not_matter():
    rng = onp.random.RandomState(6)
    emb, labels = make_set(rng, SIZES, duplicates=3)
    ref = all_pairs_verification(emb, labels)
    names = onp.array([f"id{c:02d}" for c in labels])
    for other in (all_pairs_verification(emb, labels, block_size=1),
                  all_pairs_verification(emb, labels, block_size=len(emb) + 5),
                  all_pairs_verification(emb, labels.astype(float)),
                  all_pairs_verification(emb, names),
                  all_pairs_verification(emb.astype(onp.float32) * 3, list(labels))):
        onp.testing.assert_array_equal(other.far, ref.far)
        onp.testing.assert_array_equal(other.tar, ref.tar)
        assert other.tar_at_far == ref.tar_at_far


def test_all_pairs_as_dict_and_repr():
    rng = onp.random.RandomState(7)
    emb, labels = make_set(rng, SIZES)
    res = all_pairs_verification(emb, labels)
    d = json.loads(json.dumps(res.as_dict()))
    assert d["num_genuine"] == res.num_genuine and len(d["far"]) == len(res.far)
    assert d["far_targets"] == [1e-2, 1e-3, 1e-4]
    assert "tar_at_far=" in repr(res)
    with pytest.raises(AttributeError):
        res.auc = 0.0  # frozen


@pytest.mark.parametrize("emb,labels,kwargs,match", [
    (onp.ones((4, 3)), [0, 1, 2, 3], {}, "no genuine pair"),
    (onp.ones((4, 3)), [5, 5, 5, 5], {}, "no impostor pair"),
    (onp.ones((4, 3)), [0, 0, 1], {}, "labels has 3 entries"),
    (onp.ones((4, 3)), [[0, 0], [1, 1]], {}, "1-D"),
    (onp.ones(4), [0, 0, 1, 1], {}, "2-D"),
    (onp.full((4, 3), onp.nan), [0, 0, 1, 1], {}, "NaN"),
    (onp.ones((4, 3)), [True, True, False, False], {}, "integers or strings"),
    (onp.ones((4, 3)), [0.5, 0.5, 1, 1], {}, "integers or strings"),
    (onp.ones((4, 3)), [0, 0, 1, 1], {"far_targets": (0.1, 0)}, "far_targets"),
    (onp.ones((4, 3)), [0, 0, 1, 1], {"far_targets": 1.5}, "far_targets"),
    (onp.ones((4, 3)), [0, 0, 1, 1], {"block_size": 0}, "block_size"),
])
def test_all_pairs_bad_input(emb, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        all_pairs_verification(emb, labels, **kwargs)


# ---------------------------------------------------------------- gallery / probe split
def test_split_is_deterministic_disjoint_and_covers():
    rng = onp.random.RandomState(8)
    labels = onp.repeat(onp.arange(30), rng.randint(1, 6, size=30))
    g1, p1 = split_gallery_probes(labels, seed=3)
    g2, p2 = split_gallery_probes(labels, seed=3)
    onp.testing.assert_array_equal(g1, g2)
    onp.testing.assert_array_equal(p1, p2)
    g3, _ = split_gallery_probes(labels, seed=4)
    assert not onp.array_equal(g1, g3)
    assert g1.dtype == p1.dtype == onp.int64
    assert list(g1) == sorted(g1) and list(p1) == sorted(p1)
    assert not set(g1) & set(p1)
    assert sorted(set(g1) | set(p1)) == list(range(len(labels)))


@pytest.mark.parametrize("fraction,per_identity", [(0.25, 1), (0.75, 2), (1.0, 3)])
def test_split_follows_the_documented_rule(fraction, per_identity):
    # 10 eligible identities of 2..6 images, and three single-image identities
    sizes = [2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 1, 1, 1]
    labels = onp.array([f"p{c}" for c, n in enumerate(sizes) for _ in range(n)])
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=fraction,
                                           gallery_per_identity=per_identity, seed=11)
    enrolled = sorted(set(labels[gallery]))
    assert len(enrolled) == math.floor(fraction * 10 + 0.5)  # half up: 0.25 -> 3, not 2
    for c, n in enumerate(sizes):
        name = f"p{c}"
        in_gallery = sum(1 for i in gallery if labels[i] == name)
        in_probes = sum(1 for i in probes if labels[i] == name)
        if name in enrolled:
            assert n >= 2
            assert in_gallery == min(per_identity, n - 1)
            assert in_probes == n - in_gallery >= 1  # every enrolled identity is probed
        else:
            assert (in_gallery, in_probes) == (0, n)  # non-mated probes
    # the same steps with numpy's generator give the same split
    rng = onp.random.default_rng(11)
    eligible = [c for c, n in enumerate(sizes) if n >= 2]
    chosen = sorted(eligible[k] for k in rng.choice(10, size=len(enrolled), replace=False))
    assert [f"p{c}" for c in chosen] == sorted(enrolled, key=lambda s: int(s[1:]))
    expected = []
    for c in sorted(f"p{c}" for c in chosen):  # identities in sorted label order
        members = onp.flatnonzero(labels == c)
        expected += list(rng.permutation(members)[:min(per_identity, len(members) - 1)])
    assert sorted(expected) == list(gallery)


@pytest.mark.parametrize("labels,kwargs,match", [
    ([0, 1, 2], {}, "two or more images"),
    ([0, 0, 1], {"enrolled_fraction": 0}, "enrolled_fraction"),
    ([0, 0, 1], {"enrolled_fraction": 1.5}, "enrolled_fraction"),
    ([0, 0, 1], {"gallery_per_identity": 0}, "gallery_per_identity"),
    ([[0, 0, 1]], {}, "1-D"),
])
def test_split_bad_input(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_gallery_probes(labels, **kwargs)


# ---------------------------------------------------------------- identification
def check_identification(res, want, fpir_targets):
    assert isinstance(res, IdentificationResult)
    assert (res.num_mated, res.num_nonmated) == (want["num_mated"], want["num_nonmated"])
    onp.testing.assert_allclose(res.cmc, want["cmc"], rtol=0, atol=1e-15)
    onp.testing.assert_array_equal(res.thresholds, want["thresholds"])
    onp.testing.assert_allclose(res.tpir, want["tpir"], rtol=0, atol=1e-15)
    if want["num_nonmated"]:
        onp.testing.assert_allclose(res.fpir, want["fpir"], rtol=0, atol=1e-15)
        for f in fpir_targets:
            assert res.tpir_at_fpir[f] == pytest.approx(want["tpir_at_fpir"][f], abs=1e-12)
            assert res.threshold_at_fpir[f] == want["threshold_at_fpir"][f]
            assert res.reliable[f] is want["reliable"][f]


@pytest.mark.parametrize("seed,noise,per_identity,block_size", [
    (0, 0.8, 1, 3), (1, 1.2, 2, None), (2, 0.5, 3, 1)])
def test_identification_matches_naive(seed, noise, per_identity, block_size):
    rng = onp.random.RandomState(seed)
    emb, labels = make_set(rng, SIZES * 2, noise=noise)
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=0.7,
                                           gallery_per_identity=per_identity, seed=seed)
    g_emb, g_lab = emb[gallery].copy(), labels[gallery]
    p_emb, p_lab = emb[probes].copy(), labels[probes]
    # ties on purpose: a gallery image copied under another identity, and probes
    # that are exact copies of gallery images (of their own and of another identity)
    other = int(onp.flatnonzero(g_lab != g_lab[0])[0])
    g_emb[other] = g_emb[0]
    p_emb[0] = g_emb[0]
    p_emb[1] = g_emb[other]
    p_emb[2] = g_emb[-1]
    targets = (0.05, 0.2, 0.5)
    want = naive_identification(g_emb, list(g_lab), p_emb, list(p_lab), targets)
    assert 0 < want["cmc"][0] < 1 and want["num_nonmated"] > 0
    res = identification(g_emb, g_lab, p_emb, p_lab, ranks=(1, 2, 5), fpir_targets=targets,
                         block_size=block_size)
    check_identification(res, want, targets)
    assert res.rank == {k: want["cmc"][k - 1] for k in (1, 2, 5)}
    assert res.cmc[-1] == 1.0 and onp.all(onp.diff(res.cmc) >= 0)


def test_identification_hand_example_ties_count_against():
    """Exact vectors; identity ``b`` has a copy of ``a``'s image, so a probe of ``a``
    ties with ``b`` and is rank 2 (1 + one other identity with score >= its own).

    probe  label  S(a)  S(b)  S(c)   rank  top
    p0     a      1     1     0      2     1
    p1     c      0     0     1      1     1
    p2     b      .5    .5    .5     3     .5
    p3     b      -.5   .5    -.5    1     .5
    p4     z      0     0     0      -     0
    p5     y      .5    .5    .5     -     .5
    """
    h = 0.5
    gallery = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    probes = [[1, 0, 0, 0], [0, 1, 0, 0], [h, h, h, h], [-h, -h, h, h], [0, 0, 0, 1],
              [h, h, h, h]]
    res = identification(gallery, ["a", "b", "b", "c"], probes, ["a", "c", "b", "b", "z", "y"],
                         ranks=(1, 2, 5), fpir_targets=(0.25, 0.5, 1.0))
    assert (res.num_mated, res.num_nonmated) == (4, 2)
    onp.testing.assert_array_equal(res.cmc, [0.5, 0.75, 1.0])
    assert res.rank == {1: 0.5, 2: 0.75, 5: 1.0}  # rank 5 > 3 identities: everything
    onp.testing.assert_array_equal(res.thresholds, [INF, 1.0, 0.5, 0.0])
    onp.testing.assert_array_equal(res.tpir, [0, 0.25, 0.5, 0.5])
    onp.testing.assert_array_equal(res.fpir, [0, 0, 0.5, 1.0])
    assert res.tpir_at_fpir[0.25] == pytest.approx(0.25 + 0.25 * 0.25 / 0.5)
    assert res.tpir_at_fpir[0.5] == 0.5 and res.tpir_at_fpir[1.0] == 0.5
    assert res.threshold_at_fpir == {0.25: 1.0, 0.5: 0.5, 1.0: 0.0}
    assert res.reliable == {0.25: False, 0.5: False, 1.0: False}
    want = naive_identification(gallery, ["a", "b", "b", "c"], probes,
                                ["a", "c", "b", "b", "z", "y"], (0.25, 0.5, 1.0))
    assert want["ranks"] == [2, 1, 3, 1, None, None]
    check_identification(res, want, (0.25, 0.5, 1.0))


def test_identification_perfect_and_closed_set():
    """Separated identities: rank-1 is 1 and TPIR = 1 at every FPIR; with every probe
    mated there is no FPIR and no TPIR@FPIR."""
    rng = onp.random.RandomState(9)
    labels = onp.repeat(onp.arange(12), 4)
    emb = 10 * onp.eye(16)[labels] + 0.01 * rng.randn(len(labels), 16)
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=0.5)
    res = identification(emb[gallery], labels[gallery], emb[probes], labels[probes],
                         fpir_targets=(0.01, 0.1))
    assert res.num_nonmated == 24 and res.num_mated == 18
    assert res.rank == {1: 1.0, 5: 1.0}
    onp.testing.assert_array_equal(res.cmc, 1.0)
    assert res.tpir_at_fpir == {0.01: 1.0, 0.1: 1.0}
    assert res.reliable == {0.01: False, 0.1: False}
    mated = probes[onp.isin(labels[probes], labels[gallery])]
    closed = identification(emb[gallery], labels[gallery], emb[mated], labels[mated])
    assert (closed.num_mated, closed.num_nonmated) == (18, 0)
    assert closed.tpir_at_fpir == {} and closed.threshold_at_fpir == {} and closed.reliable == {}
    assert onp.all(onp.isnan(closed.fpir))
    assert closed.tpir[0] == 0.0 and closed.tpir[-1] == 1.0


def test_identification_random_embeddings_rank1_near_chance():
    rng = onp.random.RandomState(10)
    labels = onp.repeat(onp.arange(50), 6)
    emb = rng.randn(300, 32)
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=1.0)
    res = identification(emb[gallery], labels[gallery], emb[probes], labels[probes],
                         ranks=(1, 25))
    # 250 mated probes, 50 identities: rank-k ~ k / 50
    assert res.num_mated == 250 and len(res.cmc) == 50
    assert abs(res.rank[1] - 1 / 50) < 0.04
    assert abs(res.rank[25] - 0.5) < 0.12


def test_identification_as_dict_and_repr():
    rng = onp.random.RandomState(12)
    emb, labels = make_set(rng, SIZES)
    g, p = split_gallery_probes(labels)
    res = identification(emb[g], labels[g], emb[p], labels[p])
    d = json.loads(json.dumps(res.as_dict()))
    assert d["num_mated"] == res.num_mated and d["ranks"] == [1, 5]
    assert len(d["cmc"]) == len(res.cmc)
    assert "rank=" in repr(res)


@pytest.mark.parametrize("args,kwargs,match", [
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 5)), [0, 1]), {}, "dimensions"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), [7, 8]), {}, "no probe is mated"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), ["0", "1"]), {}, "both"),
    ((onp.ones((3, 4)), [0, 1], onp.ones((2, 4)), [0, 1]), {}, "gallery_labels has 2"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), [0]), {}, "probe_labels has 1"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.full((2, 4), onp.inf), [0, 1]), {}, "probe_emb"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), [0, 1]), {"ranks": (1, 0)}, "ranks"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), [0, 1]), {"fpir_targets": -1},
     "fpir_targets"),
    ((onp.ones((3, 4)), [0, 1, 2], onp.ones((2, 4)), [0, 1]), {"block_size": 2.5},
     "block_size"),
])
def test_identification_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        identification(*args, **kwargs)

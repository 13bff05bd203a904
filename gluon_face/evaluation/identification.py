"""Open-set face-recognition metrics over a labelled set: all-pairs TAR@FAR and 1:N search.

Two protocols, as benchmark papers report them:

- **All-vs-all verification** (the IJB-C 1:1 headline, Maze et al., "IARPA Janus
  Benchmark - C: Face Dataset and Protocol", ICB 2018): every unordered pair of
  distinct images is scored; pairs of one identity are *genuine*, the others
  *impostor*; the result is the ROC and TAR at a few FAR values (1e-2 ... 1e-4).
- **1:N identification** (MegaFace, Kemelmacher-Shlizerman et al., CVPR 2016,
  https://arxiv.org/abs/1512.00596; NIST FRVT Part 2, Grother et al., NIST IR 8271,
  https://doi.org/10.6028/NIST.IR.8271): probes are searched against an enrolled
  gallery; closed-set rank-k / CMC over the *mated* probes (whose identity is
  enrolled) and open-set TPIR at a given FPIR, measured on the *non-mated* ones.

Scores are cosine similarities of L2-normalised embeddings, ``s(u, v) = <u, v> /
(||u|| ||v||)`` in ``[-1, 1]`` (higher = more alike); a pair or a search is accepted
when ``s >= t``.  Embeddings with zero norm score 0 against everything.  Scores are
computed in float64 and then **rounded to float32**: that halves the memory of the
``N(N-1)/2`` all-pairs scores, and scores that differ only by float64 rounding noise
(e.g. a duplicated image compared by two BLAS kernels) become exactly equal, so ties
are ties.  Thresholds are those float32 values, returned as float64.

Pure numpy: nothing here needs MXNet.
"""
import dataclasses
import math
from typing import Dict, Tuple

import numpy as np

from .verification import _as_embeddings, l2_normalize
from .verification import _interp_at as _interp

__all__ = [
    "AllPairsResult",
    "IdentificationResult",
    "all_pairs_verification",
    "identification",
    "split_gallery_probes",
]

#: Scores held at a time by the blocked similarity computations (32 MB of float64).
_BLOCK_SCORES = 1 << 22
#: A rate target ``f`` is called reliable when at least this many negatives
#: (impostor pairs, non-mated probes) are allowed above the threshold: ``f * n >= 10``.
_MIN_ERRORS = 10


# ----------------------------------------------------------------------------- checks
def _as_labels(labels, n, name):
    """1-D labels of length ``n``: integers (int64) or strings; ValueError otherwise."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per embedding), got shape {labels.shape}")
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} entries but there are {n} embeddings")
    kind = labels.dtype.kind
    if kind in "iu":
        return labels.astype(np.int64)
    if kind in "US":
        return labels
    if kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    if kind == "O":
        values = labels.tolist()
        if all(isinstance(v, str) for v in values):
            return labels.astype(str)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in values):
            return labels.astype(np.int64)
    raise ValueError(f"{name} must hold integers or strings, got dtype {labels.dtype}")


def _as_targets(targets, name):
    """Rate targets as a tuple of floats in ``(0, 1]`` (a single number is accepted)."""
    values = np.atleast_1d(np.asarray(targets, dtype=object))
    if values.ndim != 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence of numbers")
    out = []
    for v in values.tolist():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers in (0, 1], got {v!r}") from None
        if isinstance(v, bool) or not (math.isfinite(f) and 0 < f <= 1):
            raise ValueError(f"{name} must hold numbers in (0, 1], got {v!r}")
        out.append(f)
    return tuple(out)


def _rows_per_block(block_size, num_cols):
    if block_size is None:
        return max(1, _BLOCK_SCORES // max(1, num_cols))
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    return int(block_size)


# ----------------------------------------------------------------------------- curves
def _largest_count_within(rate, n):
    """Largest integer ``k`` with ``k / n <= rate`` in float64, as the curves compute rates."""
    k = int(math.floor(rate * n))
    if (k + 1) / n <= rate:
        k += 1
    elif k / n > rate:
        k -= 1
    return min(k, n)


def _drop_intermediate(thr, fa, ta):
    """Keep the ends and every vertex that is not inside a horizontal or vertical run.

    ``thr, fa, ta`` run from threshold ``+inf`` downwards with cumulative counts.  A
    vertex whose incoming and outgoing steps are both horizontal (only ``fa`` grows)
    or both vertical (only ``ta`` grows) lies on the segment of its neighbours, so
    removing it changes neither the piecewise-linear curve nor its area.
    """
    if len(thr) <= 2:
        return thr, fa, ta
    dfa, dta = np.diff(fa), np.diff(ta)
    horizontal = (dta[:-1] == 0) & (dta[1:] == 0)
    vertical = (dfa[:-1] == 0) & (dfa[1:] == 0)
    keep = np.concatenate([[True], ~(horizontal | vertical), [True]])
    return thr[keep], fa[keep], ta[keep]


def _roc_counts(gen, imp, drop_intermediate):
    """ROC vertices ``(thresholds, false accepts, true accepts)`` from sorted float32 scores.

    With ``drop_intermediate`` the runs of impostor-only scores between two
    consecutive distinct genuine scores are reduced to their lowest score (the only
    vertex of such a run that :func:`_drop_intermediate` keeps), so the work after
    sorting is ``O(#distinct genuine scores * log #impostor)`` and the curve has at
    most ``2 * #distinct genuine + 2`` vertices, however many impostors there are.
    """
    n_i = imp.size
    if not drop_intermediate:
        values = np.unique(np.concatenate([gen, imp]))[::-1]
        ta = gen.size - np.searchsorted(gen, values, side="left")
        fa = n_i - np.searchsorted(imp, values, side="left")
        thr = values.astype(np.float64)
    else:
        u, gc = np.unique(gen, return_counts=True)
        m = u.size
        lo = np.searchsorted(imp, u, side="left")
        hi = np.searchsorted(imp, u, side="right")
        # Bin b (0..m) holds the impostor scores strictly between u[b-1] and u[b].
        start = np.concatenate([[0], hi])
        count = np.concatenate([lo, [n_i]]) - start
        lowest = imp[np.minimum(start, n_i - 1)]
        # Descending order: bin m, u[m-1], bin m-1, ..., u[0], bin 0.
        thr = np.empty(2 * m + 1)
        dfa = np.empty(2 * m + 1, dtype=np.int64)
        dta = np.zeros(2 * m + 1, dtype=np.int64)
        present = np.ones(2 * m + 1, dtype=bool)
        thr[0::2], dfa[0::2], present[0::2] = lowest[::-1], count[::-1], count[::-1] > 0
        thr[1::2], dfa[1::2], dta[1::2] = u[::-1], (hi - lo)[::-1], gc[::-1]
        thr, fa, ta = thr[present], np.cumsum(dfa[present]), np.cumsum(dta[present])
    thr = np.concatenate([[np.inf], thr])
    fa = np.concatenate([[0], fa])
    ta = np.concatenate([[0], ta])
    if drop_intermediate:
        thr, fa, ta = _drop_intermediate(thr, fa, ta)
    return thr, fa, ta


def _threshold_at_rate(rate, negatives, others):
    """Smallest threshold ``t`` (``+inf`` or a score) with ``#{negatives >= t} / n <= rate``.

    ``negatives`` and ``others`` are sorted ascending; the candidate thresholds are
    the distinct values of both.
    """
    n = negatives.size
    k = _largest_count_within(rate, n)
    if k >= n:
        lows = [a[0] for a in (negatives, others) if a.size]
        return float(min(lows))
    # The (k+1)-th largest negative must be rejected: t is the next score above it.
    v = negatives[n - 1 - k]
    above = [a[i] for a in (negatives, others)
             for i in [int(np.searchsorted(a, v, side="right"))] if i < a.size]
    return float(min(above)) if above else float("inf")


def _auc(x, y):
    """Trapezoid area under ``y(x)`` for non-decreasing ``x``."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


# ----------------------------------------------------------------------------- all pairs
@dataclasses.dataclass(frozen=True, eq=False)
class AllPairsResult:
    """Outcome of :func:`all_pairs_verification`.

    Attributes
    ----------
    num_genuine, num_impostor : int
        Unordered pairs ``i < j`` with equal / different labels.
    far, tar : numpy.ndarray, float64, shape (K,)
        ROC vertices, from ``(0, 0)`` at threshold ``+inf`` to ``(1, 1)`` at the
        lowest score; FAR and TAR are non-decreasing.
    thresholds : numpy.ndarray, float64, shape (K,)
        ``+inf`` then decreasing scores: vertex ``k`` is ``(FAR(t_k), TAR(t_k))``.
    auc : float
        Trapezoid area under the ROC (linear axes).
    tar_at_far : dict float -> float
        TAR interpolated at each FAR target (see :func:`all_pairs_verification`).
    threshold_at_far : dict float -> float
        Smallest threshold whose measured FAR is at most the target (``+inf`` when
        only ``+inf`` qualifies).
    reliable : dict float -> bool
        ``far_target * num_impostor >= 10``: the target allows at least ten false
        accepts, so it is resolved by the data rather than extrapolated from a handful.
    far_targets : tuple of float
    """

    num_genuine: int
    num_impostor: int
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float
    tar_at_far: Dict[float, float]
    threshold_at_far: Dict[float, float]
    reliable: Dict[float, bool]
    far_targets: Tuple[float, ...]

    def as_dict(self):
        """Plain-python (JSON-serialisable) copy: floats, ints, lists and dicts."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __repr__(self):
        tars = ", ".join(f"{f:.0e}: {v:.5f}" for f, v in self.tar_at_far.items())
        return (f"AllPairsResult(tar_at_far={{{tars}}}, auc={self.auc:.5f}, "
                f"num_genuine={self.num_genuine}, num_impostor={self.num_impostor}, "
                f"vertices={len(self.far)})")


def all_pairs_verification(embeddings, labels, far_targets=(1e-2, 1e-3, 1e-4), block_size=None,
                           drop_intermediate=True):
    r"""All-vs-all verification of a labelled set: ROC and TAR@FAR (IJB-C style).

    Every unordered pair ``i < j`` of the ``N`` images is scored with
    ``s_ij = cos(e_i, e_j)`` (float32-rounded, see the module notes); it is genuine
    when ``labels[i] == labels[j]``, impostor otherwise.  With ``G``/``I`` the
    genuine/impostor scores,

    .. math::

        \mathrm{FAR}(t) = \frac{\#\{s \in I : s \ge t\}}{|I|},\qquad
        \mathrm{TAR}(t) = \frac{\#\{s \in G : s \ge t\}}{|G|}.

    The ROC has one vertex ``(FAR(t), TAR(t))`` for ``t = +inf`` (``(0, 0)``) and for
    every distinct score ``t`` in decreasing order (ending at ``(1, 1)``).  With
    ``drop_intermediate`` (default) the vertices inside a straight horizontal run
    (impostor-only scores) or vertical run (genuine-only scores) are left out, as
    ``sklearn.metrics.roc_curve`` does: they lie on the segment joining their
    neighbours, so the curve, the AUC and every TAR@FAR are unchanged, while the
    number of vertices is at most ``2 * #distinct genuine scores + 2`` instead of up
    to ``N(N-1)/2``.

    **TAR@FAR = f** is linear interpolation of TAR over FAR on the ROC vertices
    (``np.interp(f, far, tar)``): between the last vertex ``j`` with ``far[j] <= f``
    and vertex ``j + 1``; at a vertical step (several vertices with FAR exactly
    ``f``) the highest one is used.  On a horizontal segment this is the TAR measured
    at ``threshold_at_far[f]``; on a sloped segment (genuine and impostor scores
    tied) it is a point between two operating points that no threshold attains.
    For ``f < 1 / num_impostor`` the bracketing segment starts at the vertex
    ``(0, TAR(FAR=0))``: the value is TAR at FAR 0 (or interpolated from it) and
    **measures nothing about a FAR as small as f**, because the set holds too few
    impostor pairs to resolve it.  ``reliable[f]`` is ``True`` only when
    ``f * num_impostor >= 10``.

    Parameters
    ----------
    embeddings : array_like, shape (N, D)
        Raw embeddings (any scale; rows are L2-normalised here).
    labels : array_like, shape (N,)
        Identity of every image: integers (integer-valued floats are accepted) or
        strings.
    far_targets : float or sequence of float
        FAR values in ``(0, 1]`` at which TAR is read.
    block_size : int, optional
        Rows of the similarity matrix computed at a time: memory about
        ``12 * block_size * N`` bytes (float64 scores and their float32 copy).
        Default: as many rows as hold ``2**22`` scores (32 MB).  The result does
        not depend on it.
    drop_intermediate : bool
        Leave out the vertices inside horizontal/vertical runs (see above).  With
        ``False`` every distinct score is a vertex; that needs memory and time
        proportional to the number of pairs.

    Returns
    -------
    AllPairsResult

    Raises
    ------
    ValueError
        On malformed input, or when the labels give no genuine pair (every identity
        has one image) or no impostor pair (one identity).

    Notes
    -----
    The ``N(N-1)/2`` scores are kept as float32 (4 bytes per pair: 200 MB for
    ``N = 10,000``), never as an ``N x N`` matrix; the time is dominated by the
    ``N^2 D / 2`` multiply-adds of the similarities and one sort of the scores.
    """
    e = _as_embeddings(embeddings, "embeddings")
    n = e.shape[0]
    labels = _as_labels(labels, n, "labels")
    far_targets = _as_targets(far_targets, "far_targets")
    rows = _rows_per_block(block_size, n)
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    sizes = np.bincount(codes).astype(np.int64)
    num_genuine = int(np.sum(sizes * (sizes - 1) // 2))
    num_impostor = n * (n - 1) // 2 - num_genuine
    if num_genuine == 0:
        raise ValueError("labels gives no genuine pair: every identity has a single image")
    if num_impostor == 0:
        raise ValueError("labels gives no impostor pair: all images have the same identity")

    # Sorted by identity, row i meets its own identity in columns i+1 .. end[i]-1 and
    # only impostors from end[i] on: two slices per row, no N x N masks.
    order = np.argsort(codes, kind="stable")
    e = l2_normalize(e)[order]
    end = np.searchsorted(codes[order], codes[order], side="right")
    gen = np.empty(num_genuine, dtype=np.float32)
    imp = np.empty(num_impostor, dtype=np.float32)
    ng = ni = 0
    for r0 in range(0, n - 1, rows):
        r1 = min(r0 + rows, n - 1)  # the last row has no partner j > i
        scores = (e[r0:r1] @ e[r0:].T).astype(np.float32)
        for k, i in enumerate(range(r0, r1)):
            g = scores[k, i + 1 - r0:end[i] - r0]
            x = scores[k, end[i] - r0:]
            gen[ng:ng + g.size] = g
            imp[ni:ni + x.size] = x
            ng += g.size
            ni += x.size
    gen.sort()
    imp.sort()

    thr, fa, ta = _roc_counts(gen, imp, drop_intermediate)
    far = fa / num_impostor
    tar = ta / num_genuine
    return AllPairsResult(
        num_genuine=num_genuine, num_impostor=int(num_impostor), far=far, tar=tar,
        thresholds=thr, auc=_auc(far, tar),
        tar_at_far={f: _interp(far, tar, f) for f in far_targets},
        threshold_at_far={f: _threshold_at_rate(f, imp, gen) for f in far_targets},
        reliable={f: bool(f * num_impostor >= _MIN_ERRORS) for f in far_targets},
        far_targets=far_targets)


# ----------------------------------------------------------------------------- 1:N split
def split_gallery_probes(labels, enrolled_fraction=0.75, gallery_per_identity=1, seed=0):
    """Split a labelled set into an enrolled gallery and mated / non-mated probes.

    Rule (deterministic for a given ``seed``, ``rng = numpy.random.default_rng(seed)``):

    1. Only identities with at least two images can be enrolled *and* probed; call
       them eligible (``E`` of them).  Identities with a single image are always
       non-mated probes.
    2. ``round(enrolled_fraction * E)`` (half up, at least 1) eligible identities are
       enrolled, drawn with ``rng.choice(E, size, replace=False)`` from the eligible
       identities in sorted label order.
    3. For every enrolled identity with ``n_c`` images (in sorted label order),
       ``min(gallery_per_identity, n_c - 1)`` of its images, the first of
       ``rng.permutation`` of its image indices, go to the gallery, so that at
       least one image is left as a mated probe.
    4. Every other image is a probe: mated if its identity is enrolled, non-mated
       otherwise.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Integers or strings.
    enrolled_fraction : float
        Share of the eligible identities that is enrolled, in ``(0, 1]``; with 1
        there are no non-mated probes except single-image identities.
    gallery_per_identity : int
        Gallery images per enrolled identity (fewer for identities that lack them).
    seed : int or numpy.random.SeedSequence or None
        Passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    gallery_idx, probe_idx : numpy.ndarray, int64
        Sorted, disjoint indices into ``labels`` covering ``0..N-1`` together.

    Raises
    ------
    ValueError
        On malformed arguments, or when no identity has two images.
    """
    labels = np.asarray(labels)
    labels = _as_labels(labels, labels.shape[0] if labels.ndim else -1, "labels")
    if not (isinstance(enrolled_fraction, (int, float, np.number))
            and not isinstance(enrolled_fraction, bool)
            and 0 < enrolled_fraction <= 1):
        raise ValueError(f"enrolled_fraction must be in (0, 1], got {enrolled_fraction!r}")
    if isinstance(gallery_per_identity, bool) or \
            not isinstance(gallery_per_identity, (int, np.integer)) or gallery_per_identity < 1:
        raise ValueError(f"gallery_per_identity must be a positive int, "
                         f"got {gallery_per_identity!r}")
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    eligible = np.flatnonzero(np.bincount(codes, minlength=1) >= 2)
    if eligible.size == 0:
        raise ValueError("labels has no identity with two or more images: nothing can be "
                         "both enrolled and probed")
    num_enrolled = max(1, int(math.floor(enrolled_fraction * eligible.size + 0.5)))
    rng = np.random.default_rng(seed)
    enrolled = np.sort(eligible[rng.choice(eligible.size, size=num_enrolled, replace=False)])
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], enrolled, side="left")
    ends = np.searchsorted(codes[order], enrolled, side="right")
    gallery = []
    for s, t in zip(starts, ends):
        members = order[s:t]
        take = min(int(gallery_per_identity), members.size - 1)
        gallery.append(rng.permutation(members)[:take])
    gallery_idx = np.sort(np.concatenate(gallery)).astype(np.int64)
    is_probe = np.ones(labels.size, dtype=bool)
    is_probe[gallery_idx] = False
    return gallery_idx, np.flatnonzero(is_probe).astype(np.int64)


# ----------------------------------------------------------------------------- 1:N search
@dataclasses.dataclass(frozen=True, eq=False)
class IdentificationResult:
    """Outcome of :func:`identification`.

    Attributes
    ----------
    cmc : numpy.ndarray, float64, shape (C,)
        ``cmc[k-1]`` = share of mated probes of rank ``<= k``, ``k = 1..C`` with ``C``
        the number of gallery identities; ``cmc[-1] == 1``.
    rank : dict int -> float
        ``k -> cmc[min(k, C) - 1]`` for the requested ranks (a rank beyond ``C``
        covers every identity: 1.0).
    num_mated, num_nonmated : int
        Probes whose identity is / is not in the gallery.
    fpir, tpir : numpy.ndarray, float64, shape (K,)
        Open-set curve from threshold ``+inf`` (``(0, 0)``) down to the lowest
        relevant score, where FPIR is 1 and TPIR is the rank-1 rate.  FPIR is NaN
        when there is no non-mated probe.
    thresholds : numpy.ndarray, float64, shape (K,)
        ``+inf`` then every distinct relevant score, decreasing.
    tpir_at_fpir : dict float -> float
        TPIR interpolated at each FPIR target; empty without non-mated probes.
    threshold_at_fpir : dict float -> float
        Smallest threshold whose measured FPIR is at most the target.
    reliable : dict float -> bool
        ``fpir_target * num_nonmated >= 10``.
    fpir_targets : tuple of float
    ranks : tuple of int
    """

    cmc: np.ndarray
    rank: Dict[int, float]
    num_mated: int
    num_nonmated: int
    fpir: np.ndarray
    tpir: np.ndarray
    thresholds: np.ndarray
    tpir_at_fpir: Dict[float, float]
    threshold_at_fpir: Dict[float, float]
    reliable: Dict[float, bool]
    fpir_targets: Tuple[float, ...]
    ranks: Tuple[int, ...]

    def as_dict(self):
        """Plain-python (JSON-serialisable) copy: floats, ints, lists and dicts."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __repr__(self):
        ranks = ", ".join(f"{k}: {v:.5f}" for k, v in self.rank.items())
        tpirs = ", ".join(f"{f:.0e}: {v:.5f}" for f, v in self.tpir_at_fpir.items())
        return (f"IdentificationResult(rank={{{ranks}}}, tpir_at_fpir={{{tpirs}}}, "
                f"num_mated={self.num_mated}, num_nonmated={self.num_nonmated}, "
                f"gallery_identities={len(self.cmc)})")


def _as_ranks(ranks):
    values = np.atleast_1d(np.asarray(ranks, dtype=object))
    if values.ndim != 1:
        raise ValueError("ranks must be an int or a 1-D sequence of ints")
    out = []
    for k in values.tolist():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ranks must hold ints >= 1, got {k!r}")
        out.append(int(k))
    return tuple(out)


def identification(gallery_emb, gallery_labels, probe_emb, probe_labels, ranks=(1, 5),
                   fpir_targets=(1e-2, 1e-1), block_size=None):
    r"""1:N search of probes against a gallery: CMC, rank-k and TPIR@FPIR.

    The score of probe ``p`` for gallery identity ``c`` is the best match over that
    identity's gallery images, ``S(p, c) = max_{g in c} cos(p, g)`` (float32-rounded,
    see the module notes).  A probe is *mated* when its label is a gallery identity.

    **Rank** of a mated probe with true identity ``c*``:
    ``rank = 1 + #{c != c* : S(p, c) >= S(p, c*)}`` - an identity tied with the true
    one counts against it, so ties never flatter the CMC.
    ``cmc[k-1] = #{mated : rank <= k} / #mated``.

    **Open set** (NIST FRVT 1:N definitions), with ``top(p) = max_c S(p, c)``:

    .. math::

        \mathrm{FPIR}(t) = \frac{\#\{p\ \text{non-mated} : top(p) \ge t\}}{\#\text{non-mated}},
        \qquad
        \mathrm{TPIR}(t) = \frac{\#\{p\ \text{mated} : rank(p) = 1,\ S(p, c^*) \ge t\}}
        {\#\text{mated}}.

    The curve has one vertex per threshold ``+inf`` and per distinct value of the
    scores that move it (non-mated ``top(p)``, rank-1 mated ``S(p, c*)``).
    **TPIR@FPIR = f** is linear interpolation of TPIR over FPIR on these vertices,
    exactly as TAR@FAR in :func:`all_pairs_verification` (the highest vertex at a
    vertical step; ``f < 1 / #non-mated`` reads TPIR at FPIR 0 and resolves nothing
    about ``f``; see ``reliable``).

    Parameters
    ----------
    gallery_emb : array_like, shape (M, D)
    gallery_labels : array_like, shape (M,)
        Integers or strings, the same kind as ``probe_labels``.
    probe_emb : array_like, shape (P, D)
    probe_labels : array_like, shape (P,)
    ranks : int or sequence of int
        Ranks ``k >= 1`` reported in ``rank``.
    fpir_targets : float or sequence of float
        FPIR values in ``(0, 1]`` at which TPIR is read.
    block_size : int, optional
        Probes scored at a time (memory about ``12 * block_size * M`` bytes); default
        as many as hold ``2**22`` scores.  The result does not depend on it.

    Returns
    -------
    IdentificationResult

    Raises
    ------
    ValueError
        On malformed input, or when no probe is mated.
    """
    g = _as_embeddings(gallery_emb, "gallery_emb")
    p = _as_embeddings(probe_emb, "probe_emb")
    if g.shape[1] != p.shape[1]:
        raise ValueError(f"probe_emb has {p.shape[1]} dimensions but gallery_emb has "
                         f"{g.shape[1]}")
    gl = _as_labels(gallery_labels, g.shape[0], "gallery_labels")
    pl = _as_labels(probe_labels, p.shape[0], "probe_labels")
    if (gl.dtype.kind in "US") != (pl.dtype.kind in "US"):
        raise ValueError(f"probe_labels ({pl.dtype}) and gallery_labels ({gl.dtype}) must both "
                         "be integers or both strings")
    ranks = _as_ranks(ranks)
    fpir_targets = _as_targets(fpir_targets, "fpir_targets")
    rows = _rows_per_block(block_size, g.shape[0])

    ids, gcode = np.unique(gl, return_inverse=True)
    gcode = gcode.reshape(-1)
    num_ids = ids.size
    order = np.argsort(gcode, kind="stable")
    g = l2_normalize(g)[order]
    starts = np.searchsorted(gcode[order], np.arange(num_ids))
    true_id = np.minimum(np.searchsorted(ids, pl), num_ids - 1)
    mated = ids[true_id] == pl
    num_mated = int(mated.sum())
    num_nonmated = int(pl.size - num_mated)
    if num_mated == 0:
        raise ValueError("no probe is mated: none of probe_labels is in gallery_labels")

    p = l2_normalize(p)
    top = np.empty(p.shape[0], dtype=np.float32)
    true_score = np.empty(p.shape[0], dtype=np.float32)
    rank = np.empty(p.shape[0], dtype=np.int64)
    for r0 in range(0, p.shape[0], rows):
        r1 = min(r0 + rows, p.shape[0])
        scores = (p[r0:r1] @ g.T).astype(np.float32)
        per_id = np.maximum.reduceat(scores, starts, axis=1)  # (B, C): best image per identity
        top[r0:r1] = per_id.max(axis=1)
        true_score[r0:r1] = per_id[np.arange(r1 - r0), true_id[r0:r1]]
        rank[r0:r1] = np.sum(per_id >= true_score[r0:r1, None], axis=1)  # counts c* itself

    cmc = np.cumsum(np.bincount(rank[mated], minlength=num_ids + 1)[1:num_ids + 1]) / num_mated
    hits = np.sort(true_score[mated & (rank == 1)])
    false = np.sort(top[~mated])
    values = np.unique(np.concatenate([hits, false]))[::-1]
    thresholds = np.concatenate([[np.inf], values.astype(np.float64)])
    tpir = np.concatenate([[0], hits.size - np.searchsorted(hits, values, side="left")])
    tpir = tpir / num_mated
    if num_nonmated:
        fpir = np.concatenate([[0], false.size - np.searchsorted(false, values, side="left")])
        fpir = fpir / num_nonmated
        tpir_at = {f: _interp(fpir, tpir, f) for f in fpir_targets}
        thr_at = {f: _threshold_at_rate(f, false, hits) for f in fpir_targets}
        reliable = {f: bool(f * num_nonmated >= _MIN_ERRORS) for f in fpir_targets}
    else:
        fpir = np.full(thresholds.shape, np.nan)
        tpir_at, thr_at, reliable = {}, {}, {}
    return IdentificationResult(
        cmc=cmc, rank={k: float(cmc[min(k, num_ids) - 1]) for k in ranks},
        num_mated=num_mated, num_nonmated=num_nonmated, fpir=fpir, tpir=tpir,
        thresholds=thresholds, tpir_at_fpir=tpir_at, threshold_at_fpir=thr_at,
        reliable=reliable, fpir_targets=fpir_targets, ranks=ranks)

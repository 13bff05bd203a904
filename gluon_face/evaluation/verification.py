"""Face verification metrics on embedding pairs, following insightface's protocol.

A verification set holds ``2P`` images forming ``P`` pairs (pair ``i`` is rows
``2i`` and ``2i+1``) and ``P`` booleans saying whether each pair shows the same
person.  After L2-normalising every embedding, a pair is declared "same" when the
squared Euclidean distance of its two embeddings is *strictly below* a threshold
``t``; for unit vectors ``d = ||u - v||^2 = 2 - 2 cos(u, v)`` lies in ``[0, 4]``.

The accuracy is measured by K-fold cross-validation (insightface's ``verification.py``,
itself derived from FaceNet's ``lfw.py``): the pairs are split into ``K`` consecutive
folds (``sklearn.model_selection.KFold(K, shuffle=False)``); for every fold the
threshold with the best accuracy on the other ``K-1`` folds is applied to the
held-out fold.  The reported number is the mean (and standard deviation) of the
``K`` held-out accuracies, so no pair ever scores the threshold that was chosen on it.

VAL@FAR
-------
What we report as ``val`` is **TAR@FAR read from the ROC of all pairs**: the
true accept rate ``TAR(t) = #{same pairs: d < t} / #same`` at the false accept
rate ``FAR(t) = #{different pairs: d < t} / #different`` equal to
``far_target`` (default 1e-3), on the grid ``t = arange(0, 4, 0.001)``,
interpolated linearly between the two thresholds that bracket the target: the
largest ``t_j`` with ``FAR(t_j) <= far_target`` and the next one,
``t_{j+1}``.  The threshold of that operating point is interpolated the same
way (``val_threshold``); ``fold_val`` / ``fold_far`` are each held-out fold's
TAR and FAR at it, and ``val_std`` is the standard deviation of ``fold_val``:
how much the operating point's TAR moves between subsets of the pairs.  It is
the rule of the all-pairs TAR@FAR of :mod:`gluon_face.evaluation.identification`
(there on the exact ROC vertices instead of a grid).  Nothing is fitted, so no
pairs need to be held out, and all of them are used: a set with ``n`` different
pairs resolves FARs down to ``1/n`` only (below that the value is the TAR at
the last threshold without a false accept, moved towards the next one), one
fold of them only down to ``K/n``.

This is **not** insightface's historical number.  insightface's
``calculate_val`` (from FaceNet's ``lfw.py``) tabulates FAR on the *training*
folds, turns it into a threshold with
``scipy.interpolate.interp1d(far_train, thresholds, kind='slinear')(far_target)``
(threshold 0, hence VAL 0, when the largest training FAR is below the target),
and reports the mean over folds of the TAR and FAR *measured* on the held-out
fold at that threshold: a threshold chosen on other pairs, whose FAR is not
the target but whatever the fold gives (0, or at least one over the fold's
number of different pairs).  FAR is a step function of the threshold, so ``far_train`` repeats
values: current SciPy refuses that (``ValueError: Expect x to not have
duplicates``), and older SciPy accepted them, so which of the repeated
points bounded the interpolation was up to its spline code.  The number
therefore depends on the SciPy version and is not reproduced here.  The fold
accuracies, thresholds, ROC and AUC above do follow insightface exactly.

Pure numpy / scikit-learn: nothing here needs MXNet.
"""
import dataclasses
from typing import Tuple

import numpy as np
from sklearn import metrics
from sklearn.model_selection import KFold

# the one numpy L2 normalisation (float64, zero rows stay zero), published here
from .._l2norm import l2_normalize

__all__ = [
    "VerificationResult",
    "combine_flip",
    "l2_normalize",
    "optimistic_accuracy",
    "pair_distances",
    "verification_accuracy",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_VAL_THRESHOLDS",
]

#: Threshold grid for accuracy and ROC (insightface: ``np.arange(0, 4, 0.01)``).
DEFAULT_THRESHOLDS = np.arange(0, 4, 0.01)
#: Finer grid on which each held-out fold's ROC is tabulated for VAL@FAR
#: (insightface's VAL grid: ``np.arange(0, 4, 0.001)``).
DEFAULT_VAL_THRESHOLDS = np.arange(0, 4, 0.001)


# ----------------------------------------------------------------------------- checks
def _as_embeddings(x, name, even=False):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
        raise ValueError(f"{name} has NaN or infinite values (first in row {bad})")
    if even and x.shape[0] % 2:
        raise ValueError(f"{name} must have an even number of rows (pair i = rows 2i, 2i+1), "
                         f"got {x.shape[0]}")
    return x


def _as_issame(issame, num_pairs):
    issame = np.asarray(issame)
    if issame.ndim != 1:
        raise ValueError(f"issame must be 1-D (one bool per pair), got shape {issame.shape}")
    if len(issame) != num_pairs:
        raise ValueError(f"issame has {len(issame)} entries but embeddings hold {num_pairs} "
                         f"pairs ({2 * num_pairs} rows)")
    if issame.dtype != np.bool_:
        if not np.issubdtype(issame.dtype, np.number) or not np.all(np.isin(issame, (0, 1))):
            raise ValueError(f"issame must hold booleans (or 0/1), got dtype {issame.dtype}")
        issame = issame.astype(bool)
    return issame


def _as_thresholds(thresholds, name, default):
    if thresholds is None:
        return default
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 values")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing")
    return t


# ----------------------------------------------------------------------------- helpers
def combine_flip(emb, emb_flipped):
    """insightface's flip test: ``normalize(e(x) + e(mirror(x)))``.

    Parameters
    ----------
    emb : array_like, shape (N, D)
        Embeddings of the images.
    emb_flipped : array_like, shape (N, D)
        Embeddings of the same images mirrored left-right, same order.

    Returns
    -------
    numpy.ndarray, float64, shape (N, D)
        Row-wise L2-normalised sum ``(e + e_f) / ||e + e_f||``.
    """
    emb = _as_embeddings(emb, "emb")
    emb_flipped = _as_embeddings(emb_flipped, "emb_flipped")
    if emb.shape != emb_flipped.shape:
        raise ValueError(f"emb_flipped has shape {emb_flipped.shape} but emb has shape {emb.shape}")
    return l2_normalize(emb + emb_flipped)


def pair_distances(embeddings):
    """Squared L2 distance of every pair after L2-normalising the rows.

    Parameters
    ----------
    embeddings : array_like, shape (2P, D)
        Pair ``i`` is rows ``2i`` and ``2i+1``.

    Returns
    -------
    numpy.ndarray, float64, shape (P,)
        ``d_i = ||u_i - v_i||^2`` with ``u_i, v_i`` the normalised rows, in ``[0, 4]``.
    """
    e = l2_normalize(_as_embeddings(embeddings, "embeddings", even=True))
    diff = e[0::2] - e[1::2]
    return np.einsum("ij,ij->i", diff, diff)


def _counts(dist, issame, thresholds):
    """True/false accepts at every threshold, with the rule ``same <=> dist < t``.

    Returns ``tp, fp, n_same, n_diff`` where ``tp[k] = #{same pairs: d < t_k}`` and
    ``fp[k] = #{different pairs: d < t_k}``; a sorted search does for all thresholds
    at once what the reference loop does one threshold at a time.
    """
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    tp = np.searchsorted(same, thresholds, side="left")
    fp = np.searchsorted(diff, thresholds, side="left")
    return tp, fp, same.size, diff.size


def _rates(dist, issame, thresholds):
    """``(tpr, fpr, acc)`` arrays over thresholds; a rate with an empty denominator is 0."""
    tp, fp, n_same, n_diff = _counts(dist, issame, thresholds)
    tn = n_diff - fp
    tpr = tp / n_same if n_same else np.zeros(len(thresholds))
    fpr = fp / n_diff if n_diff else np.zeros(len(thresholds))
    acc = (tp + tn) / dist.size
    return tpr, fpr, acc


def _interp_at(x, y, target):
    """``y`` read at ``x = target`` on the polyline through the points ``(x[k], y[k])``.

    ``x`` is non-decreasing and ``x[0] <= target``.  Linear interpolation between
    the last point ``j`` with ``x[j] <= target`` and point ``j + 1``; where ``x``
    repeats (a vertical step of an ROC) the last, i.e. highest, of those points is
    ``j``; past the last point, ``y[-1]``.  Equals ``np.interp`` on strictly
    increasing ``x``.  This is the one "rate at a rate" rule of the package:
    VAL@FAR here, TAR@FAR and TPIR@FPIR in :mod:`.identification`.
    """
    j = int(np.searchsorted(x, target, side="right")) - 1
    if j >= len(x) - 1:
        return float(y[-1])
    return float(y[j] + (y[j + 1] - y[j]) * (target - x[j]) / (x[j + 1] - x[j]))


def _val_far(dist, issame, threshold):
    """VAL (true accept rate) and FAR (false accept rate) at one threshold."""
    tp, fp, n_same, n_diff = _counts(dist, issame, np.asarray([threshold], dtype=np.float64))
    val = tp[0] / n_same if n_same else 0.0
    far = fp[0] / n_diff if n_diff else 0.0
    return float(val), float(far)


def _tar_at_far(dist, issame, thresholds, far_target):
    """``(TAR, FAR, t)``: the ROC of these pairs read at FAR ``far_target``.

    The ROC's points are the origin (threshold ``min(0, thresholds[0])``: no
    distance is below it) and ``(FAR(t), TAR(t))`` for every ``t`` of
    ``thresholds``.  TAR is interpolated linearly between the two points whose
    FARs bracket the target (:func:`_interp_at`), and so is the threshold ``t``
    of that operating point.  The FAR returned is the one read at: the target,
    or the largest FAR of the table when that is below the target (then TAR and
    ``t`` are the last point's).
    """
    tar, far, _ = _rates(dist, issame, thresholds)
    far = np.concatenate([[0.0], far])
    tar = np.concatenate([[0.0], tar])
    thr = np.concatenate([[min(0.0, float(thresholds[0]))], thresholds])
    read = min(far_target, float(far[-1]))
    return _interp_at(far, tar, far_target), read, _interp_at(far, thr, far_target)


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True, eq=False)
class VerificationResult:
    """Outcome of :func:`verification_accuracy`.

    Attributes
    ----------
    accuracy, accuracy_std : float
        Mean and (population) standard deviation of the held-out fold accuracies.
    val : float
        VAL@FAR: TAR read at FAR = ``far_target`` on the ROC of all pairs,
        interpolated between the bracketing thresholds (see the module docstring).
    val_std : float
        Standard deviation over the held-out folds of their TAR at
        ``val_threshold`` (``fold_val``).
    far : float
        The FAR at which ``val`` was read: ``far_target``, unless the largest FAR
        of the grid is below it.
    far_target : float
        The FAR asked for (insightface: 1e-3).
    threshold : float
        Mean over folds of the best-accuracy squared-L2 threshold.
    tpr, fpr : numpy.ndarray, shape (T,)
        True / false positive rates on the held-out folds at each of ``thresholds``,
        averaged over folds (insightface's ROC arrays).
    thresholds : numpy.ndarray, shape (T,)
        The threshold grid used for accuracy and ROC.
    auc : float
        Area under the mean ROC (``sklearn.metrics.auc(fpr, tpr)``).
    fold_accuracy, fold_threshold : numpy.ndarray, shape (nfolds,)
        The per-fold numbers behind ``accuracy`` and ``threshold``.
    fold_val, fold_far : numpy.ndarray, shape (nfolds,)
        TAR and FAR of each held-out fold at ``val_threshold``.
    nfolds, num_pairs : int
    val_threshold : float
        Squared-L2 threshold of the operating point where ``val`` was read,
        interpolated like ``val``.
    """

    accuracy: float
    accuracy_std: float
    val: float
    val_std: float
    far: float
    far_target: float
    threshold: float
    auc: float
    tpr: np.ndarray
    fpr: np.ndarray
    thresholds: np.ndarray
    fold_accuracy: np.ndarray
    fold_threshold: np.ndarray
    fold_val: np.ndarray
    fold_far: np.ndarray
    nfolds: int
    num_pairs: int
    val_threshold: float

    def as_dict(self):
        """Plain-python (JSON-serialisable) copy: floats, ints and lists."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def __repr__(self):
        return (f"VerificationResult(accuracy={self.accuracy:.5f}+-{self.accuracy_std:.5f}, "
                f"val={self.val:.5f} (fold std {self.val_std:.5f}) @ far={self.far:.2g} "
                f"(target {self.far_target:.2g}), threshold={self.threshold:.3f}, "
                f"auc={self.auc:.5f}, nfolds={self.nfolds}, num_pairs={self.num_pairs})")


# ----------------------------------------------------------------------------- protocol
def verification_accuracy(embeddings, issame, nfolds=10, far_target=1e-3, thresholds=None,
                          val_thresholds=None):
    """K-fold verification accuracy and ROC as insightface reports them, and VAL@FAR.

    Steps (insightface ``verification.evaluate``):

    1. L2-normalise every row; ``d_i = ||u_i - v_i||^2`` for pair ``i`` = rows
       ``(2i, 2i+1)``; predict "same" iff ``d_i < t``.
    2. Split the ``P`` pair indices with ``KFold(nfolds, shuffle=False)``.  For each
       fold, ``t* = argmax_t acc_train(t)`` over ``thresholds`` (the first, i.e.
       smallest, on ties), and ``acc_k = acc_test(t*)``.  Also record the test-fold
       TPR/FPR at every threshold.
    3. VAL@FAR (see the module docstring), on all pairs: tabulate
       ``FAR(t) = FA/N_diff`` and ``TAR(t) = TA/N_same`` on ``val_thresholds``
       (with the origin as the first point of the ROC); ``VAL`` is TAR at
       ``FAR = far_target``, interpolated linearly between the two thresholds whose
       FARs bracket the target: the largest ``t_j`` with ``FAR(t_j) <= far_target``
       and the next one, ``t_{j+1}``, with ``FAR(t_{j+1}) > far_target``.  If even
       the largest threshold has a FAR below the target, ``VAL`` is its TAR.  The
       held-out folds' TAR and FAR at the interpolated threshold give ``val_std``,
       ``fold_val`` and ``fold_far``.

    Parameters
    ----------
    embeddings : array_like, shape (2P, D)
        Raw embeddings (any scale; they are normalised here).  For insightface's
        flip test pass ``combine_flip(e, e_flipped)``.
    issame : array_like of bool, shape (P,)
    nfolds : int
        Number of folds, ``2 <= nfolds <= P``.
    far_target : float
        False accept rate at which VAL is read, in ``(0, 1]``.
    thresholds : array_like, shape (T,), optional
        Squared-L2 thresholds for accuracy/ROC; default ``arange(0, 4, 0.01)``.
    val_thresholds : array_like, optional
        Grid on which the ROC is tabulated for VAL; default ``arange(0, 4, 0.001)``
        (insightface's grid for VAL).

    Returns
    -------
    VerificationResult

    Notes
    -----
    Folds without "same" (or "different") pairs give a TPR (or FPR) of 0, as
    insightface's TPR does; a set without "different" pairs reads VAL at the
    largest threshold.  Distances are computed in float64.
    """
    e = _as_embeddings(embeddings, "embeddings", even=True)
    num_pairs = e.shape[0] // 2
    issame = _as_issame(issame, num_pairs)
    if isinstance(nfolds, bool) or not isinstance(nfolds, (int, np.integer)):
        raise ValueError(f"nfolds must be an int, got {nfolds!r}")
    if not 2 <= nfolds <= num_pairs:
        raise ValueError(f"nfolds must be between 2 and the number of pairs ({num_pairs}), "
                         f"got {nfolds}")
    if not (np.isfinite(far_target) and 0 < far_target <= 1):
        raise ValueError(f"far_target must be in (0, 1], got {far_target!r}")
    thresholds = _as_thresholds(thresholds, "thresholds", DEFAULT_THRESHOLDS)
    val_thresholds = _as_thresholds(val_thresholds, "val_thresholds", DEFAULT_VAL_THRESHOLDS)

    dist = pair_distances(e)
    tprs = np.zeros((nfolds, len(thresholds)))
    fprs = np.zeros((nfolds, len(thresholds)))
    fold_acc = np.zeros(nfolds)
    fold_thr = np.zeros(nfolds)
    fold_val = np.zeros(nfolds)
    fold_far = np.zeros(nfolds)
    folds = KFold(n_splits=nfolds, shuffle=False).split(np.arange(num_pairs))
    for k, (train, test) in enumerate(folds):
        _, _, acc_train = _rates(dist[train], issame[train], thresholds)
        best = int(np.argmax(acc_train))
        tprs[k], fprs[k], acc_test = _rates(dist[test], issame[test], thresholds)
        fold_acc[k] = acc_test[best]
        fold_thr[k] = thresholds[best]


    # VAL@FAR needs no held-out data (nothing is fitted), so it is read on the ROC
    # of all pairs: K times as many different pairs resolve K times smaller FARs
    # than one fold.
    val, far, val_threshold = _tar_at_far(dist, issame, val_thresholds, far_target)
    for k, (_, test) in enumerate(KFold(n_splits=nfolds, shuffle=False).split(dist)):
        fold_val[k], fold_far[k] = _val_far(dist[test], issame[test], val_threshold)

    tpr = tprs.mean(axis=0)
    fpr = fprs.mean(axis=0)
    return VerificationResult(
        accuracy=float(fold_acc.mean()), accuracy_std=float(fold_acc.std()),
        val=float(val), val_std=float(fold_val.std()),
        far=float(far), far_target=float(far_target), val_threshold=float(val_threshold),
        threshold=float(fold_thr.mean()), auc=float(metrics.auc(fpr, tpr)),
        tpr=tpr, fpr=fpr, thresholds=np.array(thresholds, dtype=np.float64),
        fold_accuracy=fold_acc, fold_threshold=fold_thr, fold_val=fold_val,
        fold_far=fold_far, nfolds=int(nfolds), num_pairs=int(num_pairs))


def optimistic_accuracy(embeddings, issame, thresholds=None) -> Tuple[float, float]:
    """Best accuracy over thresholds, chosen on the very pairs it is scored on.

    This is what the book's training section reported.  Because the threshold is
    fitted to the very pairs it scores, the number is **optimistically biased**: no
    single threshold does better on these pairs, and on random embeddings (no
    information at all) it lands clearly above 0.5 while the cross-validated
    accuracy of :func:`verification_accuracy` stays near 0.5.  Use the latter for a
    fair figure; this one exists to show the difference.

    Parameters
    ----------
    embeddings : array_like, shape (2P, D)
    issame : array_like of bool, shape (P,)
    thresholds : array_like, optional
        Squared-L2 thresholds; default ``arange(0, 4, 0.01)``.

    Returns
    -------
    accuracy : float
        ``max_t mean_i [ (d_i < t) == issame_i ]``.
    threshold : float
        The (smallest) threshold reaching it.
    """
    e = _as_embeddings(embeddings, "embeddings", even=True)
    issame = _as_issame(issame, e.shape[0] // 2)
    thresholds = _as_thresholds(thresholds, "thresholds", DEFAULT_THRESHOLDS)
    _, _, acc = _rates(pair_distances(e), issame, thresholds)
    best = int(np.argmax(acc))
    return float(acc[best]), float(thresholds[best])

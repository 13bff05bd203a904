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

Pure numpy / scipy / scikit-learn: nothing here needs MXNet.
"""
import dataclasses
from typing import Tuple

import numpy as np
from scipy import interpolate
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
#: Finer grid on which the training-fold FAR is tabulated for VAL@FAR
#: (insightface: ``np.arange(0, 4, 0.001)``).
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


def _val_far(dist, issame, threshold):
    """VAL (true accept rate) and FAR (false accept rate) at one threshold."""
    tp, fp, n_same, n_diff = _counts(dist, issame, np.asarray([threshold], dtype=np.float64))
    val = tp[0] / n_same if n_same else 0.0
    far = fp[0] / n_diff if n_diff else 0.0
    return float(val), float(far)


def _threshold_at_far(far, thresholds, far_target):
    """Invert the tabulated ``FAR(t)`` at ``far_target`` as insightface does.

    insightface calls ``interp1d(far, thresholds, kind='slinear')(far_target)`` when
    ``max(far) >= far_target`` and uses ``0`` otherwise.  ``FAR(t)`` is a step
    function, so ``far`` repeats values and current SciPy refuses repeated
    abscissae; like the usual fix we keep, for each distinct FAR, the *smallest*
    threshold reaching it (``np.unique(..., return_index=True)``) before interpolating.
    """
    if np.max(far) < far_target:
        return 0.0
    ufar, first = np.unique(far, return_index=True)
    uthr = thresholds[first]
    if far_target <= ufar[0]:
        return float(uthr[0])
    return float(interpolate.interp1d(ufar, uthr, kind="slinear")(far_target))


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True, eq=False)
class VerificationResult:
    """Outcome of :func:`verification_accuracy`.

    Attributes
    ----------
    accuracy, accuracy_std : float
        Mean and (population) standard deviation of the held-out fold accuracies.
    val, val_std : float
        Mean and std of VAL (true accept rate) on the held-out folds at the threshold
        where the training folds' FAR equals ``far_target``.
    far : float
        Mean FAR actually measured on the held-out folds at those thresholds.
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
    fold_accuracy, fold_threshold, fold_val, fold_far : numpy.ndarray, shape (nfolds,)
        The per-fold numbers behind the means.
    nfolds, num_pairs : int
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

    def as_dict(self):
        """Plain-python (JSON-serialisable) copy: floats, ints and lists."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def __repr__(self):
        return (f"VerificationResult(accuracy={self.accuracy:.5f}+-{self.accuracy_std:.5f}, "
                f"val={self.val:.5f}+-{self.val_std:.5f} @ far={self.far:.2g} "
                f"(target {self.far_target:.2g}), threshold={self.threshold:.3f}, "
                f"auc={self.auc:.5f}, nfolds={self.nfolds}, num_pairs={self.num_pairs})")


# ----------------------------------------------------------------------------- protocol
def verification_accuracy(embeddings, issame, nfolds=10, far_target=1e-3, thresholds=None,
                          val_thresholds=None):
    """K-fold verification accuracy, VAL@FAR and ROC, as insightface reports them.

    Steps (insightface ``verification.evaluate``):

    1. L2-normalise every row; ``d_i = ||u_i - v_i||^2`` for pair ``i`` = rows
       ``(2i, 2i+1)``; predict "same" iff ``d_i < t``.
    2. Split the ``P`` pair indices with ``KFold(nfolds, shuffle=False)``.  For each
       fold, ``t* = argmax_t acc_train(t)`` over ``thresholds`` (the first, i.e.
       smallest, on ties), and ``acc_k = acc_test(t*)``.  Also record the test-fold
       TPR/FPR at every threshold.
    3. VAL@FAR: tabulate the training folds' FAR on ``val_thresholds``, invert it at
       ``far_target`` by linear interpolation (threshold 0 if the largest FAR is below
       the target) and measure ``VAL = TA/N_same`` and ``FAR = FA/N_diff`` on the
       test fold.

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
        Grid on which FAR is tabulated for VAL; default ``arange(0, 4, 0.001)``
        (insightface uses the finer grid there).

    Returns
    -------
    VerificationResult

    Notes
    -----
    Folds without "same" (or "different") pairs give a TPR/VAL (or FPR/FAR) of 0, as
    insightface's TPR does.  Distances are computed in float64.
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

        _, far_train, _ = _rates(dist[train], issame[train], val_thresholds)
        t_far = _threshold_at_far(far_train, val_thresholds, far_target)
        fold_val[k], fold_far[k] = _val_far(dist[test], issame[test], t_far)

    tpr = tprs.mean(axis=0)
    fpr = fprs.mean(axis=0)
    return VerificationResult(
        accuracy=float(fold_acc.mean()), accuracy_std=float(fold_acc.std()),
        val=float(fold_val.mean()), val_std=float(fold_val.std()),
        far=float(fold_far.mean()), far_target=float(far_target),
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

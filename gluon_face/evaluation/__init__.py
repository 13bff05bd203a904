"""Verification and identification metrics, Dunn index and figures, in plain numpy (no MXNet).

- :func:`verification_accuracy` - insightface's 10-fold accuracy, the ROC, and
  VAL@FAR read from the all-pairs ROC (how it differs from insightface's historical
  ``calculate_val`` is in :mod:`.verification`);
  :func:`optimistic_accuracy` - the (biased) same-pairs threshold, for contrast.
- :func:`all_pairs_verification` - every pair of a labelled set: ROC, TAR@FAR (IJB-C style).
- :func:`identification` - 1:N search: CMC, rank-k, TPIR@FPIR (MegaFace / NIST FRVT);
  :func:`split_gallery_probes` - a deterministic gallery / mated / non-mated split.
- :func:`combine_flip`, :func:`pair_distances`; :func:`l2_normalize` - the package's one
  numpy L2 normalisation (float64, all-zero rows stay zero).
- :func:`dunn_index` - class separation over class diameter, with outlier trimming.
- :func:`target_logit_numpy` - the margin family's target logit.
- :func:`plot_embeddings`, :func:`plot_roc`, :func:`plot_cmc`, :func:`plot_curves`,
  :func:`plot_target_logits` - matplotlib Figures (Agg canvas, no pyplot).
- :func:`evaluate_bin`, :func:`evaluate_identities` - the protocols above run on a
  network's embeddings of raw images (:mod:`.protocols`).  They are the only functions
  here that need MXNet, and import it only when called: importing this package never
  imports MXNet.
"""
from .dunn import dunn_index
from .identification import (
    AllPairsResult,
    IdentificationResult,
    all_pairs_verification,
    identification,
    split_gallery_probes,
)
from .margins import MARGIN_PRESETS, target_logit_numpy
from .plots import plot_cmc, plot_curves, plot_embeddings, plot_roc, plot_target_logits
from .protocols import evaluate_bin, evaluate_identities
from .verification import (
    DEFAULT_THRESHOLDS,
    DEFAULT_VAL_THRESHOLDS,
    VerificationResult,
    combine_flip,
    l2_normalize,
    optimistic_accuracy,
    pair_distances,
    verification_accuracy,
)

__all__ = [
    "AllPairsResult",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_VAL_THRESHOLDS",
    "IdentificationResult",
    "MARGIN_PRESETS",
    "VerificationResult",
    "all_pairs_verification",
    "combine_flip",
    "dunn_index",
    "evaluate_bin",
    "evaluate_identities",
    "identification",
    "l2_normalize",
    "optimistic_accuracy",
    "pair_distances",
    "plot_cmc",
    "plot_curves",
    "plot_embeddings",
    "plot_roc",
    "plot_target_logits",
    "split_gallery_probes",
    "target_logit_numpy",
    "verification_accuracy",
]

"""Verification metrics, the Dunn index and figures, in plain numpy (no MXNet).

- :func:`verification_accuracy` - insightface's 10-fold accuracy, VAL@FAR and ROC;
  :func:`optimistic_accuracy` - the (biased) same-pairs threshold, for contrast.
- :func:`combine_flip`, :func:`pair_distances`, :func:`l2_normalize`.
- :func:`dunn_index` - class separation over class diameter, with outlier trimming.
- :func:`target_logit_numpy` - the margin family's target logit.
- :func:`plot_embeddings`, :func:`plot_roc`, :func:`plot_curves`,
  :func:`plot_target_logits` - matplotlib Figures (Agg canvas, no pyplot).
"""
from .dunn import dunn_index
from .margins import MARGIN_PRESETS, target_logit_numpy
from .plots import plot_curves, plot_embeddings, plot_roc, plot_target_logits
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
    "DEFAULT_THRESHOLDS",
    "DEFAULT_VAL_THRESHOLDS",
    "MARGIN_PRESETS",
    "VerificationResult",
    "combine_flip",
    "dunn_index",
    "l2_normalize",
    "optimistic_accuracy",
    "pair_distances",
    "plot_curves",
    "plot_embeddings",
    "plot_roc",
    "plot_target_logits",
    "target_logit_numpy",
    "verification_accuracy",
]

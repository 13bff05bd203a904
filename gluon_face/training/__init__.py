"""Training: configuration, the data-parallel loop, schedules and checkpoints.

* :class:`TrainConfig` - every option with its default (YAML presets in
  ``gluon_face/configs``); :func:`train` / :class:`FaceTrainer` - the loop over a
  context list and a kvstore; :func:`load_model` - a checkpoint back to
  ``(backbone, head, state)``.
* :mod:`.embed` - embedding images, the verification protocol on ``.bin`` pairs and
  the open-set metrics (all-pairs TAR at FAR, 1:N identification) on labelled images.
"""
from .checkpoint import CheckpointError, build_backbone, load_model, resolve_checkpoint
from .config import ConfigError, TrainConfig, list_presets
from .embed import (
    embed_images,
    evaluate_bin,
    evaluate_identities,
    extract_embeddings,
    parse_ctx,
)
from .optim import AdamW, build_lr_scheduler, build_optimizer
from .trainer import FaceTrainer, TrainingDiverged, find_val_targets, train

__all__ = [
    "AdamW", "CheckpointError", "ConfigError", "FaceTrainer", "TrainConfig", "TrainingDiverged",
    "build_backbone", "build_lr_scheduler", "build_optimizer", "embed_images", "evaluate_bin",
    "evaluate_identities", "extract_embeddings", "find_val_targets", "list_presets",
    "load_model", "parse_ctx", "resolve_checkpoint", "train",
]

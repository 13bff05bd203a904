"""Training: configuration, the data-parallel loop, schedules and checkpoints.

* :class:`TrainConfig` - every option with its default (YAML presets in
  ``gluon_face/configs``); :func:`train` / :class:`FaceTrainer` - the loop over a
  context list and a kvstore; :func:`load_model` - a checkpoint back to
  ``(backbone, head, state)``.
* :func:`embed_images`, :func:`extract_embeddings` (:mod:`gluon_face.embedding`),
  :func:`evaluate_bin`, :func:`evaluate_identities` (:mod:`gluon_face.evaluation.protocols`)
  and :func:`parse_ctx` (:mod:`gluon_face.devices`) are re-exported here (the
  chapters call ``training.evaluate_bin``); :mod:`.embed`, their former module,
  re-exports them too so old imports keep working.
"""
from ..devices import parse_ctx
from ..embedding import embed_images, extract_embeddings
from ..evaluation.protocols import evaluate_bin, evaluate_identities
from .callbacks import Callback, RunInfo, StepInfo
from .checkpoint import CheckpointError, build_backbone, load_model, resolve_checkpoint
from .config import ConfigError, TrainConfig, list_presets
from .optim import AdamW, build_lr_scheduler, build_optimizer
from .trainer import FaceTrainer, TrainingDiverged, find_val_targets, train

__all__ = [
    "AdamW", "Callback", "CheckpointError", "ConfigError", "FaceTrainer", "RunInfo", "StepInfo",
    "TrainConfig", "TrainingDiverged",
    "build_backbone", "build_lr_scheduler", "build_optimizer", "embed_images", "evaluate_bin",
    "evaluate_identities", "extract_embeddings", "find_val_targets", "list_presets",
    "load_model", "parse_ctx", "resolve_checkpoint", "train",
]

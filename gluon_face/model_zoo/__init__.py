"""Backbones: Face-ResNet (insightface IR-ResNet 18/34/50/100), a registry, and counts.

``get_model('faceresnet50', emb_size=512)`` builds an uninitialised backbone
``(B, 3, H, W) -> (B, emb_size)``; ``get_faceresnet(50, 512)`` is the book's
initialising factory; :func:`summarize` counts parameters and MACs per layer
without running (or even initialising) the network.  :class:`RawPixels` is the
no-network baseline (the centred pixels as the embedding).
"""
from .baselines import RawPixels
from .faceresnet import BasicBlockV3, FaceResNet, faceresnet_spec, get_faceresnet
from .registry import MODELS, get_model, list_models
from .summary import ModelSummary, count_declared, register_walker, summarize

__all__ = [
    "BasicBlockV3", "FaceResNet", "MODELS", "ModelSummary", "RawPixels", "count_declared",
    "faceresnet_spec", "get_faceresnet", "get_model", "list_models", "register_walker",
    "summarize",
]

"""Backbones: Face-ResNet (insightface IR-ResNet 18/34/50/100), MobileFaceNet, a registry,
counts, and insightface's MXNet checkpoints in and out.

``get_model('faceresnet50', emb_size=512)`` builds an uninitialised backbone
``(B, 3, H, W) -> (B, emb_size)``; ``get_faceresnet(50, 512)`` is the book's
initialising factory; :func:`summarize` counts parameters and MACs per layer
without running (or even initialising) the network.  :class:`RawPixels` is the
no-network baseline (the centred pixels as the embedding).
:func:`from_insightface` / :func:`to_insightface` read and write insightface's
``prefix-symbol.json`` + ``prefix-0000.params`` pairs.
"""
from .baselines import RawPixels
from .faceresnet import BasicBlockV3, FaceResNet, faceresnet_spec, get_faceresnet
from .insightface import InsightFaceError, from_insightface, to_insightface
from .mobilefacenet import DepthwiseResidual, MobileFaceNet
from .registry import MODELS, get_model, list_models
from .summary import ModelSummary, count_declared, register_walker, summarize

__all__ = [
    "BasicBlockV3", "DepthwiseResidual", "FaceResNet", "InsightFaceError", "MODELS",
    "MobileFaceNet", "ModelSummary", "RawPixels", "count_declared", "faceresnet_spec",
    "from_insightface", "get_faceresnet", "get_model", "list_models", "register_walker",
    "summarize", "to_insightface",
]

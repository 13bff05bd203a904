"""Heads (embeddings, labels) -> logits, and the losses that go with them.

Every head is an uninitialised :class:`mxnet.gluon.HybridBlock` called as
``head(embeddings (B, E), labels (B,)) -> logits (B, C)``; the cross-entropy is
separate (:class:`SoftmaxCrossEntropyLoss`).  :func:`get_head` builds them by
their ``--loss`` name.
"""
from .adacos import AdaCos, fixed_adacos_scale
from .asoftmax import ASoftmax, asoftmax_lambda
from .losses import CenterLoss, SoftmaxCrossEntropyLoss
from .margin import MARGIN_PRESETS, ArcMarginBlock
from .registry import get_head, head_keywords, list_heads
from .softmax import L2Softmax, NormFace, SoftmaxBlock

__all__ = [
    "ASoftmax", "AdaCos", "ArcMarginBlock", "CenterLoss", "L2Softmax", "MARGIN_PRESETS",
    "NormFace", "SoftmaxBlock", "SoftmaxCrossEntropyLoss", "asoftmax_lambda",
    "fixed_adacos_scale", "get_head", "head_keywords", "list_heads",
]

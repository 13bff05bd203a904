"""Heads (embeddings, labels) -> logits, and the losses that go with them.

Every head is an uninitialised :class:`mxnet.gluon.HybridBlock` called as
``head(embeddings (B, E), labels (B,)) -> logits (B, C)``; the cross-entropy is
separate (:class:`SoftmaxCrossEntropyLoss`).  :func:`get_head` builds them by
their ``--loss`` name.  :class:`Margin` is the angular margin apart from any
class centres, and :data:`MARGIN_PRESETS` the one table of its named variants.
"""
from .._lazy import lazy_attributes
from .margins import MARGIN_PRESETS, Margin

# Name -> module of this package that defines it.  gluon_face.evaluation, which is
# plain numpy and must import without MXNet, takes the margin formula and presets
# from .margins; importing any module of this package runs this file first, so the
# MXNet heads are imported when one of their names is first looked up here.
_LAZY = {
    "ASoftmax": "asoftmax",
    "asoftmax_lambda": "asoftmax",
    "AdaCos": "adacos",
    "fixed_adacos_scale": "adacos",
    "ArcMarginBlock": "margin",
    "CenterLoss": "losses",
    "SoftmaxCrossEntropyLoss": "losses",
    "L2Softmax": "softmax",
    "NormFace": "softmax",
    "SoftmaxBlock": "softmax",
    "get_head": "registry",
    "head_keywords": "registry",
    "list_heads": "registry",
}

__all__ = [
    "ASoftmax", "AdaCos", "ArcMarginBlock", "CenterLoss", "L2Softmax", "MARGIN_PRESETS",
    "Margin", "NormFace", "SoftmaxBlock", "SoftmaxCrossEntropyLoss", "asoftmax_lambda",
    "fixed_adacos_scale", "get_head", "head_keywords", "list_heads",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

"""The head registry: ``--loss`` names -> heads, mirroring the model registry.

===============  ===========================================================
name             head
===============  ===========================================================
softmax          :class:`SoftmaxBlock`, plain FC logits ``x W^T``
normface         :class:`NormFace`, ``s * cos`` with optionally learned ``s``
cosine           :class:`ArcMarginBlock` preset, ``s * cos`` (no margin)
l2softmax        :class:`L2Softmax`, features rescaled to norm ``alpha`` + FC
sphereface       :class:`ArcMarginBlock` preset, ``cos(1.35 theta)``
asoftmax         :class:`ASoftmax`, SphereFace's psi(theta) with integer m
cosface          :class:`ArcMarginBlock` preset, ``cos - 0.35``
arcface          :class:`ArcMarginBlock` preset, ``cos(theta + 0.5)``
combined         :class:`ArcMarginBlock` preset, ``cos(theta + 0.3) - 0.2``
adacos           :class:`AdaCos`, dynamic scale
fixed-adacos     :class:`AdaCos`, fixed scale ``sqrt(2) ln(C-1)``
===============  ===========================================================

The :class:`ArcMarginBlock` presets come from :data:`~gluon_face.heads.MARGIN_PRESETS`.
"""
import inspect

from .._registry import Registry
from .adacos import AdaCos
from .asoftmax import ASoftmax
from .margin import ArcMarginBlock
from .margins import MARGIN_PRESETS, Margin
from .softmax import L2Softmax, NormFace, SoftmaxBlock

HEADS = Registry("head")

#: Keywords every head passes on to :class:`mxnet.gluon.HybridBlock`.
_BLOCK_KW = ("prefix", "params")


def _constructor_keywords(cls):
    skip = {"self", "emb_size", "num_classes"}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                 if p.kind in kinds and p.name not in skip)


#: Keywords of the ArcMarginBlock presets: the margin's.
_MARGIN_KW = _constructor_keywords(Margin)


def _register(name, build, accepted):
    accepted = tuple(accepted)

    def factory(emb_size, num_classes, **kwargs):
        unknown = sorted(set(kwargs) - set(accepted) - set(_BLOCK_KW))
        if unknown:
            bad = ", ".join(repr(k) for k in unknown)
            raise ValueError(f"head {name!r} does not take {bad}; it accepts: "
                             f"{', '.join(accepted + _BLOCK_KW)}")
        return build(emb_size, num_classes, **kwargs)

    factory.__name__ = "head_" + name.replace("-", "_")
    factory.__doc__ = f"Build the {name!r} head; keywords: {', '.join(accepted) or 'none'}."
    factory.accepted = accepted
    HEADS.register(name)(factory)


def _preset(name):
    def build(emb_size, num_classes, **kwargs):
        return ArcMarginBlock.from_preset(name, emb_size, num_classes, **kwargs)
    return build


_register("softmax", SoftmaxBlock, _constructor_keywords(SoftmaxBlock))
_register("normface", NormFace, _constructor_keywords(NormFace))
_register("l2softmax", L2Softmax, _constructor_keywords(L2Softmax))
_register("asoftmax", ASoftmax, _constructor_keywords(ASoftmax))
# Every margin preset is a head under its own name, except normface, registered above as
# NormFace (the same logits, and it can also learn s).
for _name in MARGIN_PRESETS:
    if _name not in HEADS:
        _register(_name, _preset(_name), _MARGIN_KW)
_register("adacos", lambda e, c, **kw: AdaCos(e, c, dynamic=True, **kw), ())
_register("fixed-adacos", lambda e, c, **kw: AdaCos(e, c, dynamic=False, **kw), ())


def get_head(name, emb_size, num_classes, **kwargs):
    """Build the registered head ``name`` (uninitialised).

    Parameters
    ----------
    name : str
        One of :func:`list_heads` (the ``--loss`` names).
    emb_size, num_classes : int
    **kwargs
        Keywords of that head (see :func:`head_keywords`), plus gluon's
        ``prefix`` / ``params``.

    Returns
    -------
    mxnet.gluon.HybridBlock
        ``head(embeddings (B, E), labels (B,)) -> logits (B, C)``.

    Raises
    ------
    ValueError
        Unknown name (listing the valid ones), or a keyword the head does not
        take (naming it and the accepted ones).
    """
    return HEADS.get(name)(emb_size, num_classes, **kwargs)


def list_heads():
    """Sorted registered head names."""
    return HEADS.names()


def head_keywords(name):
    """Keywords of head ``name`` besides ``emb_size``, ``num_classes``, ``prefix``, ``params``."""
    return HEADS.get(name).accepted

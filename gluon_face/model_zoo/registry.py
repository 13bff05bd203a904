"""The model registry: ``--network`` names -> backbones.

Sizes at 112x112 with a 512-d embedding (batch-norm running statistics not
counted; :func:`gluon_face.model_zoo.summarize` gives them for any settings):

==============  ==========================  ===========  =========
name            units per stage             parameters   GMAC
==============  ==========================  ===========  =========
faceresnet18    [2, 2, 2, 2]                24.03 M      2.61
faceresnet34    [3, 4, 6, 3]                34.14 M      4.46
faceresnet50    [3, 4, 14, 3] (ins. r50)    43.59 M      6.31
faceresnet100   [3, 13, 30, 3] (ins. r100)  65.16 M      12.09
mobilefacenet   [1, 4, 6, 2] (ins. y1)      1.20 M       0.22
==============  ==========================  ===========  =========

``mobilefacenet`` embeds in 128 dimensions by default (insightface's y1): then it
has 1.00 M parameters (1,003,264), the figure insightface publishes.
"""
from .._registry import Registry

MODELS = Registry("model")

#: Keywords every registered model accepts (those of :class:`FaceResNet` after
#: the spec, gluon's ``prefix`` / ``params``, and ``layers`` / ``channels``, which
#: replace the spec's units per stage and widths); ``stem`` is FaceResNet's own.
MODEL_KEYWORDS = ("emb_size", "use_dropout", "act_type", "output", "image_size",
                  "in_channels", "stem", "prefix", "params", "layers", "channels")


def get_model(name, **kwargs):
    """Build the registered backbone ``name``, uninitialised.

    Parameters
    ----------
    name : str
        One of :func:`list_models` (the ``--network`` names).
    **kwargs
        ``emb_size`` (default 512), ``use_dropout`` (False), ``act_type``
        ('prelu' or 'relu'), ``output`` ('E'), ``image_size`` (112, or
        (H, W); multiples of 16), ``in_channels`` (3), ``stem`` ('3x3', the
        3x3 stride-1 first convolution of insightface's ``net_input`` 1, or
        '7x7', the 7x7 stride-2 one of its ``net_input`` 0; FaceResNet only),
        ``prefix``, ``params``;
        ``layers`` (units per stage, e.g. ``[1, 1, 1, 1]``) and ``channels``
        (stem + one width per stage, e.g. ``[16, 16, 32, 64, 128]``) replace the
        named network's.

    Returns
    -------
    mxnet.gluon.HybridBlock
        ``net(x (B, 3, H, W)) -> (B, emb_size)``; call ``initialize`` before use.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), an unknown keyword, or
        a bad value.
    """
    factory = MODELS.get(name)
    unknown = sorted(set(kwargs) - set(MODEL_KEYWORDS))
    if unknown:
        raise ValueError(f"model {name!r} does not take {', '.join(map(repr, unknown))}; "
                         f"it accepts: {', '.join(MODEL_KEYWORDS)}")
    return factory(**kwargs)


def list_models():
    """Sorted registered model names."""
    return MODELS.names()

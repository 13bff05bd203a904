"""The angular-margin head (SphereFace / CosFace / ArcFace / combined): class centres + a Margin."""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.util import use_np

from . import _kernels
from ._utils import check_positive_int, index_copy_targets, l2_normalize, normalize_centres
from .margins import Margin, preset_kwargs


@use_np
class ArcMarginBlock(nn.HybridBlock):
    r"""Additive/multiplicative angular and additive cosine margin head.

    The class centres :math:`W` (C, E) and a :class:`~gluon_face.heads.Margin`.
    With :math:`\hat x = x/\|x\|`, :math:`\hat w_j = w_j/\|w_j\|` and
    :math:`\cos\theta_j = \hat x\cdot\hat w_j`, the logits are

    .. math::

        z_j = s\cos\theta_j \quad (j \ne y), \qquad
        z_y = s\,\big(\cos(a\,\theta_y + m) - b\big),

    with the margin's fallback past :math:`\pi`, ``easy_margin`` variant and
    clamps (see :class:`~gluon_face.heads.Margin`): SphereFace, CosFace, ArcFace,
    insightface's combined margin, or with no margin NormFace's scaled cosine.
    Feed the logits to a cross-entropy, e.g. :class:`SoftmaxCrossEntropyLoss`.

    **Numerics.** Only the :math:`B` target cosines (picked with ``npx.pick``)
    go through the margin; the :math:`B\times C` matrix is only scaled.  The
    scale is applied to the normalised embeddings before the product (bit-exact
    for a power-of-two ``s``), and the B target logits are written into the
    logits in one pass over the (B, C) array forward and one backward.  With
    numba installed (the ``cpu`` extra) the class centres are normalised and
    the targets written by two fused CPU kernels
    (:mod:`gluon_face.heads._kernels`: MXNet's own operators for these steps
    are single-threaded or copy the logits); without it, by MXNet's
    ``L2Normalization`` and ``index_copy``.

    Parameters
    ----------
    emb_size : int
        Embedding dimension :math:`E`.
    num_classes : int
        Number of identities :math:`C`.
    margin_s, margin_m, margin_a, margin_b, easy_margin
        The :class:`~gluon_face.heads.Margin` (defaults: ArcFace, ``s = 64``,
        ``m = 0.5``).
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Attributes
    ----------
    fc7_weight : Parameter, shape (num_classes, emb_size)
        Class centres (the book's and insightface's checkpoint key), initialised
        from ``Normal(0.01)`` by a bare ``initialize()``.
    margin : Margin
        The scale and margins; ``margin_s`` ... ``easy_margin`` read them.

    Inputs: ``x`` (B, E) float32 embeddings, ``y`` (B,) float32 labels in [0, C)
    (checked by the numba kernel: a label outside fails the step with
    ``MXNetError``, MXNet printing the operator's message; not checked on the
    ``index_copy`` path, where that would cost a device synchronisation).
    Output: logits (B, C).

    Examples
    --------
    >>> head = ArcMarginBlock(emb_size=512, num_classes=100)
    >>> head.initialize()
    >>> head(np.random.uniform(size=(2, 512)), np.ones((2,))).shape
    (2, 100)
    """

    def __init__(self, emb_size, num_classes, margin_s=64.0, margin_m=0.5, margin_a=1.0,
                 margin_b=0.0, easy_margin=False, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.margin = Margin(margin_s=margin_s, margin_m=margin_m, margin_a=margin_a,
                             margin_b=margin_b, easy_margin=easy_margin)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))

    @classmethod
    def from_preset(cls, name, emb_size, num_classes, **overrides):
        """Build the variant ``name`` of :data:`~gluon_face.heads.MARGIN_PRESETS`, with
        keyword ``overrides``.

        A deprecated name (``softmax``, now ``cosine``) warns with a
        ``DeprecationWarning`` and builds its successor.  ``ValueError`` listing
        the presets when ``name`` is unknown.
        """
        # The warning names the caller's line: @use_np wraps this method twice.
        return cls(emb_size, num_classes, **preset_kwargs(name, overrides, stacklevel=4))

    # The margin's values, under the keyword names of the constructor.
    margin_s = property(lambda self: self.margin.margin_s, doc="Scale s.")
    margin_m = property(lambda self: self.margin.margin_m, doc="Additive angular margin m.")
    margin_a = property(lambda self: self.margin.margin_a, doc="Multiplicative margin a.")
    margin_b = property(lambda self: self.margin.margin_b, doc="Additive cosine margin b.")
    easy_margin = property(lambda self: self.margin.easy_margin, doc="Margin only if cos > 0.")

    def target_logit(self, F, cos_t):
        """Margin target :math:`z_y/s` from the target cosines ``cos_t`` (B,) -> (B,)."""
        return self.margin.target_logit(F, cos_t)

    def forward(self, x, y=None):
        """Logits (B, C) of embeddings ``x`` (B, E) with labels ``y`` (B,).

        ``y`` may be omitted only when there is no margin (``cosine``/``normface``
        presets); it is then not used at all.
        """
        if self.margin.margin_free:
            # Keeps the unused labels out of the cached graph.
            return super().forward(x)
        if y is None:
            raise ValueError(f"{type(self).__name__} with a margin needs labels: head(x, y)")
        return super().forward(x, y)

    def hybrid_forward(self, F, x, y=None, fc7_weight=None):
        s = self.margin.margin_s
        # Scaling the (B, E) embeddings instead of the (B, C) cosines saves a full pass
        # over the logits forward and backward; for s a power of two it is bit-exact.
        fast = _kernels.AVAILABLE
        logits = F.npx.fully_connected(l2_normalize(F, x) * s, normalize_centres(F, fc7_weight),
                                       no_bias=True, num_hidden=self.num_classes)
        if self.margin.margin_free:
            return logits
        scaled_t = F.npx.pick(logits, y, axis=1)
        target = self.margin.target_logit(F, scaled_t * (1.0 / s))
        if fast:  # one pass over the (B, C) logits forward and one backward
            return _kernels.set_targets(F, logits, y, target * s)
        return index_copy_targets(F, logits, y, target * s, self.num_classes)

    def __repr__(self):
        return (f"{type(self).__name__}(emb_size={self.emb_size}, "
                f"num_classes={self.num_classes}, margin_s={self.margin_s:g}, "
                f"margin_m={self.margin_m:g}, margin_a={self.margin_a:g}, "
                f"margin_b={self.margin_b:g}, easy_margin={self.easy_margin})")

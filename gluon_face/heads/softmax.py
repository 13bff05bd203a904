"""Margin-free heads: the plain fully connected softmax, L2-constrained softmax and NormFace."""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.util import use_np

from ._utils import check_bool, check_positive_int, check_real, l2_normalize, normalize_centres


@use_np
class SoftmaxBlock(nn.HybridBlock):
    r"""Plain fully connected classifier: :math:`z = x W^\top (+\, b)`.

    The registry's ``softmax`` head (``--loss softmax``).  Not to be confused with
    the ``softmax`` preset of :class:`ArcMarginBlock`, which normalises features
    and weights and returns :math:`s\cos\theta`.  This is the chapter's
    ``SoftmaxBlock`` made to work (the book's calls ``super(ArcMarginBlock, ...)``
    and multiplies an undefined ``n``).

    Parameters
    ----------
    emb_size : int
        Embedding dimension :math:`E`.
    num_classes : int
        Number of identities :math:`C`.
    use_bias : bool, default False
        Add a learned bias ``fc7_bias`` (C,).
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, E) and, for the same call shape as the margin heads, an
    optional ``y`` (B,) that is ignored.  Output: logits (B, C).
    ``fc7_weight`` (C, E) starts from ``Normal(0.01)`` as in the book.
    """

    def __init__(self, emb_size, num_classes, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.use_bias = check_bool("use_bias", use_bias)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))
        self.fc7_bias = (self.params.get("fc7_bias", shape=(self.num_classes,),
                                         init=mx.init.Zero()) if use_bias else None)

    def forward(self, x, y=None):  # noqa: D401 - labels are accepted and ignored
        """Logits (B, C) of ``x`` (B, E); ``y`` is ignored."""
        return super().forward(x)

    def hybrid_forward(self, F, x, fc7_weight, fc7_bias=None):
        if fc7_bias is None:
            return F.npx.fully_connected(x, fc7_weight, no_bias=True,
                                         num_hidden=self.num_classes)
        return F.npx.fully_connected(x, fc7_weight, fc7_bias, num_hidden=self.num_classes)


@use_np
class L2Softmax(nn.HybridBlock):
    r"""L2-constrained softmax (Ranjan et al. 2017, https://arxiv.org/abs/1703.09507).

    Features are rescaled to the fixed norm :math:`\alpha`, then go through a
    plain fully connected layer (weights not normalised):

    .. math:: z = \alpha\,\frac{x}{\|x\|}\,W^\top (+\, b).

    The paper's lower bound for :math:`\alpha` that lets the softmax reach
    probability :math:`p` is :math:`\log\frac{p(C-2)}{1-p}`.

    Parameters
    ----------
    emb_size : int
    num_classes : int
    alpha : float, default 16.0
        Feature norm :math:`\alpha > 0`.
    use_bias : bool, default False
        Add a learned bias ``fc7_bias`` (C,).
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, E); ``y`` (B,) accepted and ignored.  Output: logits (B, C).
    """

    def __init__(self, emb_size, num_classes, alpha=16.0, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.alpha = check_real("alpha", alpha, low=0.0, low_open=True)
        self.use_bias = check_bool("use_bias", use_bias)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))
        self.fc7_bias = (self.params.get("fc7_bias", shape=(self.num_classes,),
                                         init=mx.init.Zero()) if use_bias else None)

    def forward(self, x, y=None):
        """Logits (B, C) of ``x`` (B, E); ``y`` is ignored."""
        return super().forward(x)

    def hybrid_forward(self, F, x, fc7_weight, fc7_bias=None):
        x = l2_normalize(F, x) * self.alpha
        if fc7_bias is None:
            return F.npx.fully_connected(x, fc7_weight, no_bias=True,
                                         num_hidden=self.num_classes)
        return F.npx.fully_connected(x, fc7_weight, fc7_bias, num_hidden=self.num_classes)


@use_np
class NormFace(nn.HybridBlock):
    r"""NormFace (Wang et al. 2017, https://arxiv.org/abs/1704.06369).

    Normalised features and class weights, cosine logits times a scale:

    .. math:: z_j = s\,\frac{x}{\|x\|}\cdot\frac{w_j}{\|w_j\|} = s\cos\theta_j.

    With ``learn_scale=True`` :math:`s` is a learned parameter ``scale`` (1,)
    initialised to ``margin_s`` (the paper learns it); otherwise it is the
    constant ``margin_s`` (the same as ``ArcMarginBlock.from_preset('normface')``).

    Parameters
    ----------
    emb_size : int
    num_classes : int
    margin_s : float, default 64.0
        (Initial) scale :math:`s > 0`.
    learn_scale : bool, default False
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, E); ``y`` (B,) accepted and ignored.  Output: logits (B, C).
    """

    def __init__(self, emb_size, num_classes, margin_s=64.0, learn_scale=False, **kwargs):
        super().__init__(**kwargs)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.margin_s = check_real("margin_s", margin_s, low=0.0, low_open=True)
        self.learn_scale = check_bool("learn_scale", learn_scale)
        self.fc7_weight = self.params.get("fc7_weight", shape=(self.num_classes, self.emb_size),
                                          init=mx.init.Normal(0.01))
        self.scale = (self.params.get("scale", shape=(1,), init=mx.init.Constant(self.margin_s))
                      if learn_scale else None)

    def forward(self, x, y=None):
        """Logits (B, C) of ``x`` (B, E); ``y`` is ignored."""
        return super().forward(x)

    def hybrid_forward(self, F, x, fc7_weight, scale=None):
        cos = F.npx.fully_connected(l2_normalize(F, x), normalize_centres(F, fc7_weight),
                                    no_bias=True, num_hidden=self.num_classes)
        return cos * (self.margin_s if scale is None else scale)

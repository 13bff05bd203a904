"""Losses that go with the heads: label-smoothed cross-entropy and the center loss."""
import mxnet as mx
from mxnet import autograd, np, npx
from mxnet.gluon import loss as gloss
from mxnet.util import use_np

from ._utils import check_positive_int, check_real


@use_np
class SoftmaxCrossEntropyLoss(gloss.Loss):
    r"""Per-sample softmax cross-entropy with uniform label smoothing.

    With :math:`p = \mathrm{softmax}(z)` and the smoothed target
    :math:`q = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon/C`,

    .. math::

        \ell = -\sum_j q_j\log p_j
             = -(1-\varepsilon)\log p_y - \varepsilon\,\frac1C\sum_j \log p_j .

    Label smoothing belongs here, in the loss, and not in the head.  The
    ArcMarginProduct seed smooths the one-hot it uses to *place the margin*
    (``one_hot * phi + (1 - one_hot) * cos``): that does not smooth the
    cross-entropy target at all, it hands a fraction :math:`\varepsilon/C` of
    the margin to every other class and takes it from the true one.

    Parameters
    ----------
    ls_eps : float, default 0.0
        Smoothing :math:`\varepsilon \in [0, 1)`.
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``pred`` logits (B, C), ``label`` (B,) float32.  Output: loss (B,).
    """

    def __init__(self, ls_eps=0.0, **kwargs):
        super().__init__(weight=None, batch_axis=0, **kwargs)
        self.ls_eps = check_real("ls_eps", ls_eps, low=0.0, high=1.0, high_open=True)

    def hybrid_forward(self, F, pred, label):
        log_p = F.npx.log_softmax(pred, axis=-1)
        loss = -F.npx.pick(log_p, label, axis=-1)
        if self.ls_eps > 0.0:
            loss = (1.0 - self.ls_eps) * loss - self.ls_eps * F.np.mean(log_p, axis=-1)
        return loss


@use_np
class CenterLoss(gloss.Loss):
    r"""Center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for
    Deep Face Recognition", ECCV).

    Per sample, :math:`\ell_i = \tfrac12\|x_i - c_{y_i}\|^2`; the gradient goes to
    the embeddings only.  The centres ``centers`` (C, E), initialised to zero,
    have ``grad_req='null'``: the optimiser never moves them.  Instead every
    training forward (``autograd.is_training()``), after computing the loss
    with the current centres, applies the paper's update

    .. math::

        \Delta c_j = \frac{\sum_{i: y_i=j}(c_j - x_i)}{1 + n_j},\qquad
        c_j \leftarrow c_j - \alpha\,\Delta c_j,

    with :math:`n_j` the number of samples of class :math:`j` in the batch
    (classes absent from the batch do not move).  The update is written to
    every device copy of ``centers`` so that the copies stay equal under data
    parallelism.  This happens in an overridden :meth:`forward` around the
    hybridized part.

    The notebook seed's ``alpha`` is a retention factor: it moves each centre
    by :math:`(1-\alpha_{nb})(c_{y_i} - x_i)` per sample without the
    :math:`1/(1+n_j)`; the two agree when
    :math:`\alpha/(1+n_j) = 1-\alpha_{nb}`, so its default 0.9 is a rate of
    about :math:`0.2` here for classes seen once per batch.  (Its loss is also
    the mean over the features rather than the paper's :math:`\tfrac12` sum.)

    Combine with a cross-entropy: ``ce + lambda_c * center_loss`` (the paper
    uses :math:`\lambda_c` around 0.003-0.01).

    Parameters
    ----------
    num_classes : int
    emb_size : int
    alpha : float, default 0.5
        Centre learning rate :math:`\alpha \in [0, 1]`.
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` embeddings (B, E) float32, ``y`` (B,) float32 labels.  Output: loss (B,).
    """

    def __init__(self, num_classes, emb_size, alpha=0.5, **kwargs):
        super().__init__(weight=None, batch_axis=0, **kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.alpha = check_real("alpha", alpha, low=0.0, high=1.0)
        self.centers = self.params.get("centers", shape=(self.num_classes, self.emb_size),
                                       grad_req="null", init=mx.init.Zero())

    def forward(self, x, y):
        """Loss (B,); moves the centres afterwards while training (see class doc)."""
        loss = super().forward(x, y)
        if autograd.is_training() and not isinstance(x, mx.sym.Symbol) and self.alpha > 0:
            with autograd.pause():
                centers = self.centers.data(x.ctx)
                one_hot = npx.one_hot(y, self.num_classes)            # (B, C)
                counts = one_hot.sum(axis=0)[:, None]                 # (C, 1)
                sums = np.dot(one_hot.T, x)                           # (C, E)
                step = self.alpha * (counts * centers - sums) / (1.0 + counts)
                for arr in self.centers.list_data():
                    arr[:] = arr - step.as_in_ctx(arr.ctx)
        return loss

    def hybrid_forward(self, F, x, y, centers):
        diff = x - F.np.take(centers, y.astype("int32"), axis=0)
        return 0.5 * F.np.sum(diff * diff, axis=1)

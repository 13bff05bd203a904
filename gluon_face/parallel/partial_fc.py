"""Partial FC: the margin head trained on the batch's classes plus sampled negatives."""
import math

import numpy as onp

from ..heads._utils import check_real
from ..heads.margins import MARGIN_PRESETS, resolve_preset
from .sharded import ShardedMarginHead


class PartialFC(ShardedMarginHead):
    r"""Sharded margin head that uses a random subset of the class centres per step.

    Partial FC (An et al., "Partial FC: Training 10 Million Identities on a
    Single Machine", https://arxiv.org/abs/2010.05222).  Each step and each
    shard of :math:`C_k` classes uses

    * every class of the batch that lives on the shard (the positives), and
    * negatives drawn uniformly without replacement from the shard's other
      classes, up to :math:`\lfloor r\,C_k\rfloor` rows in all (at least one;
      when the positives alone are more, exactly the positives).

    The softmax cross-entropy is taken over the sampled classes only (an
    estimate of the full one that keeps the margin on the true class), so
    the centres of the other classes get no gradient this step and are
    left exactly as they are, *and so is their optimizer state*: the sampled
    rows and their state rows (momentum, Adam moments) are gathered, updated
    by the optimizer with weight decay, and scattered back.  Memory and time
    of the logits and of the normalisation scale with :math:`r\,C`; the full
    centre matrix and its optimizer state still live on the shards.

    With ``sample_rate=1`` nothing is sampled: it is the full
    :class:`ShardedMarginHead`.  Label smoothing spreads
    :math:`\varepsilon` over the sampled classes.  ``forward_backward(...,
    backward=False)`` samples too: its losses are the same estimate.

    Parameters
    ----------
    emb_size, num_classes, ctx_list, margin_s, margin_m, margin_a, margin_b, easy_margin, ls_eps
        As :class:`ShardedMarginHead`.
    sample_rate : float, default 0.1
        Fraction :math:`r \in (0, 1]` of each shard's classes used per step.
    seed : int, optional
        Seed of the sampler (numpy ``default_rng``); its state is saved by
        :meth:`save_states`, so a resumed run draws the same samples.
    """

    def __init__(self, emb_size, num_classes, ctx_list=None, sample_rate=0.1, seed=None,
                 **kwargs):
        super().__init__(emb_size, num_classes, ctx_list=ctx_list, **kwargs)
        self.sample_rate = check_real("sample_rate", sample_rate, low=0.0, high=1.0,
                                      low_open=True)
        self._rng = onp.random.default_rng(seed)

    def num_sampled(self, shard):
        """Rows drawn on ``shard`` when its positives are fewer: ``max(1, floor(r C_k))``."""
        return max(1, int(math.floor(self.sample_rate * shard.size)))

    def _select_rows(self, shard, positives):
        if self.sample_rate >= 1.0:
            return None
        total = self.num_sampled(shard)
        if positives.size >= total:
            return positives.astype(onp.int64)
        free = onp.ones(shard.size, dtype=bool)
        free[positives] = False
        negatives = onp.flatnonzero(free)
        pick = self._rng.choice(negatives.size, total - positives.size, replace=False)
        return onp.sort(onp.concatenate([positives.astype(onp.int64), negatives[pick]]))

    def _extra_state(self):
        return {"rng": self._rng.bit_generator.state}

    def _load_extra_state(self, extra):
        if "rng" in extra:
            self._rng.bit_generator.state = extra["rng"]

    def __repr__(self):
        return super().__repr__()[:-1] + f", sample_rate={self.sample_rate:g})"


def get_parallel_head(loss, emb_size, num_classes, ctx_list=None, sample_rate=1.0, seed=None,
                      **kwargs):
    """The head for ``--loss LOSS --model-parallel [--sample-rate R]``.

    Parameters
    ----------
    loss : str
        A margin preset of :data:`~gluon_face.heads.MARGIN_PRESETS`: ``arcface``,
        ``cosface``, ``sphereface``, ``combined``, or the margin-free scaled
        cosine ``s cos(theta)``, ``cosine`` (also ``normface``).  ``softmax``,
        this cosine head's former name, still works with a ``DeprecationWarning``
        (it is otherwise the plain fully connected
        :class:`~gluon_face.heads.SoftmaxBlock`, which has no parallel form).
    emb_size, num_classes, ctx_list
        As :class:`ShardedMarginHead`.
    sample_rate : float, default 1.0
        1 gives the exact :class:`ShardedMarginHead`; below 1, :class:`PartialFC`.
    seed : int, optional
        Sampler seed (Partial FC only).
    **kwargs
        ``margin_s/m/a/b``, ``easy_margin``, ``ls_eps`` overriding the preset.

    Returns
    -------
    ShardedMarginHead or PartialFC
        Uninitialised.
    """
    try:
        loss = resolve_preset(loss)
    except ValueError:
        valid = ", ".join(sorted(MARGIN_PRESETS))
        raise ValueError(f"loss {loss!r} has no model-parallel head; valid: {valid}") from None
    rate = check_real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True)
    if rate == 1.0:
        return ShardedMarginHead.from_preset(loss, emb_size, num_classes, ctx_list, **kwargs)
    return PartialFC.from_preset(loss, emb_size, num_classes, ctx_list, sample_rate=rate,
                                 seed=seed, **kwargs)

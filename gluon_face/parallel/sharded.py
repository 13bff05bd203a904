"""Margin softmax cross-entropy with the class centres split across contexts."""
import io
import json

import mxnet as mx
import numpy as onp
from mxnet import autograd, np, npx
from mxnet.util import use_np

from .._io import atomic_path
from .._mxnet import error_message
from ..graph import mxnet_compat
from ..heads import _kernels
from ..heads._utils import check_positive_int, check_real, l2_normalize, normalize_centres
from ..heads.margins import Margin, preset_kwargs

#: Parameter-file key of the class centres, the same as :class:`ArcMarginBlock`'s.
WEIGHT_KEY = "fc7_weight"


class _Shard:
    """One context's share of the class centres and what a step leaves behind."""

    def __init__(self, ctx, offset, size):
        self.ctx = ctx
        self.offset = offset          # first global class id of the shard
        self.size = size              # number of classes held
        self.weight = None            # (size, E) on ctx
        self.state = None             # optimizer state of `weight` (legacy NDArrays)
        self.rows = None              # sampled local rows (host int64, sorted) or None = all
        self.rows_nd = None
        self.used_weight = None       # weight rows of the last step, with .grad
        self.num_logits = 0           # columns of the last step's logits


def _split_sizes(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _as_list(arrays, what):
    if isinstance(arrays, (list, tuple)):
        arrays = list(arrays)
    else:
        arrays = [arrays]
    if not arrays:
        raise ValueError(f"{what}: empty list")
    return arrays


def _state_leaves(state):
    """Arrays of a (possibly nested) optimizer state, in a fixed order."""
    if state is None:
        return []
    if isinstance(state, (list, tuple)):
        return [leaf for item in state for leaf in _state_leaves(item)]
    return [state]


def _state_map(state, fn):
    """The state with ``fn`` applied to every array (same nesting)."""
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return type(state)(_state_map(item, fn) for item in state)
    return fn(state)


class ShardedMarginHead:
    r"""Model-parallel margin head + softmax cross-entropy: sharded centres and a Margin.

    The class-centre matrix :math:`W` (C, E) is split by rows into
    ``len(ctx_list)`` contiguous shards, one per context (shard :math:`k` holds
    classes ``offset_k .. offset_k + C_k - 1``).  A step gathers the embeddings
    of every data-parallel context onto every shard, computes that shard's
    margin logits :math:`z^{(k)}` (B, C_k) (the target margin only on the shard
    that owns the label), and combines the shards exactly, as in the d2l
    model-parallel section:

    .. math::

        M = \max_k \max_j z^{(k)}_{j},\qquad
        S = \sum_k \sum_j e^{z^{(k)}_j - M},\qquad
        \ell = M + \log S - z_y ,

    per sample (with label smoothing :math:`\varepsilon`,
    :math:`\ell = (1-\varepsilon)(M+\log S-z_y) + \varepsilon(M+\log S-\bar z)`,
    :math:`\bar z` the mean logit over all classes).  Only (B,) vectors travel
    between shards.  The logit gradient :math:`e^{z-M}/S - \text{target}` is
    formed on each shard and back-propagated there, giving that shard's
    centre gradient and a (B, E) embedding gradient; the latter are summed over
    shards and handed back, split per data context, for the backbone's
    backward pass.  The result equals one ``ArcMarginBlock`` with the same
    margins followed by ``SoftmaxCrossEntropyLoss`` on one device (same
    formulas: both apply a :class:`~gluon_face.heads.Margin`, including its
    fallback past :math:`\pi`).

    The head owns its optimizer (a :mod:`mxnet.optimizer` one, as a Gluon
    ``Trainer`` would build): :meth:`step` updates every shard on its own
    context.  Gradients are those of the *sum* of per-sample losses, as for
    ``loss.backward()`` in Gluon; ``step(batch_size)`` rescales by
    ``1/batch_size`` like ``Trainer.step``.

    Typical loop (``embs``/``labels`` lists, one (B_i, E) / (B_i,) array per
    data context)::

        head = ShardedMarginHead.from_preset('arcface', 512, num_classes, ctx_list)
        head.initialize()
        head.init_optimizer('sgd', {'learning_rate': 0.1, 'momentum': 0.9, 'wd': 5e-4})
        with autograd.record():
            embs = [net(x) for x in data]
        losses, grads = head.forward_backward(embs, labels)
        autograd.backward(embs, grads)
        trainer.step(batch_size)       # backbone
        head.step(batch_size)          # class centres

    Parameters
    ----------
    emb_size : int
        Embedding dimension :math:`E`.
    num_classes : int
        Number of identities :math:`C` (at least one per context).  Labels
        travel as float32, exact up to :math:`2^{24}` classes.
    ctx_list : list of Context or Context, default ``[mx.cpu()]``
        Contexts holding the shards (GPUs, or CPU contexts standing in for them).
    margin_s, margin_m, margin_a, margin_b, easy_margin
        The :class:`~gluon_face.heads.Margin` (``s``, additive angular ``m`` in
        radians, multiplicative ``a``, additive cosine ``b``), as for
        :class:`~gluon_face.heads.ArcMarginBlock`.
    ls_eps : float, default 0.0
        Label smoothing of the cross-entropy, as
        :class:`~gluon_face.heads.SoftmaxCrossEntropyLoss`.

    Attributes
    ----------
    shards : list
        Per context: ``ctx``, ``offset``, ``size``, ``weight`` (C_k, E).
    margin : Margin
        The scale and margins.
    """

    def __init__(self, emb_size, num_classes, ctx_list=None, margin_s=64.0, margin_m=0.5,
                 margin_a=1.0, margin_b=0.0, easy_margin=False, ls_eps=0.0):
        self.emb_size = check_positive_int("emb_size", emb_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if ctx_list is None:
            ctx_list = [mx.cpu()]
        elif isinstance(ctx_list, mx.Context):
            ctx_list = [ctx_list]
        ctx_list = list(ctx_list)
        if not ctx_list or not all(isinstance(c, mx.Context) for c in ctx_list):
            raise ValueError(f"ctx_list must be a non-empty list of mx.Context, got {ctx_list!r}")
        if len(set(ctx_list)) != len(ctx_list):
            raise ValueError(f"ctx_list has repeated contexts: {ctx_list}")
        if self.num_classes < len(ctx_list):
            raise ValueError(f"num_classes={num_classes} is smaller than the number of "
                             f"contexts ({len(ctx_list)})")
        self.ls_eps = check_real("ls_eps", ls_eps, low=0.0, high=1.0, high_open=True)
        self.margin = Margin(margin_s=margin_s, margin_m=margin_m, margin_a=margin_a,
                             margin_b=margin_b, easy_margin=easy_margin)
        self.ctx_list = ctx_list
        self.shards = []
        offset = 0
        for ctx, size in zip(ctx_list, _split_sizes(self.num_classes, len(ctx_list))):
            self.shards.append(_Shard(ctx, offset, size))
            offset += size
        self._optimizer = None
        self._pending = False

    @classmethod
    def from_preset(cls, name, emb_size, num_classes, ctx_list=None, **overrides):
        """Build with the margins of ``MARGIN_PRESETS[name]`` (arcface, cosface, ...).

        A deprecated name (``softmax``, now ``cosine``) warns with a
        ``DeprecationWarning`` and builds its successor.  ``ValueError`` listing
        the presets when ``name`` is unknown.
        """
        return cls(emb_size, num_classes, ctx_list=ctx_list, **preset_kwargs(name, overrides))

    @property
    def margin_s(self):
        """Scale s of the margin."""
        return self.margin.margin_s

    # ------------------------------------------------------------------ weights
    @property
    def initialized(self):
        return all(shard.weight is not None for shard in self.shards)

    @use_np
    def initialize(self, init=None, force_reinit=False):
        """Allocate the class centres on their contexts and fill them.

        Parameters
        ----------
        init : mx.init.Initializer, default ``mx.init.Normal(0.01)``
            As ``ArcMarginBlock``'s default.
        force_reinit : bool
            Re-initialise an initialised head (otherwise ``RuntimeError``).
        """
        if self.initialized and not force_reinit:
            raise RuntimeError("ShardedMarginHead is already initialized "
                               "(pass force_reinit=True to start over)")
        init = mx.init.Normal(0.01) if init is None else init
        for shard in self.shards:
            arr = np.zeros((shard.size, self.emb_size), ctx=shard.ctx)
            init(mx.init.InitDesc(WEIGHT_KEY), arr)
            self._set_shard_weight(shard, arr)

    def _set_shard_weight(self, shard, value):
        if shard.weight is None:
            shard.weight = np.zeros((shard.size, self.emb_size), ctx=shard.ctx)
            shard.state = None
        shard.weight[:] = value.as_in_ctx(shard.ctx)

    def _check_initialized(self):
        if not self.initialized:
            raise RuntimeError("ShardedMarginHead is not initialized: call initialize() "
                               "or load_parameters() first")

    def weight(self):
        """All class centres gathered on the host: numpy (C, E) float32."""
        self._check_initialized()
        return onp.concatenate([shard.weight.asnumpy() for shard in self.shards], axis=0)

    @use_np
    def set_weight(self, weight):
        """Replace the class centres with ``weight`` (C, E) (numpy or MXNet array)."""
        weight = onp.asarray(weight.asnumpy() if hasattr(weight, "asnumpy") else weight,
                             dtype=onp.float32)
        if weight.shape != (self.num_classes, self.emb_size):
            raise ValueError(f"weight has shape {weight.shape}, the head needs "
                             f"{(self.num_classes, self.emb_size)}")
        for shard in self.shards:
            rows = weight[shard.offset:shard.offset + shard.size]
            self._set_shard_weight(shard, np.array(rows, ctx=shard.ctx))

    def save_parameters(self, path):
        """Write the gathered centres under ``fc7_weight`` (ArcMarginBlock's key), atomically.

        The file loads into a single-device ``ArcMarginBlock`` of the same size
        with ``load_parameters``, and into a head with any number of shards.
        """
        arr = mx.nd.array(self.weight(), ctx=mx.cpu())
        with atomic_path(path, suffix=".params") as tmp:
            mx.nd.save(tmp, {WEIGHT_KEY: arr})

    def load_parameters(self, path):
        """Load centres saved by :meth:`save_parameters` or by ``ArcMarginBlock``."""
        try:
            loaded = mx.nd.load(path)
        except mx.base.MXNetError as err:
            raise ValueError(f"{path}: not an MXNet parameter file "
                             f"({str(err).strip().splitlines()[0]})") from None
        keys = [k for k in loaded if k == WEIGHT_KEY or k.endswith("." + WEIGHT_KEY)
                or k.endswith("_" + WEIGHT_KEY)] if isinstance(loaded, dict) else []
        if len(keys) != 1:
            raise ValueError(f"{path}: expected one {WEIGHT_KEY!r} array, found keys "
                             f"{sorted(loaded) if isinstance(loaded, dict) else 'none'}")
        weight = loaded[keys[0]].asnumpy()
        if weight.shape != (self.num_classes, self.emb_size):
            raise ValueError(f"{path}: {keys[0]} has shape {weight.shape}, the head needs "
                             f"{(self.num_classes, self.emb_size)}")
        self.set_weight(weight)

    # ------------------------------------------------------------------ optimizer
    def init_optimizer(self, optimizer="sgd", optimizer_params=None):
        """Create the optimizer that :meth:`step` applies to the centres.

        Parameters
        ----------
        optimizer : str or mx.optimizer.Optimizer
            Name (as for ``gluon.Trainer``) or an instance not shared with
            another trainer (it keeps per-shard update counts).
        optimizer_params : dict, optional
            Keyword arguments of the optimizer (``learning_rate``, ``momentum``,
            ``wd``, ``lr_scheduler``...), with a name only.
        """
        if isinstance(optimizer, mx.optimizer.Optimizer):
            if optimizer_params:
                raise ValueError("optimizer_params must be empty when optimizer is an instance")
            self._optimizer = optimizer
        else:
            self._optimizer = mx.optimizer.create(optimizer, **(optimizer_params or {}))
        for shard in self.shards:
            shard.state = None

    @property
    def optimizer(self):
        return self._optimizer

    @property
    def learning_rate(self):
        return self._optimizer.learning_rate if self._optimizer is not None else None

    def set_learning_rate(self, lr):
        self._optimizer.set_learning_rate(lr)

    def _ensure_state(self, k, shard):
        if shard.state is None:
            shard.state = self._optimizer.create_state_multi_precision(
                k, shard.weight.as_nd_ndarray())
        return shard.state

    # ------------------------------------------------------------------ sampling hook
    def _select_rows(self, shard, positives):
        """Local rows of ``shard`` used this step (sorted host int64), or None for all.

        ``positives`` are the local labels of the batch that fall in the shard.
        The full head uses every row; :class:`PartialFC` samples.
        """
        return None

    # ------------------------------------------------------------------ forward/backward
    def _shard_logits(self, x, w, y):
        """Margin logits (B, n) of embeddings ``x`` against rows ``w`` (n, E).

        ``y`` (B,) float32 holds the column of each sample's class, or -1 when
        the class is not among ``w``'s rows (no target logit in that row).
        """
        F = mx.nd
        cos = npx.fully_connected(l2_normalize(F, x), normalize_centres(F, w), no_bias=True,
                                  num_hidden=w.shape[0])
        return self.margin.logits(F, cos, y, w.shape[0])

    def _check_inputs(self, embeddings, labels):
        embeddings = _as_list(embeddings, "embeddings")
        labels = _as_list(labels, "labels")
        if len(embeddings) != len(labels):
            raise ValueError(f"{len(embeddings)} embedding arrays but {len(labels)} label arrays")
        host_labels = []
        for i, (e, y) in enumerate(zip(embeddings, labels)):
            if e.ndim != 2 or e.shape[1] != self.emb_size:
                raise ValueError(f"embeddings[{i}] has shape {e.shape}, expected "
                                 f"(batch, {self.emb_size})")
            y_host = y.asnumpy().reshape(-1) if hasattr(y, "asnumpy") else onp.asarray(y)
            y_host = y_host.reshape(-1)
            if y_host.shape[0] != e.shape[0]:
                raise ValueError(f"labels[{i}] has {y_host.shape[0]} entries for "
                                 f"{e.shape[0]} embeddings")
            if y_host.size and (y_host.min() < 0 or y_host.max() >= self.num_classes
                                or not onp.all(onp.floor(y_host) == y_host)):
                bad = y_host[(y_host < 0) | (y_host >= self.num_classes)
                             | (onp.floor(y_host) != y_host)][0]
                raise ValueError(f"labels[{i}] holds {bad:g}, outside the class ids "
                                 f"0..{self.num_classes - 1}")
            host_labels.append(y_host.astype(onp.int64))
        return embeddings, host_labels

    @use_np
    def forward_backward(self, embeddings, labels, backward=True):
        """Per-sample losses and the embedding gradients of one batch.

        Parameters
        ----------
        embeddings : list of array (B_i, E), or one array
            Backbone outputs, one per data context (need not be the shard
            contexts).  They are copied; their own graph is not touched.
        labels : list of array (B_i,), or one array
            Class ids in ``[0, num_classes)`` (float or int).  They are read on
            the host (one synchronisation per step) to find the owning shards.
        backward : bool, default True
            Also compute gradients (needed by :meth:`step`).  With False only
            the losses are computed (validation).

        Returns
        -------
        losses : list of array (B_i,)
            Per-sample cross-entropy, on each embedding's context.
        grads : list of array (B_i, E) or None
            d(sum of losses)/d(embeddings), on each embedding's context, for
            ``autograd.backward(embeddings, grads)``.  None with ``backward=False``.
        """
        self._check_initialized()
        embeddings, host_labels = self._check_inputs(embeddings, labels)
        # Only the shard logits are recorded, even when called inside a record() scope.
        with autograd.pause():
            return self._forward_backward(embeddings, host_labels, backward)

    def _forward_backward(self, embeddings, host_labels, backward):
        sizes = [e.shape[0] for e in embeddings]
        bounds = onp.cumsum([0] + sizes)
        y_all = onp.concatenate(host_labels)

        xs, ys, zs = [], [], []
        for shard in self.shards:
            x = np.concatenate([e.detach().as_in_ctx(shard.ctx) for e in embeddings], axis=0)
            if x.dtype != shard.weight.dtype:
                x = x.astype(shard.weight.dtype)    # e.g. float16/bfloat16 backbone output
            local = y_all - shard.offset
            inside = (local >= 0) & (local < shard.size)
            rows = self._select_rows(shard, onp.unique(local[inside]))
            if rows is None:
                w = shard.weight
                col = onp.where(inside, local, -1)
                shard.rows_nd = None
            else:
                rows_nd = np.array(rows, ctx=shard.ctx, dtype="int64")
                w = np.take(shard.weight, rows_nd, axis=0)
                col = onp.where(inside, onp.searchsorted(rows, onp.clip(local, 0, None)), -1)
                shard.rows_nd = rows_nd
            shard.rows = rows
            shard.num_logits = int(w.shape[0])
            y = np.array(col.astype(onp.float32), ctx=shard.ctx)
            if backward:
                x.attach_grad()
                if rows is not None or w.grad is None:
                    w.attach_grad()
                with autograd.record():
                    z = self._shard_logits(x, w, y)
            else:
                z = self._shard_logits(x, w, y)
            shard.used_weight = w
            xs.append(x)
            ys.append(y)
            zs.append(z)

        # Exact softmax across shards: only (B,) vectors change context.
        home = self.shards[0].ctx
        gmax = zs[0].max(axis=1).as_in_ctx(home)
        for z in zs[1:]:
            gmax = np.maximum(gmax, z.max(axis=1).as_in_ctx(home))
        exps, gsum, z_target, z_total = [], None, None, None
        for z, y, shard in zip(zs, ys, self.shards):
            e = np.exp(z - np.expand_dims(gmax.as_in_ctx(shard.ctx), axis=1))
            exps.append(e)
            part = e.sum(axis=1).as_in_ctx(home)
            gsum = part if gsum is None else gsum + part
            # A class absent from the shard has y = -1: pick clips to column 0, masked out.
            tgt = (npx.pick(z, y, axis=1) * (y >= 0)).as_in_ctx(home)
            z_target = tgt if z_target is None else z_target + tgt
            if self.ls_eps > 0.0:
                tot = z.sum(axis=1).as_in_ctx(home)
                z_total = tot if z_total is None else z_total + tot
        lse = gmax + np.log(gsum)
        loss = lse - z_target
        num_logits = sum(shard.num_logits for shard in self.shards)
        if self.ls_eps > 0.0:
            loss = (1.0 - self.ls_eps) * loss + self.ls_eps * (lse - z_total / num_logits)
        losses = [loss[int(a):int(b)].as_in_ctx(e.ctx)
                  for a, b, e in zip(bounds[:-1], bounds[1:], embeddings)]
        if not backward:
            for shard in self.shards:
                shard.used_weight = None
            self._pending = False
            return losses, None

        head_grads = []
        for z, e, y, shard in zip(zs, exps, ys, self.shards):
            g = e / np.expand_dims(gsum.as_in_ctx(shard.ctx), axis=1)
            if _kernels.AVAILABLE:  # -(1 - ls) at each sample's own class, in one pass
                picked = npx.pick(g, y, axis=1) - (1.0 - self.ls_eps)
                g = _kernels.set_targets(mx.nd, g, y, picked, allow_missing=True)
            else:
                g = g - (1.0 - self.ls_eps) * npx.one_hot(y, z.shape[1])
            if self.ls_eps > 0.0:
                g = g - self.ls_eps / num_logits
            head_grads.append(g)
        autograd.backward(zs, head_grads)

        grads = []
        for a, b, emb in zip(bounds[:-1], bounds[1:], embeddings):
            a, b = int(a), int(b)
            g = None
            for x in xs:
                part = x.grad[a:b].as_in_ctx(emb.ctx)
                g = part if g is None else g + part
            if g.dtype != emb.dtype:
                g = g.astype(emb.dtype)
            grads.append(g)
        self._pending = True
        return losses, grads

    @use_np
    def weight_grad(self):
        """d(sum of losses)/dW of the last :meth:`forward_backward`, on the host.

        Returns
        -------
        numpy (C, E) float32
            Rows the step did not use (Partial FC) are zero.
        """
        if not self._pending:
            raise RuntimeError("weight_grad() needs a forward_backward() first")
        out = onp.zeros((self.num_classes, self.emb_size), dtype=onp.float32)
        for shard in self.shards:
            g = shard.used_weight.grad.asnumpy()
            if shard.rows is None:
                out[shard.offset:shard.offset + shard.size] = g
            else:
                out[shard.offset + shard.rows] = g
        return out

    def sampled_classes(self):
        """Global class ids whose centres the last step used, sorted (numpy int64)."""
        parts = []
        for shard in self.shards:
            if shard.rows is None:
                parts.append(onp.arange(shard.offset, shard.offset + shard.size))
            else:
                parts.append(shard.offset + shard.rows)
        return onp.concatenate(parts)

    @use_np
    def step(self, batch_size):
        """Apply the optimizer to the centres used by the last :meth:`forward_backward`.

        Gradients are scaled by ``1/batch_size`` (as ``gluon.Trainer.step``).
        Rows a Partial FC step did not sample keep their weight *and* their
        optimizer state (momentum, moments) unchanged, weight decay included.
        """
        if self._optimizer is None:
            raise RuntimeError("call init_optimizer() before step()")
        if not self._pending:
            raise RuntimeError("step() needs a forward_backward() with backward=True first")
        self._optimizer.rescale_grad = 1.0 / float(batch_size)
        for k, shard in enumerate(self.shards):
            state = self._ensure_state(k, shard)
            grad = shard.used_weight.grad.as_nd_ndarray()
            if shard.rows is None:
                self._optimizer.update_multi_precision(k, shard.weight.as_nd_ndarray(), grad,
                                                       state)
                continue
            idx = shard.rows_nd.as_nd_ndarray()
            w = shard.used_weight.as_nd_ndarray()
            sub_state = _state_map(state, lambda s, i=idx: mx.nd.take(s, i, axis=0))
            self._optimizer.update_multi_precision(k, w, grad, sub_state)
            shard.weight[shard.rows_nd] = shard.used_weight
            for full, sub in zip(_state_leaves(state), _state_leaves(sub_state)):
                full.as_np_ndarray()[shard.rows_nd] = sub.as_np_ndarray()
        for shard in self.shards:
            shard.used_weight = None
        self._pending = False

    # ------------------------------------------------------------------ optimizer states
    def _extra_state(self):
        return {}

    def _load_extra_state(self, extra):
        return None

    def save_states(self, path):
        """Write the optimizer state (gathered over shards) and update counts, atomically.

        The file loads into a head with any number of shards.
        """
        if self._optimizer is None:
            raise RuntimeError("call init_optimizer() before save_states()")
        for k, shard in enumerate(self.shards):
            self._ensure_state(k, shard)
        per_shard = [_state_leaves(shard.state) for shard in self.shards]
        arrays = {}
        for j in range(len(per_shard[0])):
            arrays[f"state{j}"] = mx.nd.array(
                onp.concatenate([leaves[j].asnumpy() for leaves in per_shard], axis=0))
        opt = self._optimizer
        meta = {"optimizer": type(opt).__name__, "num_update": int(opt.num_update),
                "index_update_count": {str(k): int(v) for k, v in
                                       mxnet_compat.current_update_counts(opt).items()},
                "num_classes": self.num_classes, "emb_size": self.emb_size,
                "extra": self._extra_state()}
        arrays["meta"] = mx.nd.array(onp.frombuffer(json.dumps(meta).encode(), dtype=onp.uint8),
                                     dtype="uint8")
        with atomic_path(path, suffix=".states") as tmp:
            mx.nd.save(tmp, arrays)

    @use_np
    def load_states(self, path):
        """Restore what :meth:`save_states` wrote (after :meth:`init_optimizer`)."""
        if self._optimizer is None:
            raise RuntimeError("call init_optimizer() before load_states()")
        self._check_initialized()
        try:
            arrays = mx.nd.load(path)
            meta = json.load(io.BytesIO(arrays["meta"].asnumpy().astype(onp.uint8).tobytes()))
        except (mx.base.MXNetError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a head optimizer-state file "
                             f"({error_message(err)})") from None
        if (meta["num_classes"], meta["emb_size"]) != (self.num_classes, self.emb_size):
            raise ValueError(f"{path}: states of a {meta['num_classes']}x{meta['emb_size']} "
                             f"head, this one is {self.num_classes}x{self.emb_size}")
        if meta["optimizer"] != type(self._optimizer).__name__:
            raise ValueError(f"{path}: states of optimizer {meta['optimizer']}, this head "
                             f"uses {type(self._optimizer).__name__}")
        for k, shard in enumerate(self.shards):
            shard.state = None
            state = self._ensure_state(k, shard)
            for j, leaf in enumerate(_state_leaves(state)):
                full = arrays[f"state{j}"]
                leaf[:] = full[shard.offset:shard.offset + shard.size].as_in_context(shard.ctx)
        opt = self._optimizer
        counts = {int(k): v for k, v in meta["index_update_count"].items()}
        mxnet_compat.set_update_counts(opt, {0: counts})
        opt.num_update = meta["num_update"]
        self._load_extra_state(meta["extra"])

    def __repr__(self):
        m = self.margin
        return (f"{type(self).__name__}(emb_size={self.emb_size}, "
                f"num_classes={self.num_classes}, shards={[s.size for s in self.shards]}, "
                f"ctx={self.ctx_list}, margin_s={m.margin_s:g}, margin_m={m.margin_m:g}, "
                f"margin_a={m.margin_a:g}, margin_b={m.margin_b:g}, "
                f"easy_margin={m.easy_margin}, ls_eps={self.ls_eps:g})")

"""Step time and memory of the margin heads.

* :func:`measure_head`: one training step of the full, sharded or Partial FC
  head at one class count (``tools/benchmark_head.py``).  Each call is meant to
  run in a fresh process, so that the peak resident set belongs to that one head.
* :func:`measure_fused_head`: forward + backward of the ArcFace head as shipped
  (fused row normalisation) against the written-out version, interleaved in
  the same repeats (the head rows of ``tools/benchmark.py``).
"""
import statistics
import time

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon, np
from mxnet.util import use_np

from ..heads import ArcMarginBlock, SoftmaxCrossEntropyLoss, _kernels
from ..heads import _utils as _head_utils
from ..heads import margin as _margin
from ..parallel.partial_fc import PartialFC
from ..parallel.sharded import ShardedMarginHead
from .memory import GIB, MIB, peak_rss_bytes, rss_bytes
from .roof import GemmRoof
from .timing import summarize_times, timed

__all__ = ["KINDS", "measure_head", "measure_fused_head"]

#: Head kinds :func:`measure_head` knows.
KINDS = ("full", "sharded", "partial")


def _contexts(device, count):
    make = mx.gpu if device == "gpu" else mx.cpu
    return [make(i) for i in range(count)]


@use_np
def measure_head(kind, num_classes, emb_size=512, batch_size=128, steps=3, warmup=1,
                 num_shards=2, sample_rate=0.1, preset="arcface", device="cpu", seed=0):
    """Time ``steps`` training steps of one head and report memory.

    A step is forward, backward and an SGD update (momentum 0.9, wd 5e-4) of
    the class centres for a batch of random embeddings with random labels,
    ending in ``mx.nd.waitall()``.

    Parameters
    ----------
    kind : {'full', 'sharded', 'partial'}
        ``full``: one :class:`~gluon_face.heads.ArcMarginBlock` +
        :class:`~gluon_face.heads.SoftmaxCrossEntropyLoss` + ``gluon.Trainer``
        on one context; ``sharded``: :class:`~gluon_face.parallel.ShardedMarginHead`
        over ``num_shards`` contexts; ``partial``: :class:`~gluon_face.parallel.PartialFC`
        over ``num_shards`` contexts with ``sample_rate``.
    num_classes, emb_size, batch_size : int
    steps, warmup : int
        Timed steps, and untimed steps before them.
    device : {'cpu', 'gpu'}
        Context type (CPU contexts share one memory and the same cores).

    Returns
    -------
    dict
        ``step_s`` (median seconds per step), ``step_s_min``, ``step_s_max``,
        ``init_s`` (building and initialising), ``base_rss_gib`` (process
        before the head), ``peak_rss_gib`` (peak of the whole process) and
        ``centres_gib`` (size of the (C, E) float32 matrix), plus the inputs.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown head kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    rng = onp.random.RandomState(seed)
    mx.random.seed(seed)
    base = rss_bytes()
    sgd = {"learning_rate": 0.1, "momentum": 0.9, "wd": 5e-4}
    t0 = time.perf_counter()
    if kind == "full":
        ctx = _contexts(device, 1)
        shards = 1
        head = ArcMarginBlock.from_preset(preset, emb_size, num_classes)
        head.initialize(ctx=ctx[0])
        loss_fn = SoftmaxCrossEntropyLoss()
        trainer = gluon.Trainer(head.collect_params(), "sgd", sgd, kvstore=None)

        def one_step(x, y):
            x, y = x[0], y[0]
            x.attach_grad()
            with autograd.record():
                loss = loss_fn(head(x, y), y)
            loss.backward()
            trainer.step(batch_size)
    else:
        ctx = _contexts(device, num_shards)
        shards = num_shards
        if kind == "sharded":
            head = ShardedMarginHead.from_preset(preset, emb_size, num_classes, ctx)
        else:
            head = PartialFC.from_preset(preset, emb_size, num_classes, ctx,
                                         sample_rate=sample_rate, seed=seed)
        head.initialize()
        head.init_optimizer("sgd", sgd)

        def one_step(x, y):
            head.forward_backward(x, y)
            head.step(batch_size)
    mx.nd.waitall()
    init_s = time.perf_counter() - t0

    per_ctx = [batch_size // len(ctx)] * len(ctx)
    per_ctx[-1] += batch_size - sum(per_ctx)
    times = []
    for i in range(warmup + steps):
        xs = [np.array(rng.normal(size=(n, emb_size)).astype(onp.float32), ctx=c)
              for n, c in zip(per_ctx, ctx)]
        ys = [np.array(rng.randint(0, num_classes, size=n).astype(onp.float32), ctx=c)
              for n, c in zip(per_ctx, ctx)]
        mx.nd.waitall()  # the inputs' copies stay out of the step's time
        t = timed(lambda xs=xs, ys=ys: one_step(xs, ys), mx.nd.waitall)
        if i >= warmup:
            times.append(t)
    stats = summarize_times(times)
    # Linux keeps RSS counters per thread and folds them in lazily, so VmHWM read now can
    # trail a VmRSS read earlier by a few pages; the peak is at least base.
    peak = max(peak_rss_bytes(), base)
    return {
        "kind": kind, "num_classes": int(num_classes), "emb_size": int(emb_size),
        "batch_size": int(batch_size), "shards": shards,
        "sample_rate": float(sample_rate) if kind == "partial" else 1.0,
        "device": device, "steps": int(steps),
        "step_s": stats["step_s"], "step_s_min": stats["step_s_min"],
        "step_s_max": stats["step_s_max"], "init_s": init_s,
        "base_rss_gib": base / GIB, "peak_rss_gib": peak / GIB,
        "centres_gib": num_classes * emb_size * 4 / GIB,
        "preset": preset,
    }


@use_np
class _PlainArcMarginBlock(ArcMarginBlock):
    """ArcMarginBlock with the written-out normalisation (the pre-fusion reference)."""

    def hybrid_forward(self, F, x, y=None, fc7_weight=None):
        saved = _margin.l2_normalize, _head_utils.l2_normalize
        _margin.l2_normalize = _head_utils.l2_normalize = _head_utils.l2_normalize_plain
        try:
            with _kernels.disabled():
                return super().hybrid_forward(F, x, y, fc7_weight=fc7_weight)
        finally:
            _margin.l2_normalize, _head_utils.l2_normalize = saved


class _ProductsOnly(ArcMarginBlock):
    """The head's three products alone: ``fully_connected(x, W)`` forward and backward.

    No normalisation, no margin: the time MXNet's own GEMMs (oneDNN's inner
    product) need for the head's FLOP, a floor for any head written on them.
    """

    def hybrid_forward(self, F, x, y=None, fc7_weight=None):
        return F.npx.fully_connected(x, fc7_weight, no_bias=True, num_hidden=self.num_classes)


@use_np
def measure_fused_head(classes_list=(10000, 100000), emb_size=512, batch_size=128, repeats=3,
                       warmup=1, compare_plain=True, compare_products=True, ctx=None,
                       roof=None, progress=None):
    """Seconds per forward + backward of the hybridized ArcFace head.

    ``fused`` is :class:`ArcMarginBlock` as shipped (the numba kernels for
    the centres' normalisation and the target logits); ``plain`` the same
    head with the written-out normalisation, timed in the same repeats for
    the ratio.  Both run backward from a given gradient of the logits
    (allocated once, outside the timed step), so a step is the head's own
    work.  ``fused+ce`` adds :class:`SoftmaxCrossEntropyLoss` on the logits,
    as a training step has it (the protocol of the PyTorch peer's
    cross-entropy variants).  ``products`` (with ``compare_products``) is the
    floor: the three products alone, as one ``fully_connected`` forward and
    backward (no normalisation, no margin), same protocol.  FLOP per step:
    ``3 * 2 * B * C * E`` (the forward product and the two backward products).

    Returns
    -------
    list of dict
        ``workload`` ('head'), ``num_classes``, ``mode``, ``cross_entropy``
        (whether the step includes it), ``floor`` (True for ``products``),
        ``step_s`` (median),
        ``step_s_min``, ``step_s_max``, ``gflops``, ``roof_fraction``,
        ``speedup`` (plain median / this median), ``peak_rss_mib``,
        ``rss_added_mib`` (as in :func:`~gluon_face.benchmarks.backbones.measure_backbone`).
    """
    ctx = ctx or mx.cpu()
    roof = roof or GemmRoof(ctx=ctx)
    rng = onp.random.default_rng(2)
    rows = []
    for classes in classes_list:
        x = np.array(rng.standard_normal((batch_size, emb_size)).astype("float32"), ctx=ctx)
        y = np.array(rng.integers(0, classes, batch_size).astype("float32"), ctx=ctx)
        x.attach_grad()
        grad = np.ones((batch_size, classes), ctx=ctx)
        loss_fn = SoftmaxCrossEntropyLoss()
        heads = {"fused": ArcMarginBlock(emb_size, classes)}
        if compare_plain:
            heads["plain"] = _PlainArcMarginBlock(emb_size, classes)
        heads["fused+ce"] = ArcMarginBlock(emb_size, classes)
        if compare_products:
            heads["products"] = _ProductsOnly(emb_size, classes)
        for head in heads.values():
            head.initialize(ctx=ctx)
            head.hybridize(static_alloc=True, static_shape=True)

        def step(head, x=x, y=y, grad=grad, ce_head=heads["fused+ce"], loss_fn=loss_fn):
            with autograd.record():
                out = head(x, y)
                if head is ce_head:
                    out = loss_fn(out, y)
            out.backward(None if head is ce_head else grad)

        times, rss, added = {k: [] for k in heads}, {}, {}
        for key, head in heads.items():
            before = peak_rss_bytes() / MIB
            for _ in range(max(warmup, 1)):  # the first call allocates the parameters' memory
                timed(lambda h=head: step(h), mx.nd.waitall)
            rss[key] = peak_rss_bytes() / MIB
            added[key] = rss[key] - before
        for r in range(repeats):
            for key, head in heads.items():
                times[key].append(timed(lambda h=head: step(h), mx.nd.waitall))
                rss[key] = max(rss[key], peak_rss_bytes() / MIB)
            roof.sample()
            if progress:
                progress(f"head C={classes} repeat {r + 1}/{repeats}: " + ", ".join(
                    f"{k} {t[-1]:.3f} s" for k, t in times.items()))
        flop = 6.0 * batch_size * classes * emb_size
        ref = statistics.median(times["plain"]) if compare_plain else None
        for key, t in times.items():
            stats = summarize_times(t)
            rows.append({
                "workload": "head", "num_classes": classes, "emb_size": emb_size,
                "batch_size": batch_size, "mode": key,
                "cross_entropy": key == "fused+ce", "floor": key == "products",
                "step_s": stats["step_s"],
                "step_s_min": stats["step_s_min"], "step_s_max": stats["step_s_max"],
                "repeats": stats["repeats"], "gflops": flop / stats["step_s"] / 1e9,
                "roof_fraction": flop / stats["step_s"] / 1e9 / roof.gflops,
                "speedup": ref / stats["step_s"] if ref and key == "fused" else 1.0,
                "peak_rss_mib": rss[key], "rss_added_mib": added[key],
            })
        del heads
    return rows

"""Step time and memory of the full, sharded and Partial FC heads (tools/benchmark_head.py).

Each measurement is meant to run in a fresh process, so that the peak resident
set size (``VmHWM`` of ``/proc/self/status``) belongs to that one head.
"""
import resource
import time

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon, np
from mxnet.util import use_np

from ..heads import ArcMarginBlock, SoftmaxCrossEntropyLoss
from .partial_fc import PartialFC
from .sharded import ShardedMarginHead

#: Head kinds :func:`measure_head` knows.
KINDS = ("full", "sharded", "partial")

_GIB = float(1 << 30)


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes():
    """Peak resident set size of this process in bytes (``VmHWM``, else ``ru_maxrss``)."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return kib * 1024


def rss_bytes():
    """Current resident set size of this process in bytes (0 when unknown)."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


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
        on one context; ``sharded``: :class:`ShardedMarginHead` over
        ``num_shards`` contexts; ``partial``: :class:`PartialFC` over
        ``num_shards`` contexts with ``sample_rate``.
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
        mx.nd.waitall()
        t = time.perf_counter()
        one_step(xs, ys)
        mx.nd.waitall()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    # Linux keeps RSS counters per thread and folds them in lazily, so VmHWM read now can
    # trail a VmRSS read earlier by a few pages (seen: 12 KiB); the peak is at least base.
    peak = max(peak_rss_bytes(), base)
    return {
        "kind": kind, "num_classes": int(num_classes), "emb_size": int(emb_size),
        "batch_size": int(batch_size), "shards": shards,
        "sample_rate": float(sample_rate) if kind == "partial" else 1.0,
        "device": device, "steps": int(steps),
        "step_s": float(onp.median(times)), "step_s_min": float(min(times)),
        "step_s_max": float(max(times)), "init_s": init_s,
        "base_rss_gib": base / _GIB, "peak_rss_gib": peak / _GIB,
        "centres_gib": num_classes * emb_size * 4 / _GIB,
        "preset": preset,
    }

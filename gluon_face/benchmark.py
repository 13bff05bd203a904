"""Throughput of FaceResNet training and embedding, and of the margin head (tools/benchmark.py).

Every measurement here is interleaved: within one repeat each variant (Block,
hybridized, bf16, ...) runs one timed step, then the next repeat starts.  On a
shared machine the load changes over seconds, so ratios between variants of
the same repeat are much steadier than absolute numbers; the medians and the
min-max spread over repeats are reported.

The GEMM roof is the best float32 matrix-product rate measured in the same
run (a square ``np.dot`` and the MKLDNN ``fully_connected``, both timed in
every repeat; the best sample, as load only lowers it); a workload's roof
fraction is its median achieved GFLOP/s divided by that roof.
"""
import resource
import statistics
import time

import mxnet as mx
from mxnet import autograd, gluon, np, npx
from mxnet.util import use_np

from .heads import ArcMarginBlock, SoftmaxCrossEntropyLoss, _kernels
from .heads import _utils as _head_utils
from .heads import margin as _margin
from .inference import prepare_embedder, to_bfloat16, to_split_prelu
from .model_zoo import get_model
from .model_zoo.summary import summarize

#: Backbone variants :func:`measure_backbone` knows, in table order.
BACKBONE_MODES = ("block", "hybrid", "fused", "bf16", "int8")
#: Variants that can train (int8 is inference-only).  In training, ``hybrid`` is the
#: plain static graph, ``fused`` the graph ``train.py`` trains through by default
#: (:func:`~gluon_face.inference.to_split_prelu`: PReLU split into oneDNN operators) and
#: ``bf16`` the one of ``train.py --amp`` (float32 master weights, bfloat16 compute).
TRAIN_MODES = ("block", "hybrid", "fused", "bf16")


def peak_rss_mib():
    """Peak resident set size of this process so far, MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarize_times(times, work=1.0):
    """Median, min and max of ``work / t`` over step times ``times`` (s).

    Returns
    -------
    dict
        ``rate``, ``rate_min``, ``rate_max`` (work per second) and ``step_s``
        (median seconds), ``step_s_min``, ``step_s_max``, ``repeats``.
    """
    if not times or min(times) <= 0:
        raise ValueError(f"need positive step times, got {times!r}")
    med = statistics.median(times)
    return {"rate": work / med, "rate_min": work / max(times), "rate_max": work / min(times),
            "step_s": med, "step_s_min": min(times), "step_s_max": max(times),
            "repeats": len(times)}


def _timed(fn):
    start = time.perf_counter()
    fn()
    mx.nd.waitall()
    return time.perf_counter() - start


@use_np
class GemmRoof:
    """Measured float32 GEMM rate (GFLOP/s); call :meth:`sample` between workloads.

    Parameters
    ----------
    size : int
        Side ``n`` of the square product (``2 n^3`` FLOP).
    ctx : Context
    """

    def __init__(self, size=2048, ctx=None):
        self.size = int(size)
        ctx = ctx or mx.cpu()
        rng = _rng(0)
        self._a = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self._b = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self.samples = []
        self.sample()  # warm-up (allocations, kernel selection), kept out of the median
        self.samples = []

    def sample(self):
        """Time one ``np.dot`` and one ``fully_connected`` of the matrices; keep the faster."""
        flop = 2.0 * self.size ** 3
        t_dot = _timed(lambda: np.dot(self._a, self._b))
        t_fc = _timed(lambda: npx.fully_connected(self._a, self._b, no_bias=True,
                                                  num_hidden=self.size))
        self.samples.append(flop / min(t_dot, t_fc) / 1e9)
        return self.samples[-1]

    @property
    def gflops(self):
        """Best of the samples (GFLOP/s): other load only ever lowers a sample."""
        if not self.samples:
            self.sample()
        return max(self.samples)


def _rng(seed):
    import numpy as onp

    return onp.random.default_rng(seed)


def backbone_gflop(net, train):
    """GFLOP per image: ``2 * MACs`` forward (:func:`summarize`), x3 for a training step.

    The backward pass costs about twice the forward (data and weight gradients).
    """
    return 2.0 * summarize(net).macs * (3.0 if train else 1.0) / 1e9


def _copy_params(src, dst):
    # Structural keys (``features.3.0.body.1.weight``), as save_parameters uses:
    # independent of the instance-numbered name prefixes.
    dst_params = dst._collect_params_with_prefix()
    for key, param in src._collect_params_with_prefix().items():
        dst_params[key].set_data(param.data())


@use_np
def measure_backbone(name, modes=BACKBONE_MODES, batch_size=16, image_size=112, repeats=3,
                     warmup=1, train=True, embed=True, train_classes=1000, ctx=None,
                     roof=None, progress=None):
    """Images/s of one FaceResNet for embedding (inference) and training.

    A training step is forward, :class:`ArcMarginBlock` (``train_classes``
    identities) + cross-entropy, backward and an SGD update (momentum 0.9,
    wd 5e-4) of backbone and head.  An embedding step is a forward pass in
    inference mode through the block :func:`~gluon_face.inference.prepare_embedder`
    returns for the mode.

    Parameters
    ----------
    name : str
        Model zoo name, e.g. ``'faceresnet50'``.
    modes : sequence of str
        Among :data:`BACKBONE_MODES`; training runs for those in :data:`TRAIN_MODES`.
    batch_size, image_size : int
    repeats, warmup : int
        Timed and untimed steps per variant (interleaved across variants).
    roof : GemmRoof, optional
        Sampled once per repeat; default: a new one.
    progress : callable, optional
        ``progress(text)`` after every repeat (tools log it).

    Returns
    -------
    list of dict
        One row per (task, mode): ``network``, ``task`` ('embed'/'train'),
        ``mode``, ``batch_size``, ``image_size``, ``images_s`` (median),
        ``images_s_min``, ``images_s_max``, ``step_s``..., ``gflop_per_image``,
        ``gflops``, ``roof_fraction``, ``speedup`` (over the first mode's
        median, same task), ``peak_rss_mib`` (this process's peak after the
        variant was set up and run: cumulative over variants) and
        ``rss_added_mib`` (growth of that peak over the variant's set-up and
        warm-up: its own memory; 0 when a freed pool was reused).
    """
    bad = [m for m in modes if m not in BACKBONE_MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {bad or modes!r}; valid: {', '.join(BACKBONE_MODES)}")
    for arg in ("batch_size", "repeats"):
        if int(locals()[arg]) < 1:
            raise ValueError(f"{arg} must be >= 1")
    ctx = ctx or mx.cpu()
    roof = roof or GemmRoof(ctx=ctx)
    rng = _rng(1)
    x = np.array(rng.standard_normal((batch_size, 3, image_size, image_size))
                 .astype("float32"), ctx=ctx)
    y = np.array(rng.integers(0, train_classes, batch_size).astype("float32"), ctx=ctx)

    reference = get_model(name, image_size=image_size)
    reference.initialize(mx.init.Xavier(), ctx=ctx)
    reference(x)

    steps, rss, added = {}, {}, {}

    def warm(key, run, before):
        # Set-up and warm-up of one variant, measured apart: the growth of the
        # process peak over them is that variant's own memory (parameters,
        # cached graph, activation pool), as MXNet keeps pools per graph.
        for _ in range(warmup):
            _timed(run)
        rss[key] = peak_rss_mib()
        added[key] = rss[key] - before
        steps[key] = run

    if embed:
        for mode in modes:
            before = peak_rss_mib()
            net = get_model(name, image_size=image_size)
            net.initialize(ctx=ctx)
            net(x)
            _copy_params(reference, net)
            # int8 is calibrated on the timed batch itself: only its speed is measured here.
            embedder = prepare_embedder(net, x, mode=mode, ctx=ctx,
                                        calib_data=x if mode == "int8" else None)

            def run(e=embedder):
                with autograd.predict_mode():
                    e(x)
            warm(("embed", mode), run, before)
    if train:
        loss_fn = SoftmaxCrossEntropyLoss()
        for mode in modes:
            if mode not in TRAIN_MODES:
                continue
            before = peak_rss_mib()
            net = get_model(name, image_size=image_size)
            net.initialize(ctx=ctx)
            net(x)
            _copy_params(reference, net)
            head = ArcMarginBlock(net.emb_size if hasattr(net, "emb_size") else 512,
                                  train_classes)
            head.initialize(ctx=ctx)
            model = net
            if mode != "block":
                net.hybridize(static_alloc=True, static_shape=True)
                head.hybridize(static_alloc=True, static_shape=True)
            if mode in ("fused", "bf16"):
                with autograd.record():  # trace the training graph (BatchNorm batch statistics)
                    net(x)
                model = (to_split_prelu(net, x) if mode == "fused"
                         else to_bfloat16(net, x, ctx=ctx, share_params=True))
            params = dict(net.collect_params().items())
            params.update(head.collect_params().items())
            trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.01, "momentum": 0.9,
                                                    "wd": 5e-4})

            def run(net=model, head=head, trainer=trainer):
                with autograd.record():
                    loss = loss_fn(head(net(x), y), y)
                loss.backward()
                trainer.step(batch_size)
            warm(("train", mode), run, before)

    times = {key: [] for key in steps}
    for r in range(repeats):
        for key, run in steps.items():
            times[key].append(_timed(run))
            rss[key] = max(rss[key], peak_rss_mib())
        roof.sample()
        if progress:
            progress(f"{name} repeat {r + 1}/{repeats}: " + ", ".join(
                f"{task}/{mode} {batch_size / t[-1]:.2f} img/s"
                for (task, mode), t in times.items()))

    rows = []
    base = {}
    for (task, mode), t in times.items():
        stats = summarize_times(t, work=batch_size)
        gflop = backbone_gflop(reference, train=task == "train")
        base.setdefault(task, stats["rate"])
        rows.append({
            "network": name, "task": task, "mode": mode, "batch_size": batch_size,
            "image_size": image_size,
            "images_s": stats["rate"], "images_s_min": stats["rate_min"],
            "images_s_max": stats["rate_max"], "step_s": stats["step_s"],
            "step_s_min": stats["step_s_min"], "step_s_max": stats["step_s_max"],
            "repeats": stats["repeats"], "gflop_per_image": gflop,
            "gflops": gflop * stats["rate"], "roof_fraction": gflop * stats["rate"] / roof.gflops,
            "speedup": stats["rate"] / base[task], "peak_rss_mib": rss[(task, mode)],
            "rss_added_mib": added[(task, mode)],
        })
    return rows


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


@use_np
def measure_head(classes_list=(10000, 100000), emb_size=512, batch_size=128, repeats=3,
                 warmup=1, compare_plain=True, ctx=None, roof=None, progress=None):
    """Seconds per forward + backward of the hybridized ArcFace head.

    ``fused`` is :class:`ArcMarginBlock` as shipped (fused row normalisation);
    ``plain`` the same head with the written-out normalisation, timed in the
    same repeats for the ratio.  FLOP per step: ``3 * 2 * B * C * E`` (the
    forward product and the two backward products).

    Returns
    -------
    list of dict
        ``workload`` ('head'), ``num_classes``, ``mode``, ``step_s`` (median),
        ``step_s_min``, ``step_s_max``, ``gflops``, ``roof_fraction``,
        ``speedup`` (plain median / this median), ``peak_rss_mib``,
        ``rss_added_mib`` (as in :func:`measure_backbone`).
    """
    ctx = ctx or mx.cpu()
    roof = roof or GemmRoof(ctx=ctx)
    rng = _rng(2)
    rows = []
    for classes in classes_list:
        x = np.array(rng.standard_normal((batch_size, emb_size)).astype("float32"), ctx=ctx)
        y = np.array(rng.integers(0, classes, batch_size).astype("float32"), ctx=ctx)
        x.attach_grad()
        heads = {"fused": ArcMarginBlock(emb_size, classes)}
        if compare_plain:
            heads["plain"] = _PlainArcMarginBlock(emb_size, classes)
        for head in heads.values():
            head.initialize(ctx=ctx)
            head.hybridize(static_alloc=True, static_shape=True)

        def step(head, x=x, y=y):
            with autograd.record():
                out = head(x, y)
            out.backward()

        times, rss, added = {k: [] for k in heads}, {}, {}
        for key, head in heads.items():
            before = peak_rss_mib()
            for _ in range(max(warmup, 1)):  # the first call allocates the parameters' memory
                _timed(lambda h=head: step(h))
            rss[key] = peak_rss_mib()
            added[key] = rss[key] - before
        for r in range(repeats):
            for key, head in heads.items():
                times[key].append(_timed(lambda h=head: step(h)))
                rss[key] = max(rss[key], peak_rss_mib())
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
                "batch_size": batch_size, "mode": key, "step_s": stats["step_s"],
                "step_s_min": stats["step_s_min"], "step_s_max": stats["step_s_max"],
                "repeats": stats["repeats"], "gflops": flop / stats["step_s"] / 1e9,
                "roof_fraction": flop / stats["step_s"] / 1e9 / roof.gflops,
                "speedup": ref / stats["step_s"] if ref else 1.0,
                "peak_rss_mib": rss[key], "rss_added_mib": added[key],
            })
        del heads
    return rows

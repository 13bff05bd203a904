"""Images/s of FaceResNet training and embedding, every variant interleaved in one process.

Within one repeat each variant (Block, hybridized, bf16, ...) runs one timed
step, then the next repeat starts.  On a shared machine the load changes over
seconds, so ratios between variants of the same repeat are much steadier than
absolute numbers; the medians and the min-max spread over repeats are reported.
"""
import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon, np
from mxnet.util import use_np

from ..graph import mxnet_compat
from ..graph.embedder import prepare_embedder
from ..graph.precision import to_bfloat16
from ..graph.prelu import to_split_prelu
from ..heads import ArcMarginBlock, SoftmaxCrossEntropyLoss
from ..model_zoo import get_model
from ..model_zoo.summary import summarize
from .memory import MIB, peak_rss_bytes
from .roof import GemmRoof
from .timing import summarize_times, timed

__all__ = ["BACKBONE_MODES", "TRAIN_MODES", "backbone_gflop", "measure_backbone"]

#: Backbone variants :func:`measure_backbone` knows, in table order.
BACKBONE_MODES = ("block", "hybrid", "fused", "bf16", "int8")
#: Variants that can train (int8 is inference-only).  In training, ``hybrid`` is the
#: plain static graph, ``fused`` the graph ``train.py`` trains through by default
#: (:func:`~gluon_face.graph.prelu.to_split_prelu`: PReLU split into oneDNN operators) and
#: ``bf16`` the one of ``train.py --amp`` (float32 master weights, bfloat16 compute).
TRAIN_MODES = ("block", "hybrid", "fused", "bf16")


def backbone_gflop(net, train):
    """GFLOP per image: ``2 * MACs`` forward (:func:`summarize`), x3 for a training step.

    The backward pass costs about twice the forward (data and weight gradients).
    """
    return 2.0 * summarize(net).macs * (3.0 if train else 1.0) / 1e9


def _copy_params(src, dst):
    # Structural keys (``features.3.0.body.1.weight``), as save_parameters uses:
    # independent of the instance-numbered name prefixes.
    dst_params = mxnet_compat.structural_params(dst)
    for key, param in mxnet_compat.structural_params(src).items():
        dst_params[key].set_data(param.data())


@use_np
def measure_backbone(name, modes=BACKBONE_MODES, batch_size=16, image_size=112, repeats=3,
                     warmup=1, train=True, embed=True, train_classes=1000, ctx=None,
                     roof=None, progress=None):
    """Images/s of one FaceResNet for embedding (inference) and training.

    A training step is forward, :class:`ArcMarginBlock` (``train_classes``
    identities) + cross-entropy, backward and an SGD update (momentum 0.9,
    wd 5e-4) of backbone and head.  An embedding step is a forward pass in
    inference mode through the block
    :func:`~gluon_face.graph.embedder.prepare_embedder` returns for the mode.

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
    rng = onp.random.default_rng(1)
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
            timed(run, mx.nd.waitall)
        rss[key] = peak_rss_bytes() / MIB
        added[key] = rss[key] - before
        steps[key] = run

    if embed:
        for mode in modes:
            before = peak_rss_bytes() / MIB
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
            before = peak_rss_bytes() / MIB
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
            times[key].append(timed(run, mx.nd.waitall))
            rss[key] = max(rss[key], peak_rss_bytes() / MIB)
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

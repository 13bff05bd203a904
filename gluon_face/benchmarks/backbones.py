"""Images/s of FaceResNet training and embedding, and the memory of one variant.

* :func:`measure_backbone`: speed.  Within one repeat each variant (Block,
  hybridized, bf16, ...) runs one timed step, then the next repeat starts.  On
  a shared machine the load changes over seconds, so ratios between variants
  of the same repeat are much steadier than absolute numbers; the medians and
  the min-max spread over repeats are reported.
* :func:`measure_memory`: the peak resident set of one (task, variant, batch
  size).  A process's peak only grows and MXNet keeps memory pools per graph,
  so this is meant to run in a fresh process of its own
  (:mod:`.workers`); the variants that :func:`measure_backbone` sets up one
  after another in one process cannot be told apart by memory.

Both set up a variant through :func:`build_step`, so the graph measured for
memory is the one timed.
"""
import os
import time

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
from .memory import MIB, peak_rss_bytes, rss_bytes
from .roof import GemmRoof
from .timing import summarize_times, timed

__all__ = ["BACKBONE_MODES", "TRAIN_MODES", "TASKS", "backbone_gflop", "build_step",
           "measure_backbone", "measure_memory"]

#: Backbone variants :func:`measure_backbone` knows, in table order.
BACKBONE_MODES = ("block", "hybrid", "fused", "bf16", "int8")
#: Variants that can train (int8 is inference-only).  In training, ``hybrid`` is the
#: plain static graph, ``fused`` the graph ``train.py`` trains through by default
#: (:func:`~gluon_face.graph.prelu.to_split_prelu`: PReLU split into oneDNN operators) and
#: ``bf16`` the one of ``train.py --amp`` (float32 master weights, bfloat16 compute).
TRAIN_MODES = ("block", "hybrid", "fused", "bf16")
#: What a step does: ``'embed'`` (forward, inference mode) or ``'train'``.
TASKS = ("embed", "train")


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


def _batch(batch_size, image_size, train_classes, ctx):
    """The random images and labels every variant is timed (and measured) on."""
    rng = onp.random.default_rng(1)
    x = np.array(rng.standard_normal((batch_size, 3, image_size, image_size))
                 .astype("float32"), ctx=ctx)
    y = np.array(rng.integers(0, train_classes, batch_size).astype("float32"), ctx=ctx)
    return x, y


def _check(task, mode):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if mode not in BACKBONE_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(BACKBONE_MODES)}")
    if task == "train" and mode not in TRAIN_MODES:
        raise ValueError(f"mode {mode!r} cannot train; training modes: {', '.join(TRAIN_MODES)}")


@use_np
def build_step(name, task, mode, x, y=None, train_classes=1000, ctx=None, reference=None):
    """Set up one variant of network ``name``: a callable running one step on ``x``.

    The one place a variant is built, for :func:`measure_backbone` (speed) and
    :func:`measure_memory` (memory) alike.

    Parameters
    ----------
    name : str
        Model zoo name.
    task : {'embed', 'train'}
        ``'embed'``: a forward pass in inference mode through the block
        :func:`~gluon_face.graph.embedder.prepare_embedder` returns for
        ``mode`` (``'int8'`` is calibrated on ``x`` itself).  ``'train'``:
        forward, :class:`ArcMarginBlock` (``train_classes`` identities) +
        cross-entropy, backward and an SGD update (momentum 0.9, wd 5e-4) of
        backbone and head; ``'hybrid'`` is the plain static graph, ``'fused'``
        the split-PReLU graph and ``'bf16'`` the graph of ``train.py --amp``.
    mode : str
        Among :data:`BACKBONE_MODES` (:data:`TRAIN_MODES` for training).
    x : mxnet.np.ndarray, shape (B, 3, H, W)
        The batch every step runs on (static shapes: the graph is planned for it).
    y : mxnet.np.ndarray, shape (B,), optional
        Labels in ``[0, train_classes)``; needed for training.
    ctx : Context, optional
        Default CPU.
    reference : HybridBlock, optional
        An initialised network whose parameters are copied in (so that all
        variants compute the same function); default: Xavier initialisation.

    Returns
    -------
    callable
        ``step()`` runs one step and returns without waiting for MXNet's engine
        (follow it with ``mx.nd.waitall()``).
    """
    _check(task, mode)
    if task == "train" and y is None:
        raise ValueError("training needs the labels y")
    ctx = ctx or mx.cpu()
    net = get_model(name, image_size=x.shape[2])
    net.initialize(mx.init.Xavier() if reference is None else mx.init.Uniform(), ctx=ctx)
    net(x)  # deferred shapes
    if reference is not None:
        _copy_params(reference, net)
    if task == "embed":
        embedder = prepare_embedder(net, x, mode=mode, ctx=ctx,
                                    calib_data=x if mode == "int8" else None)

        def run():
            with autograd.predict_mode():
                embedder(x)
        return run

    head = ArcMarginBlock(net.emb_size if hasattr(net, "emb_size") else 512, train_classes)
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
    loss_fn = SoftmaxCrossEntropyLoss()
    batch_size = x.shape[0]

    def run():
        with autograd.record():
            loss = loss_fn(head(model(x), y), y)
        loss.backward()
        trainer.step(batch_size)
    return run


@use_np
def measure_backbone(name, modes=BACKBONE_MODES, batch_size=16, image_size=112, repeats=3,
                     warmup=1, train=True, embed=True, train_classes=1000, ctx=None,
                     roof=None, progress=None):
    """Images/s of one FaceResNet for embedding (inference) and training.

    Every variant is set up by :func:`build_step` (the steps are described
    there), all in this process, then timed interleaved.

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
        warm-up; 0 when a freed pool was reused).  The two memory figures
        depend on the variants set up before: with several modes they are not
        a variant's own (:func:`measure_memory` in a fresh process gives those).
    """
    bad = [m for m in modes if m not in BACKBONE_MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {bad or modes!r}; valid: {', '.join(BACKBONE_MODES)}")
    for arg in ("batch_size", "repeats"):
        if int(locals()[arg]) < 1:
            raise ValueError(f"{arg} must be >= 1")
    ctx = ctx or mx.cpu()
    roof = roof or GemmRoof(ctx=ctx)
    x, y = _batch(batch_size, image_size, train_classes, ctx)

    reference = get_model(name, image_size=image_size)
    reference.initialize(mx.init.Xavier(), ctx=ctx)
    reference(x)

    steps, rss, added = {}, {}, {}
    tasks = [t for t, on in (("embed", embed), ("train", train)) if on]
    for task in tasks:
        for mode in modes:
            if task == "train" and mode not in TRAIN_MODES:
                continue
            before = peak_rss_bytes() / MIB
            run = build_step(name, task, mode, x, y, train_classes=train_classes, ctx=ctx,
                             reference=reference)
            for _ in range(warmup):
                timed(run, mx.nd.waitall)
            rss[(task, mode)] = peak_rss_bytes() / MIB
            added[(task, mode)] = rss[(task, mode)] - before
            steps[(task, mode)] = run

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


@use_np
def measure_memory(name, task, mode, batch_size=16, image_size=112, warmup=1, steps=2,
                   train_classes=1000, ctx=None):
    """Peak resident set of one (task, variant, batch size), for a process of its own.

    Reads this process's resident set first (``baseline``), then builds the
    batch and the variant (:func:`build_step`, as :func:`measure_backbone`
    does), runs ``warmup + steps`` steps and reads the process's peak
    (``VmHWM``).  Only in a fresh process that measured nothing before are the
    peak and ``peak - baseline`` this variant's own: the peak only grows, and
    MXNet keeps the memory pool of every graph it ran.

    Parameters
    ----------
    name : str
        Model zoo name.
    task : {'embed', 'train'}
    mode : str
        Among :data:`BACKBONE_MODES` (:data:`TRAIN_MODES` for training).
    batch_size, image_size : int
    warmup, steps : int
        Steps before and after the first timing; ``steps >= 1``.

    Returns
    -------
    dict
        ``network``, ``task``, ``mode``, ``batch_size``, ``image_size``,
        ``baseline_rss_mib`` (resident set before the model: the interpreter
        and the libraries), ``peak_rss_mib`` (peak of the process after set-up
        and all steps), ``rss_added_mib`` (``peak - baseline``: the variant's
        own memory), ``setup_s``, ``step_s`` (median of the last ``steps``
        steps, timed alone, not interleaved), ``warmup``, ``steps`` and
        ``pid`` (the measuring process).
    """
    _check(task, mode)
    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"batch_size and steps must be >= 1 and warmup >= 0, got "
                         f"{batch_size}, {steps} and {warmup}")
    ctx = ctx or mx.cpu()
    mx.nd.waitall()
    baseline = rss_bytes() / MIB
    start = time.perf_counter()
    x, y = _batch(batch_size, image_size, train_classes, ctx)
    run = build_step(name, task, mode, x, y, train_classes=train_classes, ctx=ctx)
    mx.nd.waitall()
    setup_s = time.perf_counter() - start
    times = [timed(run, mx.nd.waitall) for _ in range(warmup + steps)][warmup:]
    peak = peak_rss_bytes() / MIB
    return {"network": name, "task": task, "mode": mode, "batch_size": batch_size,
            "image_size": image_size, "baseline_rss_mib": baseline, "peak_rss_mib": peak,
            "rss_added_mib": peak - baseline, "setup_s": setup_s,
            "step_s": summarize_times(times)["step_s"], "warmup": warmup, "steps": steps,
            "pid": os.getpid()}

"""Where one variant's step spends its time: MXNet's per-operator profile.

:func:`profile_variant` sets up one (network, task, variant) with
:func:`~gluon_face.benchmarks.backbones.build_step`, the set-up the speed and
memory figures use, and runs a few steps under ``mx.profiler`` with MXNet's
bulk execution off, so that every operator is timed on its own instead of
inside a bulked segment.  That switch is read when a graph is built and
changes the timing a little (bulking saves some engine overhead), so a
profile runs in a process of its own (``tools/benchmark.py --profile``) and
its step time is not mixed with the speed table's.

The ``convolution`` share answers one question: how much of the step are
oneDNN's convolution kernels (forward, backward, fused or quantised), which
no graph rewrite in Python can make faster.
"""
import os
import time

import mxnet as mx
from mxnet.util import use_np

from .backbones import _batch, build_step

__all__ = ["BULK_VARIABLES", "CONVOLUTION_OPERATORS", "parse_operator_table",
           "profile_variant"]

#: MXNet's switches for bulked execution of static graphs (0: every operator on its own).
BULK_VARIABLES = ("MXNET_EXEC_BULK_EXEC_TRAIN", "MXNET_EXEC_BULK_EXEC_INFERENCE")
#: The operators counted as convolution: float32/bfloat16, oneDNN-fused and int8 kinds.
CONVOLUTION_OPERATORS = ("Convolution", "_backward_Convolution", "_sg_mkldnn_conv",
                         "_contrib_quantized_conv", "_npx_convolution",
                         "_backward_npx_convolution")
#: Sections of the profiler's table that time operators.
_SECTIONS = ("operator", "Custom Operator")


def parse_operator_table(text):
    """The operator rows of ``mx.profiler.dumps(format='table')``.

    Returns
    -------
    list of dict
        ``operator`` (name; a custom operator as ``name::pure_python``),
        ``calls`` and ``total_ms``, from the ``operator`` and ``Custom
        Operator`` sections, in table order.
    """
    lines = text.splitlines()
    rows, section = [], None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1].startswith("====="):
            section = line.strip()  # a section's title is underlined with '='
            continue
        fields = line.split()
        if section in _SECTIONS and len(fields) >= 6 and all(map(_numeric, fields[-5:])):
            rows.append({"operator": " ".join(fields[:-5]), "calls": int(fields[-5]),
                         "total_ms": float(fields[-4])})
    return rows


def _numeric(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@use_np
def profile_variant(name, task, mode, batch_size=16, image_size=112, warmup=2, steps=3,
                    train_classes=1000, ctx=None):
    """Per-operator milliseconds of one step of one variant, for a process of its own.

    Turns bulk execution off (:data:`BULK_VARIABLES`) before the variant is
    built, runs ``warmup`` steps, then ``steps`` steps under the profiler.

    Returns
    -------
    dict
        ``network``, ``task``, ``mode``, ``batch_size``, ``image_size``,
        ``steps``, ``step_s`` (wall time per profiled step), ``operators``
        (``operator``, ``calls_per_step``, ``ms_per_step``, ``convolution``:
        whether among :data:`CONVOLUTION_OPERATORS`; slowest first),
        ``operator_ms`` (their sum per step), ``convolution_ms`` (the
        convolutions' sum per step) and ``pid``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    for var in BULK_VARIABLES:
        os.environ[var] = "0"
    ctx = ctx or mx.cpu()
    x, y = _batch(batch_size, image_size, train_classes, ctx)
    run = build_step(name, task, mode, x, y, train_classes=train_classes, ctx=ctx)
    for _ in range(warmup):
        run()
        mx.nd.waitall()
    # the trace file MXNet would write into the working directory at exit: not wanted
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=os.devnull)
    mx.profiler.dumps(reset=True)  # nothing of the warm-up
    mx.profiler.set_state("run")
    start = time.perf_counter()
    try:
        for _ in range(steps):
            run()
            mx.nd.waitall()
    finally:
        wall = time.perf_counter() - start
        mx.profiler.set_state("stop")
    table = parse_operator_table(mx.profiler.dumps(reset=True, format="table"))
    ops = sorted(({"operator": r["operator"], "calls_per_step": r["calls"] / steps,
                   "ms_per_step": r["total_ms"] / steps,
                   "convolution": r["operator"] in CONVOLUTION_OPERATORS} for r in table),
                 key=lambda r: -r["ms_per_step"])
    return {"network": name, "task": task, "mode": mode, "batch_size": batch_size,
            "image_size": image_size, "steps": steps, "step_s": wall / steps,
            "operators": ops, "operator_ms": sum(r["ms_per_step"] for r in ops),
            "convolution_ms": sum(r["ms_per_step"] for r in ops if r["convolution"]),
            "pid": os.getpid()}

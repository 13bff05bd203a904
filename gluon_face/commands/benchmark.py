"""Images/s of FaceResNet training and embedding, the margin head's step time, and memory.

    python tools/benchmark.py                                   # faceresnet18,50; head 10k,100k
    python tools/benchmark.py --networks faceresnet50 --repeats 5 --json bench.json
    python tools/benchmark.py --quick --json quick.json         # smoke test
    python tools/benchmark.py --networks faceresnet50 --torch-python ~/torchvenv/bin/python
    python tools/benchmark.py --networks faceresnet50 --head-classes '' --max-batch-gib 24

Variants: ``block`` (imperative Gluon), ``hybrid`` (static graph),
``fused`` (embedding: MKLDNN fusion, BatchNorm folded into convolutions, PReLU
split into oneDNN operators; training: the split-PReLU graph train.py trains
through by default), ``bf16`` (bfloat16 graph from
mxnet.contrib.amp: the embedder, and for training the mixed-precision graph
of ``train.py --amp``), ``int8`` (MKLDNN quantisation; embedding only).  With
``--amx auto`` (default) each process first lets oneDNN use the AMX tiles
where the CPU has them (bf16 and int8 gain; float32 does not use them).

Speed: all variants of a network run interleaved in one process (one timed step
each per repeat), so the ``x`` column (speed-up over ``block`` / over the
plain head) compares like with like; medians with the min-max over repeats.
``roof`` is the achieved GFLOP/s over the best float32 GEMM rate measured in
the same run; ``bf16 roof`` the same over the best bfloat16 rate (oneDNN's
bfloat16 product, AMX where allowed), for the bf16 and int8 rows, on CPUs
with AVX-512 BF16.  Each network, and the head, runs in its own process.
The head's ``products`` row times its three products alone (MXNet's own
``fully_connected`` forward and backward, no normalisation, no margin): what
any head built on MXNet's GEMMs needs at least.  A line under the table sets
the shipped head against it and against the GEMM bound (the head's FLOP at the
float32 roof).

Memory is measured apart, one process per row.  A process's peak resident set
only grows and MXNet keeps a memory pool per graph, so in the timing process,
where every variant was set up one after another, a variant's memory depends
on what ran before it (a graph set up after another can seem to add gigabytes
that it does not use alone, or nothing at all when it reuses a freed pool).  Each
row of the memory table is a fresh worker that reads its resident set, sets up
only that (network, task, variant, batch size), runs 1 warm-up and 2 steps and
reports its peak (``VmHWM``): ``peak RSS`` is the whole process, ``added`` the
peak minus the resident set before the model (the variant's own: parameters,
graph, activations, optimizer state).  ``--memory-batches B0,B1,...`` (default
``<--batch-size>,64,128``): embedding rows at B0, training rows at every one;
``''`` measures no memory.  The workers are stopped past what the machine can
hold (MemAvailable minus 1 GiB), which the table reports as ``stopped``.

``--max-batch-gib G`` (default off) finds, per network and training variant,
the largest batch whose training worker (set-up, 1 warm-up and 2 steps) peaks
at or under G GiB, to 8 images: it fits ``peak = a + b * batch`` to the two
largest training batches of the memory table (64 and 128 by default; with one
batch, that one and its double), runs the batch the line predicts, then steps
or bisects (at most 5 more workers per variant; benchmarks/capacity.py).  A
worker stopped past the budget, or one that runs out of memory, does not fit.
When G is more than this machine can hold, nothing runs past that: the table
gives the line's prediction for G, marked as one, and the largest batch
measured within the machine.  Progress lines on stderr name each worker (which
probe, batch, peak, seconds).

``--torch-python PATH`` adds the PyTorch peer (tools/benchmark_torch.py, run
by that interpreter; see its docstring for the install): in each network's
and the head's process, a torch process sets up and warms up its variants
first, then the two alternate repeat by repeat (ours, then torch), so both
see the same machine load.  ``vs torch`` is ours / torch fp32 eager and
``vs best`` ours / the fastest torch variant of the same task (for the head:
torch's step time / ours, among the variants of the same protocol: with the
cross-entropy for ``fused+ce``, from a given logits gradient for the others);
above 1, ours is faster.
The torch variants get a table of their own, and the parameter counts of
both are printed side by side.

JSON (``--json``): ``rows`` (speed; a backbone row's ``peak_rss_mib`` and
``rss_added_mib`` are those of its memory row when one was measured, and
absent otherwise), ``memory`` (one row per worker, with its ``pid``) and
``capacity`` (one entry per network and training variant with the search's
probes).
"""
import argparse
import json
import math
import os
import sys
import time

from gluon_face._cli import ToolParser
from gluon_face._io import atomic_open
from gluon_face.benchmarks.capacity import (
    ProbeFailed,
    describe_capacity,
    describe_fit,
    largest_batch,
)
from gluon_face.benchmarks.memory import GIB, MIB, available_bytes
from gluon_face.benchmarks.text import (
    comma_list,
    describe_row,
    int_list,
    parse_or_status,
    text_table,
)
from gluon_face.benchmarks.torch_peer import (
    TorchPeer,
    add_torch_ratios,
    check_torch_python,
    load_torch_tool,
)
from gluon_face.benchmarks.workers import out_of_memory, run_worker

QUICK = dict(networks=["faceresnet18"], batch_size=2, image_size=32, repeats=2, warmup=1,
             head_classes=[2000], head_batch=32, memory_batches=[2])
#: Training batches of the memory table besides ``--batch-size`` (by default).
MEMORY_BATCHES = (64, 128)
#: Steps of a memory worker: warm-up, then measured steps (the peak is read after all).
MEMORY_WARMUP, MEMORY_STEPS = 1, 2
#: Memory left to the rest of the machine: workers are stopped past MemAvailable minus this.
MACHINE_MARGIN_GIB = 1.0
#: The largest-batch search: granularity (images) and workers after the two seeds.
CAPACITY_STEP, CAPACITY_PROBES = 8, 5


def _parse(argv):
    from gluon_face.benchmarks.backbones import BACKBONE_MODES

    parser = ToolParser(prog="benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=comma_list, default=["faceresnet18", "faceresnet50"],
                        help="comma-separated model names; 'none' for the head only "
                        "(default faceresnet18,faceresnet50)")
    parser.add_argument("--modes", type=comma_list, default=list(BACKBONE_MODES),
                        help=f"comma-separated among {','.join(BACKBONE_MODES)} (default all)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (16)")
    parser.add_argument("--image-size", type=int, default=112, help="image side (112)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    parser.add_argument("--no-train", action="store_true", help="embedding only")
    parser.add_argument("--no-embed", action="store_true",
                        help="training only (halves the memory of a network's process)")
    parser.add_argument("--head-classes", type=int_list(), default=[10000, 100000],
                        help="class counts for the head, '' for none "
                        "(default 10000,100000)")
    parser.add_argument("--head-batch", type=int, default=128, help="head batch (128)")
    parser.add_argument("--emb-size", type=int, default=512, help="head embedding size (512)")
    parser.add_argument("--memory-batches", type=int_list("--memory-batches values"),
                        default=None,
                        help="batch sizes of the memory table, one worker process per row: "
                        "embedding at the first, training at each; '' for no memory table "
                        "(default <--batch-size>,64,128)")
    parser.add_argument("--max-batch-gib", type=float, default=None, metavar="GIB",
                        help="also find, per network and training variant, the largest batch "
                        "(to 8 images) whose training worker peaks at or under GIB; beyond "
                        "what this machine holds, a prediction from the fitted line "
                        "(default off)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile every (network, task, variant) in a process of its "
                        "own: milliseconds per step by operator, the convolutions' share")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (faceresnet18 at 32x32, batch 2, head 2k classes, "
                        "memory at batch 2)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--torch-python", metavar="PATH",
                        help="python of a venv with torch: also run tools/benchmark_torch.py, "
                        "interleaved with ours, and add ratio columns")
    parser.add_argument("--torch-modes", type=comma_list, default=None,
                        help="variants of the torch peer (default its own: "
                        "eager,cl,bf16,jit,compile)")
    parser.add_argument("--amx", choices=("auto", "off"), default="auto",
                        help="auto (default): let oneDNN use the AMX tiles for bfloat16 and "
                        "INT8 where the CPU and kernel allow it, as train.py --amp does; "
                        "off: AVX-512 only")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        given = " ".join(sys.argv[1:] if argv is None else argv)
        for key, value in QUICK.items():
            if f"--{key.replace('_', '-')}" not in given:
                setattr(args, key, value)
    if args.networks == ["none"]:
        args.networks = []
    bad = [m for m in args.modes if m not in BACKBONE_MODES]
    if bad or not args.modes:
        parser.error(f"--modes: unknown {bad or args.modes}; valid: {', '.join(BACKBONE_MODES)}")
    for name in ("batch_size", "image_size", "repeats", "head_batch", "emb_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.torch_modes is not None:
        try:
            valid = load_torch_tool().BACKBONE_MODES
        except OSError as err:
            parser.error(f"--torch-modes: {err}")
        bad = [m for m in args.torch_modes if m not in valid]
        if bad or not args.torch_modes:
            parser.error(f"--torch-modes: unknown {bad or args.torch_modes}; valid: "
                         f"{', '.join(valid)}")
    if args.no_train and args.no_embed and args.networks:
        parser.error("--no-train and --no-embed leave nothing to measure for --networks")
    if args.memory_batches is None:
        args.memory_batches = [args.batch_size, *MEMORY_BATCHES]
    args.memory_batches = list(dict.fromkeys(args.memory_batches))  # repeats dropped
    if args.max_batch_gib is not None:
        if not (math.isfinite(args.max_batch_gib) and args.max_batch_gib > 0):
            parser.error(f"--max-batch-gib must be a positive number of GiB, got "
                         f"{args.max_batch_gib:g}")
        if args.networks and (args.no_train or not _train_modes(args)):
            parser.error("--max-batch-gib searches training batches: it needs training "
                         "(no --no-train) and a training variant in --modes")
    return args


def _train_modes(args):
    from gluon_face.benchmarks.backbones import TRAIN_MODES

    return [m for m in args.modes if m in TRAIN_MODES]


def format_table(rows, roof_gflops, torch=False, roof_bf16_gflops=None):
    """The speed rows as an aligned text table (with ``torch``: the ratio columns too).

    No memory columns: the speed rows come from processes that set up several
    variants (:func:`format_memory_table` has each variant's own).
    """
    head = ["workload", "task", "variant", "median (min-max)", "x", "GFLOP/s", "roof",
            "bf16 roof"] + (["vs torch", "vs best"] if torch else [])
    lines = []
    for r in rows:
        low = r.get("roof_bf16_fraction")
        lines.append(describe_row(r) + [f"{r['speedup']:.2f}", f"{r['gflops']:.1f}",
                                        f"{100 * r['roof_fraction']:.0f}%",
                                        "-" if low is None else f"{100 * low:.0f}%"])
        if torch:
            lines[-1] += [_ratio(r.get("vs_torch")), _ratio(r.get("vs_torch_best"),
                                                           r.get("torch_best_mode"))]
    text = text_table(head, lines) + (f"\nGEMM roof (float32 2048^2, best of np.dot / "
                                      f"fully_connected over the run): {roof_gflops:.1f} GFLOP/s")
    if roof_bf16_gflops:
        text += (f"\nbfloat16 GEMM roof (2048^2 FullyConnected, float32 accumulation, best "
                 f"over the run): {roof_bf16_gflops:.1f} GFLOP/s")
    return text


def describe_head_bounds(rows, roof_gflops):
    """Per class count, the head's times against its GEMM bound and its products' floor.

    The bound is the head's FLOP (three ``B x C x E`` products) at the float32
    roof; ``products`` the same products through MXNet's own
    ``fully_connected`` forward and backward.  Empty without a ``products`` row.
    """
    lines = []
    for floor in (r for r in rows if r.get("workload") == "head" and r.get("floor")):
        bound = floor["gflops"] * floor["step_s"] / roof_gflops  # the row's FLOP at the roof
        fused = [r for r in rows if r.get("workload") == "head" and r["mode"] == "fused"
                 and r["num_classes"] == floor["num_classes"]]
        text = (f"head C={floor['num_classes']}: GEMM bound {bound:.3f} s (its FLOP at the "
                f"float32 roof); products alone (fully_connected fwd+bwd) "
                f"{floor['step_s']:.3f} s = {floor['step_s'] / bound:.2f}x the bound")
        if fused:
            step = fused[0]["step_s"]
            text += (f"; fused {step:.3f} s = {step / bound:.2f}x the bound, "
                     f"{step / floor['step_s']:.2f}x the products")
        lines.append(text)
    return "\n".join(lines)


def format_memory_table(rows):
    """The memory rows (one worker process each) as an aligned text table."""
    head = ["workload", "task", "variant", "peak RSS MiB", "added MiB", "status"]
    lines = []
    for r in rows:
        ok = r["status"] == "ok"
        lines.append([f"{r['network']} {r['image_size']}px",
                      f"{r['task']} B={r['batch_size']}", r["mode"],
                      f"{r['peak_rss_mib']:,.0f}" if ok else "-",
                      f"{r['rss_added_mib']:,.0f}" if ok else "-",
                      r["status"]])
    return text_table(head, lines)


def format_capacity_table(results, budget_gib):
    """The largest-batch search results as an aligned text table."""
    head = ["workload", "variant", f"largest batch in {budget_gib:g} GiB", "peak GiB",
            "peak = a + b * batch", "workers"]
    lines = []
    for r in results:
        lines.append([f"{r['network']} {r['image_size']}px", f"train {r['mode']}",
                      describe_capacity(r),
                      "-" if r["peak_mib"] is None else f"{r['peak_mib'] / 1024:.2f}",
                      describe_fit(r), str(sum(run["probed"] for run in r["runs"]))])
    return text_table(head, lines)


def _ratio(value, mode=None):
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ({mode})" if mode else "")


def _torch_argv(args, networks, head_classes):
    argv = ["--networks", ",".join(networks) or "none",
            "--head-classes", ",".join(str(c) for c in head_classes)]
    for name in ("batch_size", "image_size", "warmup", "head_batch", "emb_size"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.torch_modes:
        argv += ["--modes", ",".join(args.torch_modes)]
    return argv + (["--no-train"] if args.no_train else []) + \
        (["--no-embed"] if args.no_embed else [])


def _log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _enable_amx(args):
    from gluon_face.training.amp import enable_amx

    # before any oneDNN primitive of this process runs (enable_amx's docstring)
    return bool(args.amx == "auto" and enable_amx())


def _measure_memory(args):
    """The memory worker: the one (network, task, mode, batch) of ``args``, in this process."""
    amx = _enable_amx(args)
    from gluon_face.benchmarks.backbones import measure_memory

    row = measure_memory(args.networks[0], "embed" if args.no_train else "train",
                         args.modes[0], batch_size=args.batch_size,
                         image_size=args.image_size, warmup=MEMORY_WARMUP,
                         steps=MEMORY_STEPS)
    row["amx"] = amx
    return row


def _profile_one(args):
    """The profile worker: the one (network, task, mode) of ``args``, in this process."""
    _enable_amx(args)
    from gluon_face.benchmarks.profile import profile_variant

    return profile_variant(args.networks[0], "embed" if args.no_train else "train",
                           args.modes[0], batch_size=args.batch_size,
                           image_size=args.image_size, warmup=max(args.warmup, 1),
                           steps=args.repeats)


def _run_profiles(args):
    """The profile table: one worker per (network, task, mode)."""
    if not args.profile:
        return []
    jobs = _variants(args)
    rows = []
    for i, (name, task, mode) in enumerate(jobs, 1):
        argv = _variant_argv(args, name, task, mode, args.batch_size, "--profile-worker",
                             "--repeats", str(args.repeats), "--warmup", str(args.warmup))
        run = run_worker(__spec__.name, argv, capture_stderr=True)
        if run["result"] is None:
            raise RuntimeError(f"the profile of {name} {task}/{mode} failed: {run['status']}")
        rows.append(run["result"]["profile"])
        r = rows[-1]
        _log(f"profile {i}/{len(jobs)}: {name} {task}/{mode}: {1e3 * r['step_s']:,.0f} ms "
             f"per step, convolutions {r['convolution_ms']:,.0f} ms, {run['wall_s']:.0f} s")
    return rows


def format_profile_table(rows, top=4):
    """The profile rows as an aligned text table: the step, the convolutions, the top others."""
    head = ["workload", "task", "variant", "step ms", "operators ms", "convolutions ms",
            "slowest other operators (ms per step)"]
    lines = []
    for r in rows:
        conv = r["convolution_ms"]
        share = conv / r["operator_ms"] if r["operator_ms"] else 0.0
        others = [o for o in r["operators"] if not o["convolution"]]
        lines.append([f"{r['network']} {r['image_size']}px", f"{r['task']} B={r['batch_size']}",
                      r["mode"], f"{1e3 * r['step_s']:,.0f}", f"{r['operator_ms']:,.0f}",
                      f"{conv:,.0f} ({100 * share:.0f}%)",
                      ", ".join(f"{o['operator']} {o['ms_per_step']:,.0f}"
                                for o in others[:top])])
    return text_table(head, lines)


def _measure(args):
    """Run the workloads of ``args`` in this process: ``(rows, roof samples, torch parts)``."""
    amx = _enable_amx(args)
    import mxnet as mx

    from gluon_face.benchmarks.backbones import measure_backbone
    from gluon_face.benchmarks.heads import measure_fused_head
    from gluon_face.benchmarks.roof import GemmRoof
    from gluon_face.training.amp import cpu_has_bf16

    roof = GemmRoof(bf16=cpu_has_bf16())
    rows, torch_parts = [], []
    for name in args.networks:
        peer = None
        if args.torch_python:
            _log(f"{name}: torch peer setting up")
            peer = TorchPeer(args.torch_python, _torch_argv(args, [name], []))
        try:
            _log(f"{name}: building {', '.join(args.modes)}")
            rows += measure_backbone(name, modes=args.modes, batch_size=args.batch_size,
                                     image_size=args.image_size, repeats=args.repeats,
                                     warmup=args.warmup, train=not args.no_train,
                                     embed=not args.no_embed, roof=roof,
                                     progress=peer.after(_log) if peer else _log)
            mx.nd.waitall()
            if peer:
                torch_parts.append(peer.finish())
        finally:
            if peer:
                peer.close()
    if args.head_classes:
        if not args.torch_python:
            rows += measure_fused_head(args.head_classes, emb_size=args.emb_size,
                                       batch_size=args.head_batch, repeats=args.repeats,
                                       warmup=args.warmup, roof=roof, progress=_log)
        else:
            _log("head: torch peer setting up")
            peer = TorchPeer(args.torch_python, _torch_argv(args, [], args.head_classes))
            try:
                for classes in args.head_classes:
                    rows += measure_fused_head([classes], emb_size=args.emb_size,
                                               batch_size=args.head_batch,
                                               repeats=args.repeats, warmup=args.warmup,
                                               roof=roof, progress=peer.after(_log, classes))
                torch_parts.append(peer.finish())
            finally:
                peer.close()
    for row in rows:
        row["amx"] = amx
    return rows, {"float32": roof.samples, "bfloat16": roof.bf16_samples}, torch_parts


def _set_roofs(row, roof, roof_bf16):
    """A row's fractions of the float32 roof and, for a low-precision variant, the bf16 one."""
    row["roof_fraction"] = row["gflops"] / roof
    low = roof_bf16 and ("bf16" in row["mode"] or row["mode"] == "int8")
    row["roof_bf16_fraction"] = row["gflops"] / roof_bf16 if low else None


def _worker_argv(args, networks, head_classes):
    argv = ["--networks", ",".join(networks) or "none",
            "--head-classes", ",".join(str(c) for c in head_classes),
            "--modes", ",".join(args.modes), "--amx", args.amx]
    for name in ("batch_size", "image_size", "repeats", "warmup", "head_batch", "emb_size"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.torch_python:
        argv += ["--torch-python", args.torch_python]
        if args.torch_modes:
            argv += ["--torch-modes", ",".join(args.torch_modes)]
    return argv + (["--no-train"] if args.no_train else []) + \
        (["--no-embed"] if args.no_embed else [])


def _run_workers(args):
    """Each network, and the head, in its own process: memory figures are its own."""
    jobs = [([name], []) for name in args.networks]
    if args.head_classes:
        jobs.append(([], args.head_classes))
    rows, samples, torch_parts = [], {"float32": [], "bfloat16": []}, []
    for networks, classes in jobs:
        run = run_worker(__spec__.name, _worker_argv(args, networks, classes))
        if run["result"] is None:
            what = networks[0] if networks else "head"
            raise RuntimeError(f"the {what} measurement failed (exit {run['returncode']})")
        rows += run["result"]["rows"]
        for dtype, values in run["result"]["roof_samples"].items():
            samples[dtype] += values
        torch_parts += run["result"].get("torch", [])
    return rows, samples, torch_parts


def _machine_limit_gib():
    """What a worker may take: MemAvailable minus the margin, GiB (None: unknown)."""
    avail = available_bytes()
    return None if avail is None else max(avail / GIB - MACHINE_MARGIN_GIB, 0.0)


def _memory_run(args, name, task, mode, batch, limit_gib):
    """One memory worker; its memory row (``status`` 'ok' or why not) and the run itself."""
    argv = _variant_argv(args, name, task, mode, batch, "--memory-worker")
    run = run_worker(__spec__.name, argv, max_rss_gib=limit_gib, capture_stderr=True)
    row = {"network": name, "task": task, "mode": mode, "batch_size": batch,
           "image_size": args.image_size}
    if run["result"] is not None:
        row.update(run["result"]["memory"])
    else:
        row.update(peak_rss_mib=None, rss_added_mib=None,
                   rss_seen_mib=run["rss_seen_gib"] * GIB / MIB,
                   out_of_memory=out_of_memory(run))
    row.update(status=run["status"], wall_s=run["wall_s"], limit_gib=limit_gib)
    return row, run


def _variants(args):
    """``(network, task, mode)`` of every variant measured, in table order."""
    jobs = []
    for name in args.networks:
        if not args.no_embed:
            jobs += [(name, "embed", m) for m in args.modes]
        if not args.no_train:
            jobs += [(name, "train", m) for m in _train_modes(args)]
    return jobs


def _variant_argv(args, name, task, mode, batch, *extra):
    """The arguments of a worker that measures one variant at ``batch`` (and ``extra``)."""
    return ["--networks", name, "--modes", mode, "--batch-size", str(batch),
            "--image-size", str(args.image_size), "--amx", args.amx, "--head-classes", "",
            "--memory-batches", "", "--no-train" if task == "embed" else "--no-embed", *extra]


def _memory_jobs(args):
    """``(network, task, mode, batch)`` of every memory row, in table order."""
    if not args.memory_batches:
        return []
    return [(name, task, mode, b) for name, task, mode in _variants(args)
            for b in (args.memory_batches[:1] if task == "embed" else args.memory_batches)]


def _run_memory(args):
    """The memory table: one worker per row."""
    jobs = _memory_jobs(args)
    rows = []
    for i, (name, task, mode, batch) in enumerate(jobs, 1):
        row, _ = _memory_run(args, name, task, mode, batch, _machine_limit_gib())
        rows.append(row)
        what = (f"peak {row['peak_rss_mib']:,.0f} MiB (+{row['rss_added_mib']:,.0f})"
                if row["status"] == "ok" else row["status"])
        _log(f"memory {i}/{len(jobs)}: {name} {task}/{mode} B={batch}: {what}, "
             f"pid {row.get('pid', '-')}, {row['wall_s']:.0f} s")
    return rows


def _run_capacity(args, memory_rows):
    """The largest training batch in ``--max-batch-gib`` per network and training mode."""
    budget_mib = args.max_batch_gib * GIB / MIB
    results = []
    for name in args.networks:
        for mode in _train_modes(args):
            machine = _machine_limit_gib()
            limit_gib = args.max_batch_gib if machine is None else min(args.max_batch_gib,
                                                                       machine)
            known = {r["batch_size"]: r["peak_rss_mib"] for r in memory_rows
                     if (r["network"], r["task"], r["mode"]) == (name, "train", mode)
                     and (r["status"] == "ok" or r.get("out_of_memory"))}
            seeds = _seeds(sorted(known))
            what = f"capacity {name} train/{mode}"
            _log(f"{what}: largest batch with peak <= {limit_gib:.2f} GiB"
                 + ("" if limit_gib == args.max_batch_gib else
                    f" (what this machine holds; {args.max_batch_gib:g} GiB is predicted)"))
            probes = []

            def probe(batch, name=name, mode=mode, limit_gib=limit_gib, probes=probes,
                      what=what):
                row, run = _memory_run(args, name, "train", mode, batch, limit_gib)
                probes.append(row)
                if row["status"] == "ok":
                    peak = row["peak_rss_mib"]
                    _log(f"{what}: B={batch} peaks at {peak:,.0f} MiB: "
                         f"{'fits' if peak <= limit_gib * GIB / MIB else 'does not fit'} "
                         f"({row['wall_s']:.0f} s)")
                    return peak
                if row["out_of_memory"]:
                    _log(f"{what}: B={batch} does not fit: {row['status']} "
                         f"({row['wall_s']:.0f} s)")
                    return None
                _log(f"{what}: B={batch} {row['status']} ({row['wall_s']:.0f} s)")
                raise ProbeFailed(row["status"])

            result = largest_batch(
                probe, limit_gib * GIB / MIB, seeds=seeds, known=known, step=CAPACITY_STEP,
                max_probes=CAPACITY_PROBES,
                budget_mib=budget_mib if limit_gib < args.max_batch_gib else None,
                progress=lambda text, what=what: _log(f"{what}: {text}"))
            result.update(network=name, mode=mode, image_size=args.image_size,
                          budget_gib=args.max_batch_gib, limit_gib=limit_gib,
                          machine_gib=machine, machine_limited=limit_gib < args.max_batch_gib,
                          workers=probes)
            _log(f"{what}: {describe_capacity(result)}")
            results.append(result)
    return results


def _seeds(train_batches):
    """The two batch sizes the search fits its first line to: the two largest of the memory
    table's training rows, that one and its double, or 64 and 128."""
    if len(train_batches) >= 2:
        return train_batches[-2:]
    if train_batches:
        return [train_batches[0], 2 * train_batches[0]]
    return list(MEMORY_BATCHES)


def _merge_memory(rows, memory_rows):
    """Speed rows carry their memory row's figures (same network, task, mode, batch).

    The figures the timing process measured are dropped: they depend on the
    variants set up before (module docstring).
    """
    own = {(r["network"], r["task"], r["mode"], r["batch_size"]): r for r in memory_rows
           if r["status"] == "ok"}
    for row in rows:
        if row.get("workload") == "head":
            continue
        row.pop("peak_rss_mib", None)
        row.pop("rss_added_mib", None)
        mem = own.get((row["network"], row["task"], row["mode"], row["batch_size"]))
        if mem:
            row.update(peak_rss_mib=mem["peak_rss_mib"], rss_added_mib=mem["rss_added_mib"],
                       memory_pid=mem["pid"])


def _param_counts(args, torch_rows):
    """``{network: {'ours': n, 'torch': n}}``: parameters, BatchNorm running statistics apart."""
    from gluon_face.model_zoo import get_model, summarize

    counts = {}
    for name in args.networks:
        net = get_model(name, emb_size=args.emb_size, image_size=args.image_size)
        theirs = [r["params"] for r in torch_rows if r.get("network") == name]
        counts[name] = {"ours": summarize(net).params, "torch": theirs[0] if theirs else None}
    return counts


def _print_torch(args, info, torch_rows):
    if info:
        print(f"\nPyTorch peer: torch {info['torch']} ({info['cpu_capability']}), "
              f"{info['threads']} threads, insightface IR-ResNet / ArcFace written in "
              f"tools/benchmark_torch.py, repeats interleaved with ours")
    for name, c in _param_counts(args, torch_rows).items():
        same = "equal" if c["ours"] == c["torch"] else "DIFFERENT"
        theirs = "-" if c["torch"] is None else f"{c['torch']:,}"
        print(f"{name} parameters: ours {c['ours']:,}, torch {theirs} ({same})")
    print(load_torch_tool().format_table(torch_rows))


def main(argv=None):
    args, status = parse_or_status(_parse, argv)
    if args is None:
        return status
    load = os.getloadavg()
    try:
        from mxnet.base import MXNetError

        errors = (ValueError, RuntimeError, OSError, MXNetError)
    except ImportError as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 1
    if args.torch_python and not args.worker_out:
        reason = check_torch_python(args.torch_python)
        if reason:
            print(f"benchmark: error: {reason}", file=sys.stderr)
            return 1
    if args.worker_out and args.profile_worker:
        try:
            row = _profile_one(args)
        except errors as err:
            return _error(err)
        with atomic_open(args.worker_out) as f:
            json.dump({"profile": row}, f)
        return 0
    if args.worker_out and args.memory_worker:
        try:
            row = _measure_memory(args)
        except (*errors, MemoryError) as err:
            # the whole message: the parent looks in it for a failed allocation
            print(f"benchmark: error: {type(err).__name__}: {str(err).strip()}",
                  file=sys.stderr)
            return 1
        with atomic_open(args.worker_out) as f:
            json.dump({"memory": row}, f)
        return 0
    try:
        if args.worker_out:
            rows, samples, torch_parts = _measure(args)
            with atomic_open(args.worker_out) as f:
                json.dump({"rows": rows, "roof_samples": samples, "torch": torch_parts}, f)
            return 0
        rows, samples, torch_parts = _run_workers(args)
    except errors as err:
        return _error(err)
    roof = max(samples["float32"])
    roof_bf16 = max(samples["bfloat16"]) if samples["bfloat16"] else None
    for row in rows:  # one roof for the whole table
        _set_roofs(row, roof, roof_bf16)
    import mxnet as mx

    print(f"mxnet {mx.__version__}, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at the start "
          f"{load[0]:.1f}; {args.repeats} timed steps per variant after {args.warmup} warm-up; "
          f"one process per network and one for the head; AMX for bf16/int8: "
          f"{'on' if any(r.get('amx') for r in rows) else 'off'}")
    torch_rows = [r for part in torch_parts for r in part["rows"]]
    for row in torch_rows:
        _set_roofs(row, roof, roof_bf16)
    if args.torch_python:
        add_torch_ratios(rows, torch_rows)
    print(format_table(rows, roof, torch=bool(args.torch_python), roof_bf16_gflops=roof_bf16))
    bounds = describe_head_bounds(rows, roof)
    if bounds:
        print(bounds)
    torch_info = torch_parts[0]["info"] if torch_parts else None
    if args.torch_python:
        _print_torch(args, torch_info, torch_rows)
    sys.stdout.flush()  # the memory workers take a while: the speed tables first
    try:
        memory_rows = _run_memory(args)
        if memory_rows:
            _print_section(f"memory: one process per row, {MEMORY_WARMUP} warm-up + "
                           f"{MEMORY_STEPS} steps; peak RSS = the process's VmHWM, added = "
                           f"peak - its RSS before the model; workers stopped past "
                           f"MemAvailable - {MACHINE_MARGIN_GIB:g} GiB",
                           format_memory_table(memory_rows))
        capacity = []
        if args.max_batch_gib is not None and args.networks:
            capacity = _run_capacity(args, memory_rows)
            _print_section(f"largest training batch (to {CAPACITY_STEP} images) whose worker "
                           f"({MEMORY_WARMUP} warm-up + {MEMORY_STEPS} steps) peaks at or "
                           f"under {args.max_batch_gib:g} GiB; line fitted to every batch "
                           f"that ran", format_capacity_table(capacity, args.max_batch_gib))
        profile = _run_profiles(args)
        if profile:
            _print_section(f"profile: one process per row, bulk execution off, "
                           f"{args.repeats} steps after {max(args.warmup, 1)} warm-up; "
                           f"operator times summed per step (mx.profiler); convolutions = "
                           f"forward, backward, fused and int8 kinds",
                           format_profile_table(profile))
    except errors as err:
        return _error(err)
    _merge_memory(rows, memory_rows)
    if args.json:
        result = {"args": {k: v for k, v in vars(args).items()
                           if k not in ("worker_out", "memory_worker", "profile_worker")},
                  "gemm_roof_gflops": roof, "gemm_roof_samples": samples["float32"],
                  "gemm_roof_bf16_gflops": roof_bf16,
                  "gemm_roof_bf16_samples": samples["bfloat16"],
                  "load_average": load[0], "rows": rows, "memory": memory_rows,
                  "capacity": capacity, "profile": profile}
        if args.torch_python:
            result["torch"] = {"info": torch_info, "rows": torch_rows,
                               "params": _param_counts(args, torch_rows)}
        try:
            with atomic_open(args.json) as f:
                json.dump(result, f, indent=2)
        except OSError as err:
            print(f"benchmark: error: --json {args.json}: {err.strerror}", file=sys.stderr)
            return 1
    failed = [r for r in memory_rows if r["status"] != "ok" and not r.get("out_of_memory")]
    if failed:
        r = failed[0]
        print(f"benchmark: error: memory of {r['network']} {r['task']}/{r['mode']} "
              f"B={r['batch_size']}: {r['status']}", file=sys.stderr)
        return 1
    return 0


def _print_section(caption, table):
    """A table after a blank line and its one-line caption, flushed (workers follow)."""
    print(f"\n{caption}")
    print(table, flush=True)


def _error(err):
    text = str(err).strip().splitlines()
    print(f"benchmark: error: {text[0] if text else type(err).__name__}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # workers run as python -m gluon_face.commands.benchmark
    sys.exit(main())

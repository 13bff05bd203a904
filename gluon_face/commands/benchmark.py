"""Images/s of FaceResNet training and embedding, and the margin head's step time, in one table.

    python tools/benchmark.py                                   # faceresnet18,50; head 10k,100k
    python tools/benchmark.py --networks faceresnet50 --repeats 5 --json bench.json
    python tools/benchmark.py --quick --json quick.json         # smoke test
    python tools/benchmark.py --networks faceresnet50 --torch-python ~/torchvenv/bin/python

Variants: ``block`` (imperative Gluon), ``hybrid`` (static graph),
``fused`` (embedding: MKLDNN fusion, BatchNorm folded into convolutions, PReLU
split into oneDNN operators; training: the split-PReLU graph train.py trains
through by default), ``bf16`` (bfloat16 graph from
mxnet.contrib.amp: the embedder, and for training the mixed-precision graph
of ``train.py --amp``), ``int8`` (MKLDNN quantisation; embedding only).  With
``--amx auto`` (default) each process first lets oneDNN use the AMX tiles
where the CPU has them (bf16 and int8 gain; float32 does not use them).
All variants of a network run interleaved in one process (one timed step
each per repeat), so the ``x`` column (speed-up over ``block`` / over the
plain head) compares like with like; medians with the min-max over repeats.
``roof`` is the achieved GFLOP/s over the best float32 GEMM rate measured in
the same run.  Each network, and the head, runs in its own process.
``+RSS`` is the growth of the process's peak resident set
over a variant's set-up and warm-up (its own memory); ``peak`` the process's
peak so far (cumulative).

``--torch-python PATH`` adds the PyTorch peer (tools/benchmark_torch.py, run
by that interpreter; see its docstring for the install): in each network's
and the head's process, a torch process sets up and warms up its variants
first, then the two alternate repeat by repeat (ours, then torch), so both
see the same machine load.  ``vs torch`` is ours / torch fp32 eager and
``vs best`` ours / the fastest torch variant of the same task (for the head:
torch's step time / ours, cross-entropy variants); above 1, ours is faster.
The torch variants get a table of their own, and the parameter counts of
both are printed side by side.
"""
import argparse
import json
import os
import sys
import time

from gluon_face._io import atomic_open
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
from gluon_face.benchmarks.workers import run_worker

QUICK = dict(networks=["faceresnet18"], batch_size=2, image_size=32, repeats=2, warmup=1,
             head_classes=[2000], head_batch=32)


def _parse(argv):
    from gluon_face.benchmarks.backbones import BACKBONE_MODES

    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
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
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (faceresnet18 at 32x32, batch 2, head 2k classes)")
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
    return args


def format_table(rows, roof_gflops, torch=False):
    """The rows as an aligned text table (with ``torch``: the ratio columns too)."""
    head = ["workload", "task", "variant", "median (min-max)", "x", "GFLOP/s", "roof",
            "+RSS MiB", "peak MiB"] + (["vs torch", "vs best"] if torch else [])
    lines = []
    for r in rows:
        lines.append(describe_row(r) + [f"{r['speedup']:.2f}", f"{r['gflops']:.1f}",
                                        f"{100 * r['roof_fraction']:.0f}%",
                                        f"{r['rss_added_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"])
        if torch:
            lines[-1] += [_ratio(r.get("vs_torch")), _ratio(r.get("vs_torch_best"),
                                                           r.get("torch_best_mode"))]
    return text_table(head, lines) + (f"\nGEMM roof (float32 2048^2, best of np.dot / "
                                      f"fully_connected over the run): {roof_gflops:.1f} GFLOP/s")


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


def _measure(args):
    """Run the workloads of ``args`` in this process: ``(rows, roof samples, torch parts)``."""
    from gluon_face.training.amp import enable_amx

    # before any oneDNN primitive of this process runs (enable_amx's docstring)
    amx = args.amx == "auto" and enable_amx()
    import mxnet as mx

    from gluon_face.benchmarks.backbones import measure_backbone
    from gluon_face.benchmarks.heads import measure_fused_head
    from gluon_face.benchmarks.roof import GemmRoof

    roof = GemmRoof()
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
        row["amx"] = bool(amx)
    return rows, roof.samples, torch_parts


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
    rows, samples, torch_parts = [], [], []
    for networks, classes in jobs:
        run = run_worker(__spec__.name, _worker_argv(args, networks, classes))
        if run["result"] is None:
            what = networks[0] if networks else "head"
            raise RuntimeError(f"the {what} measurement failed (exit {run['returncode']})")
        rows += run["result"]["rows"]
        samples += run["result"]["roof_samples"]
        torch_parts += run["result"].get("torch", [])
    return rows, samples, torch_parts


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
    try:
        if args.worker_out:
            rows, samples, torch_parts = _measure(args)
            with atomic_open(args.worker_out) as f:
                json.dump({"rows": rows, "roof_samples": samples, "torch": torch_parts}, f)
            return 0
        rows, samples, torch_parts = _run_workers(args)
    except errors as err:
        text = str(err).strip().splitlines()
        print(f"benchmark: error: {text[0] if text else type(err).__name__}", file=sys.stderr)
        return 1
    roof = max(samples)
    for row in rows:  # one roof for the whole table
        row["roof_fraction"] = row["gflops"] / roof
    import mxnet as mx

    print(f"mxnet {mx.__version__}, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at the start "
          f"{load[0]:.1f}; {args.repeats} timed steps per variant after {args.warmup} warm-up; "
          f"one process per network and one for the head; AMX for bf16/int8: "
          f"{'on' if any(r.get('amx') for r in rows) else 'off'}")
    torch_rows = [r for part in torch_parts for r in part["rows"]]
    for row in torch_rows:
        row["roof_fraction"] = row["gflops"] / roof
    if args.torch_python:
        add_torch_ratios(rows, torch_rows)
    print(format_table(rows, roof, torch=bool(args.torch_python)))
    torch_info = torch_parts[0]["info"] if torch_parts else None
    if args.torch_python:
        _print_torch(args, torch_info, torch_rows)
    if args.json:
        result = {"args": {k: v for k, v in vars(args).items() if k != "worker_out"},
                  "gemm_roof_gflops": roof, "gemm_roof_samples": samples,
                  "load_average": load[0], "rows": rows}
        if args.torch_python:
            result["torch"] = {"info": torch_info, "rows": torch_rows,
                               "params": _param_counts(args, torch_rows)}
        try:
            with atomic_open(args.json) as f:
                json.dump(result, f, indent=2)
        except OSError as err:
            print(f"benchmark: error: --json {args.json}: {err.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # workers run as python -m gluon_face.commands.benchmark
    sys.exit(main())

"""Images/s of FaceResNet training and embedding, and the margin head's step time, in one table.

    python tools/benchmark.py                                   # faceresnet18,50; head 10k,100k
    python tools/benchmark.py --networks faceresnet50 --repeats 5 --json bench.json
    python tools/benchmark.py --quick --json quick.json         # smoke test, < 1 min

Variants: ``block`` (imperative Gluon), ``hybrid`` (static graph),
``fused`` (hybrid + MKLDNN fusion, BatchNorm folded into convolutions;
embedding only), ``bf16`` (bfloat16 graph from mxnet.contrib.amp; embedding
only).  All variants of a network run interleaved in one process (one timed
step each per repeat), so the ``x`` column (speed-up over ``block`` / over the
plain head) compares like with like; medians with the min-max over repeats.
``roof`` is the achieved GFLOP/s over the best float32 GEMM rate measured in
the same run.  Each network, and the head, runs in its own process.
``+RSS`` is the growth of the process's peak resident set
over a variant's set-up and warm-up (its own memory); ``peak`` the process's
peak so far (cumulative).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from gluon_face._io import atomic_open

QUICK = dict(networks=["faceresnet18"], batch_size=2, image_size=32, repeats=2, warmup=1,
             head_classes=[2000], head_batch=32)


def _list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def _int_list(text):
    try:
        values = [int(float(v)) for v in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values


def _parse(argv):
    from gluon_face.benchmark import BACKBONE_MODES

    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=_list, default=["faceresnet18", "faceresnet50"],
                        help="comma-separated model names; 'none' for the head only "
                        "(default faceresnet18,faceresnet50)")
    parser.add_argument("--modes", type=_list, default=list(BACKBONE_MODES),
                        help=f"comma-separated among {','.join(BACKBONE_MODES)} (default all)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (16)")
    parser.add_argument("--image-size", type=int, default=112, help="image side (112)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    parser.add_argument("--no-train", action="store_true", help="embedding only")
    parser.add_argument("--head-classes", type=_int_list, default=[10000, 100000],
                        help="class counts for the head, '' for none "
                        "(default 10000,100000)")
    parser.add_argument("--head-batch", type=int, default=128, help="head batch (128)")
    parser.add_argument("--emb-size", type=int, default=512, help="head embedding size (512)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (faceresnet18 at 32x32, batch 2, head 2k classes)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
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
    return args


def _fmt(value, low, high, unit, digits=2):
    return f"{value:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f})"


def format_table(rows, roof_gflops):
    """The rows as an aligned text table."""
    head = ["workload", "task", "variant", "median (min-max)", "x", "GFLOP/s", "roof",
            "+RSS MiB", "peak MiB"]
    lines = []
    for r in rows:
        if r.get("workload") == "head":
            name = f"arcface head C={r['num_classes']}"
            value = _fmt(r["step_s"], r["step_s_min"], r["step_s_max"], "s/step", 3)
            task = f"fwd+bwd B={r['batch_size']}"
        else:
            name = f"{r['network']} {r['image_size']}px"
            value = _fmt(r["images_s"], r["images_s_min"], r["images_s_max"], "img/s")
            task = f"{r['task']} B={r['batch_size']}"
        lines.append([name, task, r["mode"], value, f"{r['speedup']:.2f}",
                      f"{r['gflops']:.1f}", f"{100 * r['roof_fraction']:.0f}%",
                      f"{r['rss_added_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines]
    out.append(f"GEMM roof (float32 2048^2, best of np.dot / fully_connected over the "
               f"run): {roof_gflops:.1f} GFLOP/s")
    return "\n".join(out)


def _log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _measure(args):
    """Run the workloads of ``args`` in this process: ``(rows, roof samples)``."""
    import mxnet as mx

    from gluon_face.benchmark import GemmRoof, measure_backbone, measure_head

    roof = GemmRoof()
    rows = []
    for name in args.networks:
        _log(f"{name}: building {', '.join(args.modes)}")
        rows += measure_backbone(name, modes=args.modes, batch_size=args.batch_size,
                                 image_size=args.image_size, repeats=args.repeats,
                                 warmup=args.warmup, train=not args.no_train,
                                 roof=roof, progress=_log)
        mx.nd.waitall()
    if args.head_classes:
        rows += measure_head(args.head_classes, emb_size=args.emb_size,
                             batch_size=args.head_batch, repeats=args.repeats,
                             warmup=args.warmup, roof=roof, progress=_log)
    return rows, roof.samples


def _child_argv(args, networks, head_classes, out):
    argv = [sys.executable, os.path.abspath(__file__), "--worker-out", out,
            "--networks", ",".join(networks) or "none",
            "--head-classes", ",".join(str(c) for c in head_classes),
            "--modes", ",".join(args.modes)]
    for name in ("batch_size", "image_size", "repeats", "warmup", "head_batch", "emb_size"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv + (["--no-train"] if args.no_train else [])


def _run_children(args):
    """Each network, and the head, in its own process: memory figures are its own."""
    import gluon_face

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gluon_face.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    jobs = [([name], []) for name in args.networks]
    if args.head_classes:
        jobs.append(([], args.head_classes))
    rows, samples = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (networks, classes) in enumerate(jobs):
            out = os.path.join(tmp, f"part{i}.json")
            proc = subprocess.run(_child_argv(args, networks, classes, out), env=env,
                                  stdout=subprocess.DEVNULL)
            if proc.returncode != 0 or not os.path.exists(out):
                what = networks[0] if networks else "head"
                raise RuntimeError(f"the {what} measurement failed (exit {proc.returncode})")
            with open(out) as f:
                part = json.load(f)
            rows += part["rows"]
            samples += part["roof_samples"]
    return rows, samples


def main(argv=None):
    try:
        args = _parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    load = os.getloadavg()
    try:
        from mxnet.base import MXNetError

        errors = (ValueError, RuntimeError, OSError, MXNetError)
    except ImportError as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 1
    try:
        if args.worker_out:
            rows, samples = _measure(args)
            with atomic_open(args.worker_out) as f:
                json.dump({"rows": rows, "roof_samples": samples}, f)
            return 0
        rows, samples = _run_children(args)
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
          f"one process per network and one for the head")
    print(format_table(rows, roof))
    if args.json:
        result = {"args": {k: v for k, v in vars(args).items() if k != "worker_out"},
                  "gemm_roof_gflops": roof, "gemm_roof_samples": samples,
                  "load_average": load[0], "rows": rows}
        try:
            with atomic_open(args.json) as f:
                json.dump(result, f, indent=2)
        except OSError as err:
            print(f"benchmark: error: --json {args.json}: {err.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

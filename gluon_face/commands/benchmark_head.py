"""Step time and peak memory of the full margin head, the sharded head and Partial FC.

    python tools/benchmark_head.py                                  # C = 10k, 100k, 1M
    python tools/benchmark_head.py --classes 10000,100000 --json head.json
    python tools/benchmark_head.py --classes 1000000 --kinds partial --sample-rate 0.1

One training step = forward, backward and SGD (momentum, wd) update of the class
centres for a batch of random embeddings (ArcFace margins).  Every configuration
runs in its own process, so its peak resident set size (VmHWM) is its own; the
parent watches each child's RSS and stops it past --max-rss-gib, and past
--timeout seconds.  On CPU, the shards' contexts share one memory and the same
cores: the sharded rows show the cost of the exact cross-shard softmax, not a
speed-up.
"""
import argparse
import json
import os
import sys

from gluon_face._io import atomic_open
from gluon_face.benchmarks.heads import KINDS, measure_head
from gluon_face.benchmarks.text import comma_list, int_list, parse_or_status, text_table
from gluon_face.benchmarks.workers import run_worker


def _kind_list(text):
    kinds = comma_list(text)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown head kind(s) {bad or text!r}; "
                                         f"valid: {', '.join(KINDS)}")
    return kinds


def _parse(argv):
    parser = argparse.ArgumentParser(prog="benchmark_head", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--classes", type=int_list("class counts", allow_empty=False),
                        default=[10000, 100000, 1000000],
                        help="comma-separated class counts (default 10000,100000,1000000)")
    parser.add_argument("--kinds", type=_kind_list, default=list(KINDS),
                        help="comma-separated heads among full,sharded,partial (default all)")
    parser.add_argument("--emb-size", type=int, default=512, help="embedding size (512)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (128)")
    parser.add_argument("--shards", type=int, default=2,
                        help="contexts of the sharded head and of Partial FC (2)")
    parser.add_argument("--sample-rate", type=float, default=0.1, help="Partial FC rate (0.1)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="context type (cpu)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per config (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    parser.add_argument("--max-rss-gib", type=float, default=20.0,
                        help="stop a configuration whose memory passes this (20 GiB)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed per configuration (1800)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("emb_size", "batch_size", "shards", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 < args.sample_rate <= 1.0:
        parser.error("--sample-rate must be in (0, 1]")
    if args.batch_size < args.shards:
        parser.error("--batch-size must be at least --shards")
    return args


def _worker(args):
    """Run one configuration in this process and write its result as JSON."""
    result = measure_head(args.kinds[0], args.classes[0], emb_size=args.emb_size,
                          batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                          num_shards=args.shards, sample_rate=args.sample_rate,
                          device=args.device)
    with atomic_open(args.worker_out) as f:
        json.dump(result, f)
    return 0


def _run_one(args, kind, classes):
    """Measure one configuration in a child process: result dict (with ``status``)."""
    row = {"kind": kind, "num_classes": classes, "emb_size": args.emb_size,
           "batch_size": args.batch_size, "shards": 1 if kind == "full" else args.shards,
           "sample_rate": args.sample_rate if kind == "partial" else 1.0}
    argv = ["--worker", "--kinds", kind, "--classes", str(classes),
            "--emb-size", str(args.emb_size), "--batch-size", str(args.batch_size),
            "--shards", str(args.shards), "--sample-rate", str(args.sample_rate),
            "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    run = run_worker(__spec__.name, argv, max_rss_gib=args.max_rss_gib, timeout=args.timeout,
                     capture_stderr=True)
    row["wall_s"] = run["wall_s"]
    row.update(run["result"] or {})
    row["status"] = run["status"]
    if run["result"] is None:
        row["peak_rss_gib"] = max(run["rss_seen_gib"], row.get("peak_rss_gib", 0.0))
    return row


def _fmt_classes(c):
    if c >= 1000000 and c % 1000000 == 0:
        return f"{c // 1000000}M"
    if c >= 1000 and c % 1000 == 0:
        return f"{c // 1000}k"
    return str(c)


def _table(rows):
    head = ["classes", "head", "ctx", "rate", "step s (min-max)", "peak RSS GiB",
            "head GiB", "W GiB", "status"]
    lines = []
    for r in rows:
        ok = r["status"] == "ok"
        lines.append([
            _fmt_classes(r["num_classes"]), r["kind"], str(r["shards"]), f"{r['sample_rate']:g}",
            f"{r['step_s']:.3f} ({r['step_s_min']:.3f}-{r['step_s_max']:.3f})" if ok else "-",
            f"{r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") else "-",
            f"{r['peak_rss_gib'] - r['base_rss_gib']:.2f}" if ok else "-",
            f"{r['num_classes'] * r['emb_size'] * 4 / float(1 << 30):.2f}",
            r["status"],
        ])
    return text_table(head, lines)


def main(argv=None):
    args, status = parse_or_status(_parse, argv)
    if args is None:
        return status
    if args.worker:
        try:
            return _worker(args)
        except (ValueError, RuntimeError, OSError) as err:
            print(f"benchmark_head: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            return 1
    load = os.getloadavg()
    rows = []
    total = len(args.classes) * len(args.kinds)
    for classes in args.classes:
        for kind in args.kinds:
            row = _run_one(args, kind, classes)
            rows.append(row)
            step = f"{row['step_s']:.3f} s/step" if row["status"] == "ok" else row["status"]
            print(f"[{len(rows)}/{total}] {kind:8s} C={classes}: {step} "
                  f"({row['wall_s']:.0f} s wall)", file=sys.stderr, flush=True)
    print(f"margin head (arcface), emb {args.emb_size}, batch {args.batch_size}, "
          f"{args.device}, {args.steps} timed steps after {args.warmup} warm-up; "
          f"head GiB = peak RSS - RSS before the head; load average at the start "
          f"{load[0]:.1f} on {os.cpu_count()} cores")
    print(_table(rows))
    if args.json:
        try:
            with atomic_open(args.json) as f:
                json.dump({"args": {k: v for k, v in vars(args).items()
                                    if not k.startswith("worker")}, "results": rows},
                          f, indent=2)
        except OSError as err:
            print(f"benchmark_head: error: --json {args.json}: {err.strerror}", file=sys.stderr)
            return 1
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":  # workers run as python -m gluon_face.commands.benchmark_head
    sys.exit(main())

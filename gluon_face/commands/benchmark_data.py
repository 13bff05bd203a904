"""Input pipeline throughput: decode + augment images/s for 1 and N DataLoader workers.

    python tools/benchmark_data.py                      # synthetic 112x112 JPEG file
    python tools/benchmark_data.py data/train.rec --workers 0 2 --num-images 4096
    python tools/benchmark_data.py --train-rate 3.1     # compare with a training step's rate

Times FaceRecordDataset (read + JPEG decode) -> FaceTransform (random flip,
(x - 127.5) / 128, HWC->CHW) -> DataLoader batching.  Without a path it packs a
synthetic file of smooth 112x112 JPEGs into a temporary folder first.  How many
images/s a FaceResNet training step consumes is measured by the training
benchmark; pass it as --train-rate to print the ratio.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

from gluon_face._io import atomic_open
from gluon_face.benchmarks.data import benchmark_loader, default_worker_counts, make_synthetic_rec


def _error(err):
    text = str(err).strip().splitlines()
    print("benchmark_data: error: %s" % (text[0] if text else type(err).__name__),
          file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="benchmark_data",
                                     description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("path", nargs="?", help=".rec file or folder with train.rec "
                        "(default: a synthetic file in a temporary folder)")
    parser.add_argument("--workers", type=int, nargs="+", metavar="N",
                        help="DataLoader worker counts to time; 0 = in-process "
                        "(default: %s)" % " ".join(map(str, default_worker_counts())))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-images", type=int, default=2048,
                        help="images timed per worker count (after one warm-up batch)")
    parser.add_argument("--synthetic-images", type=int, default=1024,
                        help="images in the synthetic file")
    parser.add_argument("--image-size", type=int, default=112, help="synthetic image side")
    parser.add_argument("--train-rate", type=float, metavar="IMG_PER_S",
                        help="images/s one training step consumes, to print the ratio")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.workers is not None and min(args.workers) < 0:
        parser.error("--workers must be >= 0")
    for name in ("batch_size", "num_images", "synthetic_images", "image_size"):
        if getattr(args, name) < 1:
            parser.error("--%s must be positive" % name.replace("_", "-"))
    return args


def main(argv=None):
    args = _parse(argv)
    workers = args.workers or default_worker_counts()
    tmp = None
    try:
        path = args.path
        if path is None:
            tmp = tempfile.mkdtemp(prefix="gluon_face_bench_")
            info = make_synthetic_rec(os.path.join(tmp, "train"), args.synthetic_images,
                                      num_classes=min(64, args.synthetic_images),
                                      image_size=args.image_size)
            path = info["rec"]
            print("synthetic file: %d images %dx%d, %.1f KB/image JPEG"
                  % (info["num_images"], args.image_size, args.image_size,
                     info["mean_bytes"] / 1024.0))
        rows = []
        print("%-8s %10s %10s %12s" % ("workers", "images", "seconds", "images/s"))
        for n in workers:
            r = benchmark_loader(path, num_workers=n, batch_size=args.batch_size,
                                 num_images=args.num_images)
            rows.append(r)
            print("%-8d %10d %10.2f %12.1f" % (n, r["images"], r["seconds"],
                                                r["images_per_s"]))
        best = max(rows, key=lambda r: r["images_per_s"])
        line = "data pipeline: %.1f images/s decode+augment (best: %d workers)" % (
            best["images_per_s"], best["num_workers"])
        if args.train_rate:
            line += "; training consumes %.1f images/s -> %.1fx" % (
                args.train_rate, best["images_per_s"] / args.train_rate)
        else:
            line += "; compare with the images/s of a training step (tools/benchmark.py)"
        print(line)
        if args.json:
            with atomic_open(args.json, "w", encoding="utf-8") as f:
                json.dump({"path": path if tmp is None else None, "results": rows,
                           "train_rate": args.train_rate}, f, indent=1)
    except KeyboardInterrupt:
        print("benchmark_data: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        return _error(err)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

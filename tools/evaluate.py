"""Verification accuracy of a trained backbone on insightface ``.bin`` pair sets.

    python tools/evaluate.py runs/r18 --bin lfw.bin cfp_fp.bin --ctx gpu:0,1
    python tools/evaluate.py runs/r18 --data-dir ~/faces/eval --json results.json

Prints one row per set: pairs, accuracy with the mirrored embedding added (mean
+- std over 10 folds), accuracy without it, VAL at FAR=1e-3 and the mean best
threshold (squared L2 distance of normalised embeddings).
"""
import argparse
import glob
import json
import os
import sys

from mxnet.base import MXNetError
from tqdm import tqdm

from gluon_face._cli import checkpoint_image_size, error_line
from gluon_face._io import atomic_open
from gluon_face.training.embed import evaluate_bin, parse_ctx


def _error(err):
    print(error_line("evaluate", err), file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    sets = parser.add_mutually_exclusive_group(required=True)
    sets.add_argument("--bin", nargs="+", metavar="BIN", help=".bin pair files")
    sets.add_argument("--data-dir", help="use every *.bin in this folder")
    parser.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu or gpu:0,1 (default cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--nfolds", type=int, default=10, help="cross-validation folds")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _bin_files(args):
    if args.data_dir is not None:
        if not os.path.isdir(args.data_dir):
            raise FileNotFoundError(f"--data-dir {args.data_dir}: no such folder")
        files = sorted(glob.glob(os.path.join(args.data_dir, "*.bin")))
        if not files:
            raise FileNotFoundError(f"--data-dir {args.data_dir}: no *.bin files")
        return files
    for path in args.bin:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--bin {path}: no such file")
    return args.bin


def _row(path, result):
    flip, noflip = result["flip"], result["noflip"]
    return {"target": os.path.splitext(os.path.basename(path))[0], "path": path,
            "pairs": result["pairs"], "accuracy": flip.accuracy,
            "accuracy_std": flip.accuracy_std, "accuracy_noflip": noflip.accuracy,
            "accuracy_noflip_std": noflip.accuracy_std, "val": flip.val, "val_std": flip.val_std,
            "far": flip.far, "far_target": flip.far_target, "threshold": flip.threshold,
            "auc": flip.auc}


def format_table(rows):
    """The accuracy table as text, one line per set."""
    far = rows[0]["far_target"] if rows else 1e-3
    head = ("target", "pairs", "acc-flip", "acc-noflip", f"VAL@FAR={far:g}", "threshold")
    lines = [(r["target"], str(r["pairs"]), f"{r['accuracy']:.5f}+-{r['accuracy_std']:.5f}",
              f"{r['accuracy_noflip']:.5f}", f"{r['val']:.5f}+-{r['val_std']:.5f}",
              f"{r['threshold']:.3f}") for r in rows]
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths)))
                      for line in [head] + lines)


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.data import FaceTransform, load_bin
        from gluon_face.training.checkpoint import load_model

        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, not {args.batch_size}")
        ctx_list = parse_ctx(args.ctx)
        files = _bin_files(args)
        net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        transform = FaceTransform(flip=False, image_size=checkpoint_image_size(state))
        rows = []
        for path in files:
            images, issame = load_bin(path)  # bad files: PairsFormatError (a ValueError)
            with tqdm(total=4 * len(issame), desc=os.path.basename(path), unit="img",
                      file=sys.stderr, disable=args.no_progress, leave=False) as bar:
                result = evaluate_bin(net, images, issame, ctx_list=ctx_list,
                                      batch_size=args.batch_size, nfolds=args.nfolds,
                                      transform=transform, progress=bar.update)
            rows.append(_row(path, result))
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return _error(err)
    model = state.get("model", {})
    size = "x".join(map(str, checkpoint_image_size(state)))
    print(f"checkpoint {args.checkpoint}  model {model.get('name', '?')}  image_size {size}  "
          f"emb_size {state.get('emb_size', '?')}")
    print(format_table(rows))
    if args.json:
        report = {"checkpoint": args.checkpoint, "model": model,
                  "image_size": list(checkpoint_image_size(state)), "nfolds": args.nfolds,
                  "results": rows}
        try:
            with atomic_open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        except OSError as err:
            return _error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())

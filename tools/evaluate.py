"""Verification accuracy of a trained backbone on insightface ``.bin`` pair sets.

    python tools/evaluate.py runs/r18 --bin lfw.bin cfp_fp.bin --ctx gpu:0,1
    python tools/evaluate.py runs/r18 --data-dir ~/faces/eval --json results.json
    python tools/evaluate.py runs/r18 --data-dir ~/faces/eval --embed-mode block,fused,bf16,int8

Prints one row per set: pairs, accuracy with the mirrored embedding added (mean
+- std over 10 folds), accuracy without it, VAL at FAR=1e-3 and the mean best
threshold (squared L2 distance of normalised embeddings).

--embed-mode picks how the backbone runs (gluon_face.inference.prepare_embedder):
block (imperative, the default), hybrid, fused (MKLDNN, BatchNorm folded), bf16
or int8; a comma-separated list evaluates each mode on the same checkpoint and
adds a column with the accuracy difference to the first mode, in points.
fused, bf16 and int8 run on one device (the CPU for int8).  int8 is calibrated
on --calib-batches batches of --batch-size images: evenly spaced records of the
checkpoint's training set (config.yaml's data_dir; the built-in demo set when
it is null) when that can be read, else the first images of the first .bin.
"""
import argparse
import glob
import json
import os
import sys

import numpy as onp
from mxnet.base import MXNetError
from tqdm import tqdm

from gluon_face._cli import checkpoint_image_size, error_line
from gluon_face._io import atomic_open
from gluon_face.inference import CALIB_MODES, MODES
from gluon_face.training.embed import evaluate_bin, parse_ctx


def _error(err, code=1):
    print(error_line("evaluate", err), file=sys.stderr)
    return code


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
    parser.add_argument("--embed-mode", default="block",
                        help=f"comma-separated among {','.join(MODES)} (default block)")
    parser.add_argument("--calib-batches", type=int, default=4,
                        help="int8: calibration batches of --batch-size images (4)")
    parser.add_argument("--calib-mode", default="naive",
                        help=f"int8: {' or '.join(CALIB_MODES)} (default naive)")
    return parser.parse_args(argv)


def _check_modes(args):
    """The list of --embed-mode values; ValueError naming the bad argument."""
    modes = [m.strip() for m in args.embed_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--embed-mode: unknown mode {','.join(bad) or repr(args.embed_mode)}; "
                         f"valid: {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"--embed-mode: repeated mode in {args.embed_mode!r}")
    if args.calib_mode not in CALIB_MODES:
        raise ValueError(f"--calib-mode: unknown {args.calib_mode!r}; "
                         f"valid: {', '.join(CALIB_MODES)}")
    if args.calib_batches < 1:
        raise ValueError(f"--calib-batches must be >= 1, not {args.calib_batches}")
    return modes


def _training_images(state, count):
    """Up to ``count`` evenly spaced training images of the checkpoint, with their source.

    ``(images, source)`` or ``(None, reason)`` when the training set cannot be read.
    """
    import yaml

    from gluon_face.data import FaceRecordDataset, demo_data_dir

    path = os.path.join(state["folder"], "config.yaml")
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
        data_dir = config.get("data_dir") if isinstance(config, dict) else None
        data_dir = data_dir or demo_data_dir()
        dataset = FaceRecordDataset(data_dir)
        if len(dataset) == 0:
            return None, f"{data_dir}: no training images"
        picks = onp.unique(onp.linspace(0, len(dataset) - 1, count).round().astype(int))
        return [dataset[int(i)][0] for i in picks], f"{data_dir} ({len(picks)} training images)"
    except (OSError, ValueError, yaml.YAMLError) as err:
        return None, str(err).splitlines()[0] if str(err) else type(err).__name__


def _calibration_data(state, first_bin_images, count, transform):
    """Normalised calibration images (N, 3, H, W) float32 and where they came from."""
    images, source = _training_images(state, count)
    if images is None:
        images = first_bin_images[:count]
        source = f"first .bin ({len(images)} images; training set unreadable: {source})"
    return onp.stack([onp.asarray(transform(im), dtype=onp.float32) for im in images]), source


def _embedder(net, mode, ctx_list, batch_size, image_size, calib, calib_mode):
    from mxnet import np

    from gluon_face.inference import prepare_embedder

    if mode in ("block", "hybrid"):
        return prepare_embedder(net, None, mode=mode)
    if len(ctx_list) != 1:
        raise ValueError(f"--embed-mode {mode} runs on one device, not {len(ctx_list)}")
    example = np.zeros((batch_size, 3) + tuple(image_size), ctx=ctx_list[0])
    return prepare_embedder(net, example, mode=mode, ctx=ctx_list[0], calib_data=calib,
                            calib_mode=calib_mode)


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
    """The JSON/table row of one set (the pair distances are kept aside, see main)."""
    flip, noflip = result["flip"], result["noflip"]
    return {"target": os.path.splitext(os.path.basename(path))[0], "path": path,
            "pairs": result["pairs"], "accuracy": flip.accuracy,
            "accuracy_std": flip.accuracy_std, "accuracy_noflip": noflip.accuracy,
            "accuracy_noflip_std": noflip.accuracy_std, "val": flip.val, "val_std": flip.val_std,
            "far": flip.far, "far_target": flip.far_target, "threshold": flip.threshold,
            "auc": flip.auc}


def format_table(rows):
    """The accuracy table as text, one line per set (and embedding mode, when several)."""
    far = rows[0]["far_target"] if rows else 1e-3
    modes = list(dict.fromkeys(r.get("embed_mode", "block") for r in rows))
    head = ("target", "pairs", "acc-flip", "acc-noflip", f"VAL@FAR={far:g}", "threshold",
            "auc")
    lines = [(r["target"], str(r["pairs"]), f"{r['accuracy']:.5f}+-{r['accuracy_std']:.5f}",
              f"{r['accuracy_noflip']:.5f}", f"{r['val']:.5f}+-{r['val_std']:.5f}",
              f"{r['threshold']:.3f}", f"{r['auc']:.5f}") for r in rows]
    if len(modes) > 1:
        # mode column, and the changes against the first mode: accuracy in points, the
        # threshold-free AUC, and the pairs whose decision at the first mode's threshold
        # changes (the accuracy alone moves with the threshold search: on a flat accuracy
        # curve a tiny change of the distances can move the chosen threshold).
        first = {r["path"]: r for r in rows if r.get("embed_mode") == modes[0]}
        head = head[:1] + ("mode",) + head[1:] + (f"d-acc vs {modes[0]}", "d-auc",
                                                  "changed")
        lines = [line[:1] + (r["embed_mode"],) + line[1:]
                 + (f"{100 * (r['accuracy'] - first[r['path']]['accuracy']):+.2f}",
                    f"{r['auc'] - first[r['path']]['auc']:+.5f}",
                    "-" if r.get("changed") is None else str(r["changed"]))
                 for line, r in zip(lines, rows)]
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths)))
                      for line in [head] + lines)


def main(argv=None):
    args = _parse(argv)
    try:
        modes = _check_modes(args)
    except ValueError as err:
        return _error(err, code=2)  # a usage error, as argparse's
    calibration = None
    try:
        from gluon_face.data import FaceTransform, load_bin
        from gluon_face.training.checkpoint import load_model

        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, not {args.batch_size}")
        ctx_list = parse_ctx(args.ctx)
        files = _bin_files(args)
        _net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        image_size = checkpoint_image_size(state)
        transform = FaceTransform(flip=False, image_size=image_size)
        sets = [(path,) + tuple(load_bin(path)) for path in files]  # bad: PairsFormatError
        calib = None
        if "int8" in modes:
            calib, source = _calibration_data(state, sets[0][1],
                                              args.calib_batches * args.batch_size, transform)
            calibration = {"source": source, "images": len(calib), "mode": args.calib_mode}
            print(f"int8 calibration ({args.calib_mode}): {source}", file=sys.stderr)
        rows, reference = [], {}  # path -> (first mode's distances, its threshold)
        for mode in modes:
            net, _head, state = load_model(args.checkpoint, ctx=ctx_list)  # fresh per mode
            embedder = _embedder(net, mode, ctx_list, args.batch_size, image_size, calib,
                                 args.calib_mode)
            for path, images, issame in sets:
                with tqdm(total=4 * len(issame), desc=f"{os.path.basename(path)} {mode}",
                          unit="img", file=sys.stderr, disable=args.no_progress,
                          leave=False) as bar:
                    result = evaluate_bin(embedder, images, issame, ctx_list=ctx_list,
                                          batch_size=args.batch_size, nfolds=args.nfolds,
                                          transform=transform, progress=bar.update)
                row = dict(_row(path, result), embed_mode=mode)
                ref = reference.setdefault(path, (result["distances"], row["threshold"]))
                row["changed"] = int(((result["distances"] < ref[1])
                                      != (ref[0] < ref[1])).sum())
                rows.append(row)
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return _error(err)
    model = state.get("model", {})
    size = "x".join(map(str, checkpoint_image_size(state)))
    print(f"checkpoint {args.checkpoint}  model {model.get('name', '?')}  image_size {size}  "
          f"emb_size {state.get('emb_size', '?')}  embed-mode {','.join(modes)}")
    print(format_table(rows))
    if args.json:
        report = {"checkpoint": args.checkpoint, "model": model,
                  "image_size": list(checkpoint_image_size(state)), "nfolds": args.nfolds,
                  "embed_modes": modes, "calibration": calibration, "results": rows}
        try:
            with atomic_open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        except OSError as err:
            return _error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())

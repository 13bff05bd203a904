"""Verification accuracy of a trained backbone on insightface ``.bin`` pair sets.

    python tools/evaluate.py runs/r18 --bin lfw.bin cfp_fp.bin --ctx gpu:0,1
    python tools/evaluate.py runs/r18 --data-dir ~/faces/eval --json results.json
    python tools/evaluate.py runs/r18 --data-dir ~/faces/eval --embed-mode block,fused,bf16,int8
    python tools/evaluate.py runs/default --data-dir ~/.cache/gluon_face/glyphs-v1 \
        --embed-mode block,pixels

Prints one row per set: pairs, accuracy with the mirrored embedding added (mean
+- std over 10 folds), accuracy without it, VAL at FAR=1e-3 and the mean best
threshold (squared L2 distance of normalised embeddings).  The reported accuracy
is the flip test's for faces; data that is not mirror-symmetric is scored
without it (--flip-test auto: the data folder's dataset.json, else the
checkpoint's training config, decides).

With --identify REC (a labelled .rec of identities the network never saw, or
its folder; with --data-dir, the one dataset.json names) it also prints the
open-set metrics: TAR at FAR 1e-2/1e-3/1e-4 over all pairs of its images, and
1:N identification (3/4 of the identities enrolled with one image each, every
other image a probe): rank-1, rank-5 and TPIR at FPIR 1e-2.

--embed-mode picks how the backbone runs (gluon_face.inference.prepare_embedder):
block (imperative, the default), hybrid, fused (MKLDNN, BatchNorm folded), bf16
or int8; pixels scores the raw pixels instead (centred, no network: the floor a
model must clear); a comma-separated list evaluates each mode on the same
checkpoint and adds a column with the accuracy difference to the first mode, in
points.  fused, bf16 and int8 run on one device (the CPU for int8).  int8 is
calibrated on --calib-batches batches of --batch-size images: evenly spaced
records of the checkpoint's training set (config.yaml's data_dir; the built-in
glyph identities when it is null) when that can be read, else the first images
of the first .bin.

A set of only same-identity (or only different) pairs is still scored, with a
one-line warning on stderr: its accuracy, VAL and AUC mean nothing (the AUC
comes out 0).  Exit status: 0 done (warnings included), 2 bad input (one line on
stderr): bad arguments, an unreadable checkpoint or set, missing files, or a
--json output that would overwrite an input or lie inside an input folder (the
checkpoint folder, --data-dir, --identify); 130 Ctrl-C, 143 SIGTERM.
"""
import glob
import json
import os
import sys

import numpy as onp
from mxnet.base import MXNetError
from tqdm import tqdm

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    checkpoint_image_size,
    int_between,
    positive_int,
    with_stop_signals,
)
from gluon_face._io import atomic_open
from gluon_face.commands._report import fail, stopped
from gluon_face.devices import parse_ctx
from gluon_face.evaluation.protocols import evaluate_bin, evaluate_identities
from gluon_face.inference import CALIB_MODES, MODES

#: --embed-mode values: the inference modes, and the raw-pixels baseline.
EVAL_MODES = MODES + ("pixels",)



def _parse(argv):
    parser = ToolParser(
        prog="evaluate", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="A set of only same-identity (or only different) pairs is scored with a "
        "warning on stderr: its accuracy, VAL and AUC mean nothing; the exit status stays 0. "
        "Exit status: 0 done, 2 bad input (bad arguments, an unreadable checkpoint or set, "
        "missing files, a --json output inside the checkpoint folder, --data-dir or "
        "--identify, or over a .bin), 130 Ctrl-C, 143 SIGTERM.")
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    sets = parser.add_mutually_exclusive_group(required=True)
    sets.add_argument("--bin", nargs="+", metavar="BIN", help=".bin pair files")
    sets.add_argument("--data-dir", help="use every *.bin in this folder")
    parser.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu or gpu:0,1 (default cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per forward pass")
    parser.add_argument("--nfolds", type=int_between(2), default=10,
                        help="cross-validation folds (>= 2, at most the pairs of a set)")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--embed-mode", default="block",
                        help=f"comma-separated among {','.join(EVAL_MODES)} (default block)")
    parser.add_argument("--flip-test", choices=("auto", "on", "off"), default="auto",
                        help="add the mirrored image's embedding (auto: the data folder's "
                             "dataset.json, else the checkpoint's training config, else on)")
    parser.add_argument("--identify", metavar="REC",
                        help="labelled .rec (or its folder) of unseen identities: all-pairs "
                             "TAR@FAR and 1:N identification (default with --data-dir: the "
                             "one its dataset.json names; 'none' for no identification)")
    parser.add_argument("--calib-batches", type=int, default=4,
                        help="int8: calibration batches of --batch-size images (4)")
    parser.add_argument("--calib-mode", default="naive",
                        help=f"int8: {' or '.join(CALIB_MODES)} (default naive)")
    return parser.parse_args(argv)


def _check_modes(args):
    """The list of --embed-mode values; ValueError naming the bad argument."""
    modes = [m.strip() for m in args.embed_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in EVAL_MODES]
    if bad or not modes:
        raise ValueError(f"--embed-mode: unknown mode {','.join(bad) or repr(args.embed_mode)}; "
                         f"valid: {', '.join(EVAL_MODES)}")
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

    from gluon_face.data import FaceRecordDataset, glyph_data_dir

    try:
        data_dir = _training_config(state).get("data_dir") or glyph_data_dir()
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


def _training_config(state):
    """The checkpoint's resolved training config (``config.yaml``) as a dict; {} if none."""
    import yaml

    path = os.path.join(state["folder"], "config.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    return config if isinstance(config, dict) else {}


def _flip_test(args, state, path):
    """Whether the set at ``path`` is scored with the flip test, and who said so."""
    from gluon_face.data import read_dataset_info

    if args.flip_test != "auto":
        return args.flip_test == "on", "--flip-test"
    folder = os.path.dirname(os.path.abspath(path))
    for where in (folder, os.path.dirname(folder)):
        info = read_dataset_info(where)
        if "flip_test" in info:
            return info["flip_test"], os.path.join(where, "dataset.json")
    try:
        config = _training_config(state)
    except (OSError, ValueError) as err:
        raise ValueError(f"{state['folder']}: unreadable config.yaml ({err})") from None
    if isinstance(config.get("flip_test"), bool):
        return config["flip_test"], "the checkpoint's config.yaml"
    return True, "default"


def _identification_set(args):
    """The ``.rec`` of --identify (or the data folder's dataset.json), or None."""
    from gluon_face.data import read_dataset_info

    rec = args.identify
    if rec is None and args.data_dir is not None:
        entry = read_dataset_info(args.data_dir).get("identification")
        rec = os.path.join(args.data_dir, *str(entry).split("/")) if entry else None
    if rec is None or rec.lower() == "none":
        return None
    if not os.path.exists(rec):
        raise FileNotFoundError(f"--identify {rec}: no such file or folder")
    return rec


def _labelled_images(rec, image_size):
    """Every image of a labelled ``.rec`` (resized to ``image_size``) and its labels."""
    from gluon_face.data import FaceRecordDataset
    from gluon_face.data._image import resize_image

    dataset = FaceRecordDataset(rec)  # a folder: its train.rec or its only .rec
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        images.append(image if image.shape[:2] == tuple(image_size)
                      else resize_image(image, tuple(image_size)))
        labels.append(label)
    if not images:
        raise ValueError(f"{rec}: no images")
    return onp.stack(images), onp.asarray(labels)


def _embedder(net, mode, ctx_list, batch_size, image_size, calib, calib_mode):
    from mxnet import np

    from gluon_face.inference import prepare_embedder
    from gluon_face.model_zoo import RawPixels

    if mode == "pixels":
        return RawPixels()
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
    """The JSON/table row of one set (the pair distances are kept aside, see main).

    ``accuracy`` is the reported one: the flip test's, or without it when the set
    is scored without the mirror (``flip_test`` false, ``accuracy_flip`` None).
    """
    score, noflip, flip = result["score"], result["noflip"], result["flip"]
    return {"target": os.path.splitext(os.path.basename(path))[0], "path": path,
            "pairs": result["pairs"], "flip_test": result["flip_test"],
            "accuracy": score.accuracy, "accuracy_std": score.accuracy_std,
            "accuracy_flip": None if flip is None else flip.accuracy,
            "accuracy_noflip": noflip.accuracy,
            "accuracy_noflip_std": noflip.accuracy_std, "val": score.val,
            "val_std": score.val_std, "far": score.far, "far_target": score.far_target,
            "threshold": score.threshold, "auc": score.auc}


def _identification_row(rec, mode, result, flip_test):
    pairs, ident = result["all_pairs"], result["identification"]
    return {"set": rec, "embed_mode": mode, "flip_test": flip_test,
            "images": result["images"], "identities": result["identities"],
            "pairs": pairs.num_genuine + pairs.num_impostor,
            "tar_at_far": {f"{k:g}": v for k, v in pairs.tar_at_far.items()},
            "tar_reliable": {f"{k:g}": bool(v) for k, v in pairs.reliable.items()},
            "auc": pairs.auc, "rank1": ident.rank[1], "rank5": ident.rank[5],
            "mated_probes": ident.num_mated, "nonmated_probes": ident.num_nonmated,
            "tpir_at_fpir": {f"{k:g}": v for k, v in ident.tpir_at_fpir.items()},
            "roc": {"far": pairs.far.tolist(), "tar": pairs.tar.tolist()},
            "cmc": ident.cmc.tolist()}


def format_identification(rows):
    """The open-set table as text: one line per embedding mode."""
    head = ("mode", "images", "ids", "TAR@FAR=1e-2", "TAR@FAR=1e-3", "TAR@FAR=1e-4",
            "rank-1", "rank-5", "TPIR@FPIR=1e-2")
    lines = []
    for r in rows:
        tar = r["tar_at_far"]
        cells = [r["embed_mode"], str(r["images"]), str(r["identities"])]
        for key in ("0.01", "0.001", "0.0001"):
            mark = "" if r["tar_reliable"].get(key, True) else "*"
            cells.append(f"{tar[key]:.4f}{mark}" if key in tar else "-")
        cells += [f"{r['rank1']:.4f}", f"{r['rank5']:.4f}",
                  f"{r['tpir_at_fpir']['0.01']:.4f}" if "0.01" in r["tpir_at_fpir"] else "-"]
        lines.append(cells)
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths))) for line in [head] + lines]
    if any("*" in c for line in lines for c in line):
        out.append("* fewer than 10 impostor pairs at that FAR: interpolated, not measured")
    return "\n".join(out)


def format_table(rows):
    """The accuracy table as text, one line per set (and embedding mode, when several)."""
    far = rows[0]["far_target"] if rows else 1e-3
    modes = list(dict.fromkeys(r.get("embed_mode", "block") for r in rows))
    head = ("target", "pairs", "acc-flip", "acc-noflip", f"VAL@FAR={far:g}", "threshold",
            "auc")
    lines = [(r["target"], str(r["pairs"]),
              f"{r['accuracy']:.5f}+-{r['accuracy_std']:.5f}" if r["flip_test"] else "-",
              f"{r['accuracy_noflip']:.5f}" + ("" if r["flip_test"]
                                               else f"+-{r['accuracy_noflip_std']:.5f}"),
              f"{r['val']:.5f}+-{r['val_std']:.5f}",
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
        return fail("evaluate", err, code=2)  # a usage error, as argparse's
    calibration = None
    try:
        from gluon_face.data import FaceTransform, load_bin
        from gluon_face.data.recordio import set_files
        from gluon_face.data.verification import degenerate_pairs
        from gluon_face.training.checkpoint import load_model, resolve_checkpoint

        ctx_list = parse_ctx(args.ctx)
        files = _bin_files(args)
        ident_rec = _identification_set(args)
        ident_files = [ident_rec] if ident_rec is None or os.path.isdir(ident_rec) \
            else set_files(ident_rec)  # the .rec and its .idx, property, labels.txt
        check_outputs([args.json], [resolve_checkpoint(args.checkpoint), args.data_dir,
                                    *ident_files, *files])
        _net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        image_size = checkpoint_image_size(state)
        transform = FaceTransform(flip=False, image_size=image_size)
        sets = [(path,) + tuple(load_bin(path)) for path in files]  # bad: PairsFormatError
        for path, _images, issame in sets:
            problem = degenerate_pairs(issame)
            if problem is not None:
                print(f"evaluate: warning: {path}: {problem}", file=sys.stderr)
        flips = {path: _flip_test(args, state, path) for path in files}
        ident = None
        if ident_rec is not None:
            ident = (ident_rec,) + _labelled_images(ident_rec, image_size) \
                + _flip_test(args, state, ident_rec)
        for path, (on, source) in flips.items():
            if not on:
                print(f"{os.path.basename(path)}: no flip test ({source})", file=sys.stderr)
        calib = None
        if "int8" in modes:
            calib, source = _calibration_data(state, sets[0][1],
                                              args.calib_batches * args.batch_size, transform)
            calibration = {"source": source, "images": len(calib), "mode": args.calib_mode}
            print(f"int8 calibration ({args.calib_mode}): {source}", file=sys.stderr)
        rows, reference = [], {}  # path -> (first mode's distances, its threshold)
        ident_rows = []
        for mode in modes:
            net, _head, state = load_model(args.checkpoint, ctx=ctx_list)  # fresh per mode
            embedder = _embedder(net, mode, ctx_list, args.batch_size, image_size, calib,
                                 args.calib_mode)
            for path, images, issame in sets:
                flip_test = flips[path][0]
                with tqdm(total=(4 if flip_test else 2) * len(issame),
                          desc=f"{os.path.basename(path)} {mode}", unit="img",
                          file=sys.stderr, disable=args.no_progress, leave=False) as bar:
                    result = evaluate_bin(embedder, images, issame, ctx_list=ctx_list,
                                          batch_size=args.batch_size, nfolds=args.nfolds,
                                          transform=transform, progress=bar.update,
                                          flip_test=flip_test)
                row = dict(_row(path, result), embed_mode=mode)
                ref = reference.setdefault(path, (result["distances"], row["threshold"]))
                row["changed"] = int(((result["distances"] < ref[1])
                                      != (ref[0] < ref[1])).sum())
                rows.append(row)
            if ident is not None:
                rec, images, labels, flip_test, _ = ident
                with tqdm(total=(2 if flip_test else 1) * len(images),
                          desc=f"{os.path.basename(rec)} {mode}", unit="img",
                          file=sys.stderr, disable=args.no_progress, leave=False) as bar:
                    result = evaluate_identities(embedder, images, labels, ctx_list=ctx_list,
                                                 batch_size=args.batch_size,
                                                 flip_test=flip_test, transform=transform,
                                                 progress=bar.update)
                ident_rows.append(_identification_row(rec, mode, result, flip_test))
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("evaluate", err)
    except UsageError as err:
        return fail("evaluate", err, code=2)
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return fail("evaluate", err)
    model = state.get("model", {})
    size = "x".join(map(str, checkpoint_image_size(state)))
    print(f"checkpoint {args.checkpoint}  model {model.get('name', '?')}  image_size {size}  "
          f"emb_size {state.get('emb_size', '?')}  embed-mode {','.join(modes)}")
    print(format_table(rows))
    if ident_rows:
        print(f"\nopen-set identities {ident_rows[0]['set']}: all pairs, and 1:N "
              f"({ident_rows[0]['mated_probes']} mated and {ident_rows[0]['nonmated_probes']} "
              "non-mated probes)")
        print(format_identification(ident_rows))
    if args.json:
        report = {"checkpoint": args.checkpoint, "model": model,
                  "image_size": list(checkpoint_image_size(state)), "nfolds": args.nfolds,
                  "embed_modes": modes, "calibration": calibration, "results": rows,
                  "identification": ident_rows}
        try:
            with atomic_open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        except OSError as err:
            return fail("evaluate", err)
    return 0


#: What ``tools/evaluate.py`` and ``gluon-face-evaluate`` run: :func:`main`, which SIGTERM
#: and Ctrl-C stop with a message.
run = with_stop_signals(main)

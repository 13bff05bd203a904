"""Embed a folder of face images or a .rec file with a trained backbone.

    python tools/extract.py runs/r18 faces/ gallery.npy --flip
    python tools/extract.py runs/r18 data/train.rec train_emb.npy --ctx gpu:0,1

SRC may also be an insightface data folder (holding train.rec).  Writes
OUT.npy, an (N, D) float32 array (L2-normalised rows unless --no-normalize),
and beside it OUT.paths.txt (image folder: one path per line,
relative to SRC, same order) or OUT.labels.npy (.rec: the (N,) int64 identity
labels).  Folders are searched recursively and sorted by path.
"""
import argparse
import os
import sys

import numpy as onp
from mxnet.base import MXNetError
from tqdm import tqdm

from gluon_face._cli import checkpoint_image_size, error_line
from gluon_face._io import atomic_open
from gluon_face.training.embed import ImageFiles, extract_embeddings, find_images, parse_ctx


def _error(err):
    print(error_line("extract", err), file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    parser.add_argument("src", help="image folder (recursive), .rec file, or a data folder "
                                    "holding train.rec")
    parser.add_argument("out", help="output .npy of embeddings")
    parser.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu or gpu:0,1 (default cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--flip", action="store_true",
                        help="add the embedding of the left-right mirrored image")
    parser.add_argument("--no-normalize", action="store_true",
                        help="keep the raw embeddings (default: L2-normalised rows)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


class _RecordImages:
    """``FaceRecordDataset`` seen as a list of images; labels are kept as they are read."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.labels = onp.full(len(dataset), -1, dtype=onp.int64)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        self.labels[i] = int(label)
        return image


def _side_file(out, ending):
    base = out[:-4] if out.lower().endswith(".npy") else out
    return base + ending


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.data import FaceTransform
        from gluon_face.training.checkpoint import load_model

        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, not {args.batch_size}")
        ctx_list = parse_ctx(args.ctx)
        net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        records = None
        rec_file = args.src
        if os.path.isdir(args.src) and os.path.isfile(os.path.join(args.src, "train.rec")):
            rec_file = os.path.join(args.src, "train.rec")  # an insightface data folder
        if rec_file.lower().endswith(".rec"):
            if not os.path.isfile(rec_file):
                raise FileNotFoundError(f"{rec_file}: no such file")
            from gluon_face.data import FaceRecordDataset

            records = _RecordImages(FaceRecordDataset(rec_file))
            if len(records) == 0:
                raise ValueError(f"{rec_file}: no images in the record file")
            images = records
        elif os.path.isdir(args.src):
            paths = find_images(args.src)
            if not paths:
                raise ValueError(f"{args.src}: no image files found (recursive search)")
            images = ImageFiles(paths, root=args.src)
        else:
            raise FileNotFoundError(f"{args.src}: neither an image folder nor a .rec file")
        transform = FaceTransform(flip=False, image_size=checkpoint_image_size(state))
        total = len(images) * (2 if args.flip else 1)
        with tqdm(total=total, desc="extract", unit="img", file=sys.stderr,
                  disable=args.no_progress) as bar:
            emb = extract_embeddings(net, images, ctx_list=ctx_list, batch_size=args.batch_size,
                                     flip=args.flip, normalize=not args.no_normalize,
                                     transform=transform, progress=bar.update)
        with atomic_open(args.out, "wb") as f:
            onp.save(f, emb)
        if records is not None:
            side = _side_file(args.out, ".labels.npy")
            with atomic_open(side, "wb") as f:
                onp.save(f, records.labels)
        else:
            side = _side_file(args.out, ".paths.txt")
            with atomic_open(side, "w", encoding="utf-8") as f:
                f.writelines(p + "\n" for p in paths)
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return _error(err)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32"
          f"{' (flip added)' if args.flip else ''}"
          f"{'' if args.no_normalize else ', L2-normalised'}; {side}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Embed a folder of face images or a .rec file with a trained backbone.

    python tools/extract.py runs/r18 faces/ gallery.npy --flip
    python tools/extract.py runs/r18 data/train.rec train_emb.npy --ctx gpu:0,1

SRC may also be an insightface data folder (holding train.rec).  Writes
OUT.npy, an (N, D) float32 array (L2-normalised rows unless --no-normalize),
and beside it OUT.paths.txt (image folder: one path per line,
relative to SRC, same order) or OUT.labels.npy (.rec: the (N,) int64 identity
labels).  Folders are searched recursively and sorted by path.

Images must have the model's input size (the checkpoint's image_size) unless
--resize is given.  A file name holding a line break cannot be a line of
OUT.paths.txt, so such a name is refused (rename the file).  The outputs may
not overwrite the checkpoint or the record files, nor lie inside the image
folder or the checkpoint folder.  Exit status: 0 written, 2 bad input (one line on
stderr, nothing written): bad arguments, images of another size or name, an
unreadable checkpoint or image, missing files; 130 Ctrl-C, 143 SIGTERM.
"""
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
    positive_int,
    with_stop_signals,
)
from gluon_face._io import atomic_open
from gluon_face.commands._report import fail, stopped
from gluon_face.data.images import ImageFiles, find_images
from gluon_face.devices import parse_ctx
from gluon_face.embedding import extract_embeddings


def _parse(argv):
    parser = ToolParser(
        prog="extract", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Writes OUT (.npy) and OUT.paths.txt (one path per line) or OUT.labels.npy. A "
        "file name holding a line break cannot be a line of OUT.paths.txt: such a name is "
        "refused (rename the file). Exit status: 0 written, 2 bad arguments, images of "
        "another size than the model's without --resize, such a file name, or an output "
        "inside an input folder or over an input, an unreadable checkpoint or image "
        "(nothing written), 130 Ctrl-C, 143 SIGTERM.")
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    parser.add_argument("src", help="image folder (recursive), .rec file, or a data folder "
                                    "holding train.rec")
    parser.add_argument("out", help="output .npy of embeddings")
    parser.add_argument("--ctx", default="cpu", help="cpu, cpu:0,1, gpu or gpu:0,1 (default cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per forward pass")
    parser.add_argument("--resize", action="store_true",
                        help="resize images to the model's input size (default: refuse images "
                             "of another size)")
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


class _SizeChecked:
    """``images`` as a list whose every image must be ``size`` (H, W)."""

    def __init__(self, images, size, name):
        self.images, self.size, self.name = images, tuple(size), name

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        if tuple(image.shape[:2]) != self.size:
            raise UsageError("%s: image is %dx%d (HxW), but the model takes %dx%d; --resize "
                             "resizes" % (self.name(i), *image.shape[:2], *self.size))
        return image


def _side_file(out, ending):
    base = out[:-4] if out.lower().endswith(".npy") else out
    return base + ending


def _holds_line_break(name):
    return "".join(name.splitlines()) != name


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.data import FaceTransform
        from gluon_face.training.checkpoint import load_model, resolve_checkpoint

        records = None
        rec_file = args.src
        if os.path.isdir(args.src) and os.path.isfile(os.path.join(args.src, "train.rec")):
            rec_file = os.path.join(args.src, "train.rec")  # an insightface data folder
        if rec_file.lower().endswith(".rec"):
            if not os.path.isfile(rec_file):
                raise FileNotFoundError(f"{rec_file}: no such file")
            from gluon_face.data import FaceRecordDataset

            dataset = FaceRecordDataset(rec_file)
            sources = [dataset.rec_path, dataset.idx_path, dataset.property_path,
                       dataset.labels_path]
            side = _side_file(args.out, ".labels.npy")
            records = _RecordImages(dataset)
            if len(records) == 0:
                raise ValueError(f"{rec_file}: no images in the record file")
            images = records

            def name(i):
                return f"{dataset.rec_path}: record {int(dataset.image_keys[i])}"
        elif os.path.isdir(args.src):
            paths = find_images(args.src)
            if not paths:
                raise ValueError(f"{args.src}: no image files found (recursive search)")
            sources = [args.src]
            side = _side_file(args.out, ".paths.txt")
            broken = next((p for p in paths if _holds_line_break(p)), None)
            if broken is not None:
                raise UsageError(f"{os.path.join(args.src, broken)!r}: file name holds a line "
                                 f"break, which cannot be one line of {side}; rename the file")
            images = ImageFiles(paths, root=args.src)

            def name(i):
                return os.path.join(args.src, paths[i])
        else:
            raise FileNotFoundError(f"{args.src}: neither an image folder nor a .rec file")
        check_outputs([args.out, side], sources + [resolve_checkpoint(args.checkpoint)])
        ctx_list = parse_ctx(args.ctx)
        net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        image_size = checkpoint_image_size(state)
        if not args.resize:
            images = _SizeChecked(images, image_size, name)
        transform = FaceTransform(flip=False, image_size=image_size)
        total = len(images) * (2 if args.flip else 1)
        with tqdm(total=total, desc="extract", unit="img", file=sys.stderr,
                  disable=args.no_progress) as bar:
            emb = extract_embeddings(net, images, ctx_list=ctx_list, batch_size=args.batch_size,
                                     flip=args.flip, normalize=not args.no_normalize,
                                     transform=transform, progress=bar.update)
        with atomic_open(args.out, "wb") as f:
            onp.save(f, emb)
        if records is not None:
            with atomic_open(side, "wb") as f:
                onp.save(f, records.labels)
        else:
            with atomic_open(side, "w", encoding="utf-8") as f:
                f.writelines(p + "\n" for p in paths)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("extract", err)
    except UsageError as err:
        return fail("extract", err, code=2)
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return fail("extract", err)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32"
          f"{' (flip added)' if args.flip else ''}"
          f"{'' if args.no_normalize else ', L2-normalised'}; {side}")
    return 0


#: What ``tools/extract.py`` and ``gluon-face-extract`` run: :func:`main`, which SIGTERM
#: and Ctrl-C stop with a message.
run = with_stop_signals(main)

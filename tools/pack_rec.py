"""Pack an image folder (one sub-folder per identity) into insightface's record layout.

    python tools/pack_rec.py faces/ data/train --image-size 112
    python tools/pack_rec.py faces/ data/train --image-size 112 --resize

Writes OUT_PREFIX.rec, OUT_PREFIX.idx and, in the same folder, `property`
(num_classes,height,width) and `labels.txt` (one `label<TAB>folder name` line per
identity, UTF-8).  Identities are the sub-folders sorted by name (label = rank),
images sorted by file name, so the output is deterministic.  A folder name may
not hold a tab or line break.  Every image is decoded and its size checked; all
files appear only when packing succeeded.
"""
import argparse
import os
import sys

from tqdm import tqdm

from gluon_face.data import pack_folder


def _error(err):
    text = str(err).strip().splitlines()
    print("pack_rec: error: %s" % (text[0] if text else type(err).__name__), file=sys.stderr)
    return 1


def parse_size(text):
    """'112' -> (112, 112); '112x96' -> (112, 96) (height x width)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or min(parts) <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("expected N or HxW (positive integers), got %r"
                                         % text) from None
    return tuple(parts)


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="pack_rec", description=__doc__.split("\n\n")[0],
        epilog="Writes OUT.rec, OUT.idx, and property + labels.txt (label<TAB>identity folder "
        "name) in the folder of OUT.")
    parser.add_argument("src_dir", help="folder with one sub-folder of images per identity")
    parser.add_argument("out_prefix", help="output prefix (OUT.rec, OUT.idx); a folder means "
                        "FOLDER/train")
    parser.add_argument("--image-size", type=parse_size, metavar="N|HxW",
                        help="expected image size (default: that of the first image)")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size instead of failing")
    parser.add_argument("--encoding", choices=("jpg", "png"),
                        help="re-encode every image (default: keep JPEG/PNG bytes)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality when encoding")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    prefix = args.out_prefix
    if os.path.isdir(prefix) or prefix.endswith(os.sep):
        prefix = os.path.join(prefix, "train")

    def progress(iterable, total):
        return tqdm(iterable, total=total, unit="img", desc="pack", disable=args.no_progress,
                    file=sys.stderr)

    try:
        info = pack_folder(args.src_dir, prefix, image_size=args.image_size, resize=args.resize,
                           encoding=args.encoding, quality=args.quality, progress=progress)
    except KeyboardInterrupt:
        print("pack_rec: interrupted; nothing written", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        return _error(err)
    print("wrote %s (%d images, %d identities, %dx%d) + %s + %s + %s"
          % (info["rec"], info["num_images"], info["num_classes"], *info["image_size"],
             os.path.basename(info["idx"]), os.path.basename(info["property"]),
             os.path.basename(info["labels"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

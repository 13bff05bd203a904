"""Pack an image folder (one sub-folder per identity) into insightface's record layout.

    python tools/pack_rec.py faces/ data/train --image-size 112
    python tools/pack_rec.py faces/ data/train --image-size 112 --resize

Writes OUT_PREFIX.rec, OUT_PREFIX.idx and, in the same folder, `property`
(num_classes,height,width) and `labels.txt` (one `label<TAB>folder name` line per
identity, UTF-8).  Identities are the sub-folders sorted by name (label = rank),
images sorted by file name, so the output is deterministic.  A folder name may
not hold a tab or line break.  Every image is decoded and its size checked; all
files appear only when packing succeeded.

A folder holds one set's `property` and `labels.txt` (insightface reads one per
folder), so pack train and val into folders of their own: without --overwrite
the tool refuses a destination whose OUT.rec/OUT.idx exists (the same set packed
again) or whose folder holds the property, labels.txt or .rec of another set.
It also refuses outputs inside SRC_DIR, and images of more than --max-pixels
pixels (read from the file header, before decoding).  Temporary files that a
killed earlier run left for the same destination (.NAME.XXXXXXXX.tmp) are
removed first, and named.  Exit status: 0 done, 2 bad input (one line on
stderr, nothing written), 130 Ctrl-C, 143 SIGTERM (temporary files removed,
nothing written).
"""
import argparse
import os
import signal
import sys
import threading

from tqdm import tqdm

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    install_stop_signals,
    int_between,
    positive_int,
)
from gluon_face._io import remove_stale_temps
from gluon_face.commands._report import fail, stopped
from gluon_face.data import pack_folder
from gluon_face.data.recordio import MAX_PIXELS, existing_set, set_files


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
    parser = ToolParser(
        prog="pack_rec", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Writes OUT.rec, OUT.idx, and property + labels.txt (label<TAB>identity folder "
        "name) in the folder of OUT; one set per folder (see --overwrite).  Exit status: 0 "
        "done, 2 bad input (nothing written), 130 Ctrl-C, 143 SIGTERM.")
    parser.add_argument("src_dir", help="folder with one sub-folder of images per identity")
    parser.add_argument("out_prefix", help="output prefix (OUT.rec, OUT.idx); a folder means "
                        "FOLDER/train")
    parser.add_argument("--image-size", type=parse_size, metavar="N|HxW",
                        help="expected image size (default: that of the first image)")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size instead of failing")
    parser.add_argument("--encoding", choices=("jpg", "png"),
                        help="re-encode every image (default: keep JPEG/PNG bytes)")
    parser.add_argument("--quality", type=int_between(1, 100), default=95,
                        help="JPEG quality when encoding, 1..100 (default 95)")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                        help="refuse an image of more than N pixels (height x width, read from "
                        "its header before decoding; default %d)" % MAX_PIXELS)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the set already at OUT_PREFIX, or the property and "
                        "labels.txt of another set in its folder")
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
        check_outputs(set_files(prefix), [args.src_dir])
        conflict = None if args.overwrite else existing_set(prefix)
        if conflict is not None:
            raise UsageError(conflict + " (--overwrite replaces it)")
    except (UsageError, OSError) as err:
        return fail("pack_rec", err)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    install_stop_signals()  # the writer's cleanup runs on SIGTERM and Ctrl-C
    try:
        removed = remove_stale_temps(set_files(prefix))
        if removed:
            print("removed %d temporary file(s) left by an interrupted run: %s"
                  % (len(removed), ", ".join(removed)))
        info = pack_folder(args.src_dir, prefix, image_size=args.image_size, resize=args.resize,
                           encoding=args.encoding, quality=args.quality, progress=progress,
                           max_pixels=args.max_pixels)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("pack_rec", err, "nothing written")
    except (OSError, ValueError) as err:
        return fail("pack_rec", err)
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    print("wrote %s (%d images, %d identities, %dx%d) + %s + %s + %s"
          % (info["rec"], info["num_images"], info["num_classes"], *info["image_size"],
             os.path.basename(info["idx"]), os.path.basename(info["property"]),
             os.path.basename(info["labels"])))
    return 0

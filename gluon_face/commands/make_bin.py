"""Build an insightface verification `.bin` from an image folder and a pairs list.

    python tools/make_bin.py lfw_aligned/ pairs.txt lfw.bin            # LFW pairs.txt
    python tools/make_bin.py faces/ my_pairs.txt my.bin --format plain  # "a.jpg b.jpg 1"

The LFW format names images as NAME/NAME_000N.jpg ("name n m" for the same
person, "name1 n name2 m" for different people, an optional header line); the
plain format is one "path_a path_b label" line per pair, paths relative to the
image folder, label 1/0, true/false or same/diff.

The output may not be the pairs list or lie inside the image folder.  A list of
only same-identity (or only different) pairs is written with a warning on
stderr: accuracy and AUC on such a set mean nothing.  Exit status: 0 written,
2 bad input (one line on stderr, nothing written), 130 Ctrl-C.
"""
import sys

from tqdm import tqdm

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    positive_int,
    with_stop_signals,
)
from gluon_face.commands._report import fail, stopped
from gluon_face.data import make_bin
from gluon_face.data.verification import degenerate_pairs


def _parse(argv):
    parser = ToolParser(
        prog="make_bin", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="OUT may not be the pairs list nor lie inside IMAGE_DIR. A list of only "
        "same-identity (or only different) pairs is written with a warning on stderr. Exit "
        "status: 0 written, 2 bad input (nothing written), 130 Ctrl-C.")
    parser.add_argument("image_dir", help="folder the pairs list refers to")
    parser.add_argument("pairs", help="pairs list (LFW pairs.txt or 'a b label' lines)")
    parser.add_argument("out", help="output .bin")
    parser.add_argument("--format", choices=("auto", "lfw", "plain"), default="auto",
                        help="pairs list format (default: decided per line)")
    parser.add_argument("--ext", default=".jpg", help="image extension of LFW-style names")
    parser.add_argument("--image-size", type=positive_int, metavar="N",
                        help="resize every image to NxN (default: keep)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)

    def progress(iterable, total):
        return tqdm(iterable, total=total, unit="img", desc="make_bin",
                    disable=args.no_progress, file=sys.stderr)

    try:
        check_outputs([args.out], [args.image_dir, args.pairs])
        info = make_bin(args.image_dir, args.pairs, args.out, fmt=args.format, ext=args.ext,
                        image_size=args.image_size, progress=progress)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("make_bin", err, 'nothing written')
    except (UsageError, OSError, ValueError) as err:
        return fail("make_bin", err)
    print("wrote %s (%d pairs: %d same, %d different)"
          % (info["path"], info["pairs"], info["same"], info["pairs"] - info["same"]))
    same = [True] * info["same"] + [False] * (info["pairs"] - info["same"])
    problem = degenerate_pairs(same)
    if problem is not None:
        print("make_bin: warning: %s: %s" % (info["path"], problem), file=sys.stderr)
    return 0


#: What ``tools/make_bin.py`` and ``gluon-face-make-bin`` run: :func:`main`, which SIGTERM
#: and Ctrl-C stop with a message.
run = with_stop_signals(main)

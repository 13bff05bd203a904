"""Build an insightface verification `.bin` from an image folder and a pairs list.

    python tools/make_bin.py lfw_aligned/ pairs.txt lfw.bin            # LFW pairs.txt
    python tools/make_bin.py faces/ my_pairs.txt my.bin --format plain  # "a.jpg b.jpg 1"

The LFW format names images as NAME/NAME_000N.jpg ("name n m" for the same
person, "name1 n name2 m" for different people, an optional header line); the
plain format is one "path_a path_b label" line per pair, paths relative to the
image folder, label 1/0, true/false or same/diff.
"""
import argparse
import sys

from tqdm import tqdm

from gluon_face.data import make_bin


def _error(err):
    text = str(err).strip().splitlines()
    print("make_bin: error: %s" % (text[0] if text else type(err).__name__), file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="make_bin", description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", help="folder the pairs list refers to")
    parser.add_argument("pairs", help="pairs list (LFW pairs.txt or 'a b label' lines)")
    parser.add_argument("out", help="output .bin")
    parser.add_argument("--format", choices=("auto", "lfw", "plain"), default="auto",
                        help="pairs list format (default: decided per line)")
    parser.add_argument("--ext", default=".jpg", help="image extension of LFW-style names")
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="resize every image to NxN (default: keep)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)

    def progress(iterable, total):
        return tqdm(iterable, total=total, unit="img", desc="make_bin",
                    disable=args.no_progress, file=sys.stderr)

    try:
        info = make_bin(args.image_dir, args.pairs, args.out, fmt=args.format, ext=args.ext,
                        image_size=args.image_size, progress=progress)
    except KeyboardInterrupt:
        print("make_bin: interrupted; nothing written", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        return _error(err)
    print("wrote %s (%d pairs: %d same, %d different)"
          % (info["path"], info["pairs"], info["same"], info["pairs"] - info["same"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

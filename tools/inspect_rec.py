"""Describe a record file: layout, counts, label range vs `property`, a sample grid.

    python tools/inspect_rec.py data/train.rec
    python tools/inspect_rec.py data/ --check --grid samples.png

Prints the layout found (insightface or plain im2rec), the number of images and
identities, images per identity (min/median/max) and the label range against
the class count of `property`, the `labels.txt` of identity names when there is
one (checked: one line per class), and writes a PNG grid (one row per identity).
Exits non-zero when the file is inconsistent (labels outside the class count,
identity records that disagree with the labels, images that do not decode or
have the wrong size with --check).
"""
import argparse
import json
import os
import sys

from tqdm import tqdm

from gluon_face._io import atomic_path
from gluon_face.data import FaceRecordDataset, format_summary, sample_grid, summarize_rec
from gluon_face.data._image import encode_image


def _error(err):
    text = str(err).strip().splitlines()
    print("inspect_rec: error: %s" % (text[0] if text else type(err).__name__), file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="inspect_rec", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help=".rec file, or a folder holding train.rec")
    parser.add_argument("--grid", metavar="PNG",
                        help="sample grid to write (default: <name>_samples.png here)")
    parser.add_argument("--no-grid", action="store_true", help="do not write a sample grid")
    parser.add_argument("--rows", type=int, default=8, help="identities in the grid")
    parser.add_argument("--cols", type=int, default=8, help="images per identity in the grid")
    parser.add_argument("--check", action="store_true",
                        help="also decode every image and check its size")
    parser.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.cols < 1:
        parser.error("--rows and --cols must be positive")
    return args


def main(argv=None):
    args = _parse(argv)

    def progress(iterable, total):
        return tqdm(iterable, total=total, unit="img", desc="check", disable=args.no_progress,
                    file=sys.stderr)

    try:
        ds = FaceRecordDataset(args.path)
        summary = summarize_rec(ds, check_images=args.check, progress=progress)
        print(format_summary(summary))
        for problem in summary["problems"][:20]:
            print("  problem: %s" % problem)
        if args.json:
            out = {k: v for k, v in summary.items() if k != "labels"}
            with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=1)
        if not args.no_grid and summary["images"]:
            grid_path = args.grid or "%s_samples.png" % os.path.splitext(
                os.path.basename(ds.rec_path))[0]
            grid = sample_grid(ds, rows=args.rows, cols=args.cols, labels=summary["labels"])
            with atomic_path(grid_path) as tmp, open(tmp, "wb") as f:
                f.write(encode_image(grid, "png"))
            print("sample grid: %s" % grid_path)
    except KeyboardInterrupt:
        print("inspect_rec: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        return _error(err)
    if summary["problems"]:
        return _error("%d problem(s); first: %s" % (len(summary["problems"]),
                                                    summary["problems"][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Describe a record file: layout, counts, label range vs `property`, a sample grid.

    python tools/inspect_rec.py data/train.rec
    python tools/inspect_rec.py data/ --check --grid samples.png

Prints the layout found (insightface or plain im2rec), the number of images and
identities, images per identity (min/median/max) and the label range against
the class count of `property`, the `labels.txt` of identity names when there is
one (checked: one line per class), and writes a PNG grid (one row per identity).
Exit status 1 when the file is inconsistent or unreadable (labels outside the
class count, identity records that disagree with the labels, images that do not
decode, decode only with a decoder warning such as libjpeg's "Corrupt JPEG data",
or have the wrong size with --check; images of the grid that do not decode
cleanly), 2 for bad arguments (also a --grid or --json output that would
overwrite the record file, its index, property or labels.txt), 130 on Ctrl-C.
"""
import json
import os
import sys

from tqdm import tqdm

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    positive_int,
    with_stop_signals,
)
from gluon_face._io import atomic_path
from gluon_face.commands._report import fail, stopped
from gluon_face.data import FaceRecordDataset, format_summary, sample_grid, summarize_rec
from gluon_face.data._image import encode_image


def _parse(argv):
    parser = ToolParser(
        prog="inspect_rec", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="--check decodes strictly: an image that decodes only with a decoder warning "
        "(libjpeg's 'Corrupt JPEG data: ...') is a problem. Exit status: 0 consistent, "
        "1 problems found or the file unreadable, 2 bad arguments (also a --grid or --json "
        "output over the record file, its index, property or labels.txt), 130 Ctrl-C.")
    parser.add_argument("path", help=".rec file, or a folder holding train.rec")
    parser.add_argument("--grid", metavar="PNG",
                        help="sample grid to write (default: <name>_samples.png here)")
    parser.add_argument("--no-grid", action="store_true", help="do not write a sample grid")
    parser.add_argument("--rows", type=positive_int, default=8, help="identities in the grid")
    parser.add_argument("--cols", type=positive_int, default=8,
                        help="images per identity in the grid")
    parser.add_argument("--check", action="store_true",
                        help="also decode every image and check its size")
    parser.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _dataset_files(ds):
    """The files a dataset is read from (the outputs must not replace them)."""
    return [ds.rec_path, ds.idx_path, ds.property_path, ds.labels_path]


def main(argv=None):
    args = _parse(argv)

    def progress(iterable, total):
        return tqdm(iterable, total=total, unit="img", desc="check", disable=args.no_progress,
                    file=sys.stderr)

    try:
        ds = FaceRecordDataset(args.path)
        grid_path = None
        if not args.no_grid:
            grid_path = args.grid or "%s_samples.png" % os.path.splitext(
                os.path.basename(ds.rec_path))[0]
        try:
            check_outputs([grid_path, args.json], _dataset_files(ds))
        except UsageError as err:
            return fail("inspect_rec", err, code=2)
        summary = summarize_rec(ds, check_images=args.check, progress=progress)
        grid = None
        if grid_path is not None and summary["images"]:
            grid = sample_grid(ds, rows=args.rows, cols=args.cols, labels=summary["labels"],
                               problems=summary["problems"])
        print(format_summary(summary))
        for problem in summary["problems"][:20]:
            print("  problem: %s" % problem)
        if args.json:
            out = {k: v for k, v in summary.items() if k != "labels"}
            with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=1)
        if grid is not None:
            with atomic_path(grid_path) as tmp, open(tmp, "wb") as f:
                f.write(encode_image(grid, "png"))
            print("sample grid: %s" % grid_path)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("inspect_rec", err)
    except (OSError, ValueError) as err:
        return fail("inspect_rec", err, 1)
    if summary["problems"]:
        return fail("inspect_rec", "%d problem(s); first: %s"
                    % (len(summary["problems"]), summary["problems"][0]), 1)
    return 0


#: What ``tools/inspect_rec.py`` and ``gluon-face-inspect-rec`` run: :func:`main`, which SIGTERM
#: and Ctrl-C stop with a message.
run = with_stop_signals(main)

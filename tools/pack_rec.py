"""Pack an image folder (one sub-folder per identity) into insightface's record layout.

The command lives in :mod:`gluon_face.commands.pack_rec` and is also installed as
``gluon-face-pack-rec``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("pack-rec", prog="pack_rec"))

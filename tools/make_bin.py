"""Build an insightface verification `.bin` from an image folder and a pairs list.

The command lives in :mod:`gluon_face.commands.make_bin` and is also installed as
``gluon-face-make-bin``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("make-bin", prog="make_bin"))

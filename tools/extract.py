"""Embed a folder of face images or a .rec file with a trained backbone.

The command lives in :mod:`gluon_face.commands.extract` and is also installed as
``gluon-face-extract``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("extract", prog="extract"))

"""Describe a record file: layout, counts, label range vs `property`, a sample grid.

The command lives in :mod:`gluon_face.commands.inspect_rec` and is also installed as
``gluon-face-inspect-rec``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("inspect-rec", prog="inspect_rec"))

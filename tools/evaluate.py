"""Verification accuracy of a trained backbone on insightface ``.bin`` pair sets.

The command lives in :mod:`gluon_face.commands.evaluate` and is also installed as
``gluon-face-evaluate``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("evaluate", prog="evaluate"))

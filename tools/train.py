#!/usr/bin/env python
"""Train a face-recognition model: ``python tools/train.py [--loss cosface] [...]``.

The command lives in :mod:`gluon_face.commands.train` and is also installed as
``gluon-face-train``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("train", prog="train.py"))

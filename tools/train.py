#!/usr/bin/env python
"""Train a face-recognition model: ``python tools/train.py [--loss cosface] [...]``.

The command lives in :mod:`gluon_face.commands.train` and is also installed as
``gluon-face-train``; ``--help`` gives its usage.
"""
import sys

try:
    from gluon_face.commands.train import main
except ImportError as err:  # MXNet missing, or a numpy it cannot import with: one line
    print(f"train.py: error: {err}", file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main())

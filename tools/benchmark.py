"""Images/s of FaceResNet training and embedding, and the margin head's step time, in one table.

The command lives in :mod:`gluon_face.commands.benchmark` and is also installed as
``gluon-face-benchmark``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("benchmark", prog="benchmark"))

"""Step time and peak memory of the full margin head, the sharded head and Partial FC.

The command lives in :mod:`gluon_face.commands.benchmark_head` and is also installed as
``gluon-face-benchmark-head``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("benchmark-head", prog="benchmark_head"))

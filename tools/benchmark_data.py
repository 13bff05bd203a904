"""Input pipeline throughput: decode + augment images/s for 1 and N DataLoader workers.

The command lives in :mod:`gluon_face.commands.benchmark_data` and is also installed as
``gluon-face-benchmark-data``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("benchmark-data", prog="benchmark_data"))

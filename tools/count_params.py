"""Count the parameters and multiply-accumulates of a backbone and its classification head.

The command lives in :mod:`gluon_face.commands.count_params` and is also installed as
``gluon-face-count-params``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("count-params", prog="count_params"))

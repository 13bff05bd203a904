"""Convert an insightface MXNet checkpoint (PREFIX-symbol.json + PREFIX-EPOCH.params)
into a gluon_face checkpoint folder.

The command lives in :mod:`gluon_face.commands.convert_insightface` and is also installed as
``gluon-face-convert-insightface``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("convert-insightface", prog="convert_insightface"))

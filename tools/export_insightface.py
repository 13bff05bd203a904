"""Write a gluon_face checkpoint's backbone as an insightface MXNet checkpoint
(PREFIX-symbol.json + PREFIX-0000.params).

The command lives in :mod:`gluon_face.commands.export_insightface` and is also installed as
``gluon-face-export-insightface``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("export-insightface", prog="export_insightface"))

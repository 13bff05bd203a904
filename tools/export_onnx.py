"""Export a trained backbone to ONNX and check it against MXNet with onnxruntime.

The command lives in :mod:`gluon_face.commands.export_onnx` and is also installed as
``gluon-face-export-onnx``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("export-onnx", prog="export_onnx"))

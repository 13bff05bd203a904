"""gluon_face: face recognition with MXNet Gluon.

Backbones (:mod:`gluon_face.model_zoo`), margin heads (:mod:`gluon_face.heads`),
insightface-format data (:mod:`gluon_face.data`), verification metrics
(:mod:`gluon_face.evaluation`) and a trainer (:mod:`gluon_face.training`).
"""
from . import _mxnet  # noqa: F401  (fails early, with an actionable message)

__version__ = "0.1.0"

"""Symbol-graph passes: every rewrite of a traced network's graph, one module per pass.

* :mod:`.legacy` - the legacy view of a numpy-mode graph: the one table of
  numpy -> legacy operators (:data:`NUMPY_TO_LEGACY`), same-shape residual
  sums as ``elemwise_add``; tracing a block (:func:`trace`).
* :mod:`.prelu` - PReLU split into oneDNN operators: :func:`split_prelu` (the
  symbol pass, inference or tied variant), :func:`to_split_prelu` (a block
  that trains a network through the split graph).
* :mod:`.fused` - the float32 inference graph (:func:`inference_graph`) and
  MKLDNN's fusion of it, BatchNorm folded into convolutions (:func:`to_fused`).
* :mod:`.precision` - bfloat16 / float16 graphs by amp's symbol pass
  (:func:`to_low_precision`, :func:`to_bfloat16`), for inference or for
  mixed-precision training.
* :mod:`.int8` - INT8 graphs by MXNet's MKLDNN quantization and calibration
  (:func:`to_int8`).
* :mod:`.embedder` - embedding mode -> inference block (:func:`prepare_embedder`).
* :mod:`.onnx` - the rewrites around ``mx.onnx`` conversion.
* :mod:`.mxnet_compat` - the only module that touches MXNet's private API.

:mod:`gluon_face.inference` and :mod:`gluon_face.export` are clients of this
package; training imports it directly.
"""
from .._lazy import lazy_attributes

# Name -> module of this package that defines it.  Imported when first looked up,
# so that importing one module (e.g. .mxnet_compat, which gluon_face.heads uses)
# does not import amp, quantization and every pass with it.
_LAZY = {
    "NUMPY_TO_LEGACY": "legacy",
    "legacy_symbol": "legacy",
    "to_legacy_graph": "legacy",
    "trace": "legacy",
    "SPLIT_EPS": "prelu",
    "shared_block": "prelu",
    "split_prelu": "prelu",
    "to_split_prelu": "prelu",
    "training_graph": "prelu",
    "inference_graph": "fused",
    "load_inference_block": "fused",
    "to_fused": "fused",
    "LOW_PRECISION_DTYPES": "precision",
    "bfloat16_dtype": "precision",
    "to_bfloat16": "precision",
    "to_low_precision": "precision",
    "CALIB_MODES": "int8",
    "calibration_batches": "int8",
    "to_int8": "int8",
    "MODES": "embedder",
    "check_mode": "embedder",
    "prepare_embedder": "embedder",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

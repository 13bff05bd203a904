"""Benchmarks: speed and memory of the backbones, the margin heads and the input pipeline.

The commands ``tools/benchmark.py``, ``tools/benchmark_head.py`` and
``tools/benchmark_data.py`` (:mod:`gluon_face.commands`) print what these measure.

* :mod:`.timing`, :mod:`.memory`, :mod:`.text`: step times and their medians,
  peak and current resident set, command-line lists and text tables.  Standard
  library only: ``tools/benchmark_torch.py`` loads them by path in a PyTorch
  environment without gluon_face.
* :mod:`.roof`: the float32 GEMM rate measured in the same run.
* :mod:`.backbones`: FaceResNet training and embedding, every variant interleaved.
* :mod:`.profile`: one variant's step by operator, the convolutions' share.
* :mod:`.heads`: the full, sharded and Partial FC heads (:func:`measure_head`),
  the fused ArcFace head against the written-out one (:func:`measure_fused_head`).
* :mod:`.data`: the decode + augment pipeline, and synthetic record files.
* :mod:`.workers`: each configuration in a fresh process, its rows read back as JSON.
* :mod:`.torch_peer`: the PyTorch peer driven in lock-step with our repeats.

The names below are importable from this package; each submodule loads on first use,
so that a worker measuring one head does not carry the others' modules in its memory.
"""
from .._lazy import lazy_attributes

_HOMES = {
    "timed": "timing", "summarize_times": "timing",
    "peak_rss_bytes": "memory", "rss_bytes": "memory",
    "text_table": "text",
    "GemmRoof": "roof",
    "BACKBONE_MODES": "backbones", "TRAIN_MODES": "backbones",
    "backbone_gflop": "backbones", "measure_backbone": "backbones",
    "profile_variant": "profile",
    "KINDS": "heads", "measure_head": "heads", "measure_fused_head": "heads",
    "make_synthetic_rec": "data", "benchmark_loader": "data",
    "default_worker_counts": "data",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, globals())

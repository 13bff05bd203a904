"""Fast embedding extraction: static graphs, MKLDNN fusion, bfloat16 and INT8 graphs.

:func:`prepare_embedder` turns a trained backbone into a block that maps a
batch of normalised images (B, 3, H, W) to embeddings (B, E) float32, in one
of the modes ``'block'`` (the network as it is: the reference), ``'hybrid'``
(one static cached graph), ``'fused'`` (float32, PReLU split, BatchNorm folded
into the convolutions by MXNet's MKLDNN pass), ``'bf16'`` (the graph in
bfloat16, fast where oneDNN may use AMX: see
:func:`gluon_face.training.amp.enable_amx`) and ``'int8'`` (MXNet's MKLDNN
quantization, ranges calibrated on a few batches of real images; CPU only).
:mod:`gluon_face.graph.embedder` describes each.

MXNet 1.9.1's PReLU has no oneDNN kernel (single-threaded, float32 only), so
the inference graphs of the fused, bf16 and int8 modes write it as
``alpha*x + (1-alpha)*relu(x)`` with two per-channel BatchNorm scalings
(:func:`gluon_face.graph.prelu.split_prelu`), and same-shape numpy adds as
``elemwise_add`` (oneDNN's sum).  ``tools/benchmark.py`` measures what each
mode gains (the README's speed table).

The graph passes live in :mod:`gluon_face.graph`; this module re-exports
them under their established names and adds :func:`embed_batches`, the
fixed-shape forward pass over prepared arrays that these embedders need (raw
HWC images, several devices and the flip test are
:func:`gluon_face.embedding.extract_embeddings`'s job).
With ``share_params=True`` the low-precision graph trains the network in
mixed precision (bfloat16 on the CPU, float16 on a GPU).

The fused, bf16 and int8 embedders are for inference (BatchNorm uses its
running statistics).  Note ``Symbol.tojson()`` hides ``amp_cast`` nodes unless
called with ``remove_amp_cast=False``.
"""
import mxnet as mx
from mxnet import np
from mxnet.util import use_np

from ._l2norm import l2_normalize
from .graph.embedder import MODES, prepare_embedder
from .graph.fused import to_fused
from .graph.int8 import CALIB_MODES, to_int8
from .graph.precision import LOW_PRECISION_DTYPES, bfloat16_dtype, to_bfloat16, to_low_precision
from .graph.prelu import split_prelu as _split_prelu  # noqa: F401  (the tests' name for it)
from .graph.prelu import to_split_prelu

__all__ = ["MODES", "CALIB_MODES", "LOW_PRECISION_DTYPES", "bfloat16_dtype", "embed_batches",
           "prepare_embedder", "to_bfloat16", "to_fused", "to_int8", "to_low_precision",
           "to_split_prelu"]


@use_np
def embed_batches(embedder, images, batch_size=64, normalize=False):
    """Embeddings of ``images`` in batches of ``batch_size`` (the last batch padded).

    Padding keeps one input shape, which static graphs need.

    Parameters
    ----------
    embedder : Block
        From :func:`prepare_embedder` (built for ``batch_size``).
    images : numpy.ndarray or mxnet.np.ndarray, shape (N, 3, H, W), float32
        Normalised as the backbone expects, ``(x - 127.5) / 128``.
    batch_size : int
    normalize : bool, default False
        L2-normalise each embedding (:func:`gluon_face.evaluation.l2_normalize`,
        the same normalisation as everywhere else, cast back to float32).

    Returns
    -------
    numpy.ndarray, shape (N, E), float32
    """
    import numpy as onp

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = images.asnumpy() if hasattr(images, "asnumpy") else onp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {images.shape}")
    ctx = _first_ctx(embedder)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].astype("float32")
        n = len(chunk)
        if n < batch_size:
            pad = onp.zeros((batch_size - n,) + chunk.shape[1:], dtype="float32")
            chunk = onp.concatenate([chunk, pad])
        emb = embedder(np.array(chunk, ctx=ctx))
        out.append(emb.asnumpy()[:n].astype("float32"))
    emb = onp.concatenate(out) if out else onp.zeros((0, 0), dtype="float32")
    if normalize and len(emb):
        emb = l2_normalize(emb).astype("float32")
    return emb


def extract_embeddings(embedder, images, batch_size=64, normalize=False):
    """Deprecated name of :func:`embed_batches` (same arguments and result).

    :func:`gluon_face.embedding.extract_embeddings` is the one function of that
    name: it takes raw images and a network.
    """
    import warnings

    warnings.warn("gluon_face.inference.extract_embeddings is deprecated: use "
                  "gluon_face.inference.embed_batches (prepared arrays) or "
                  "gluon_face.embedding.extract_embeddings (raw images)",
                  DeprecationWarning, stacklevel=2)
    return embed_batches(embedder, images, batch_size=batch_size, normalize=normalize)


def _first_ctx(block):
    for param in block.collect_params().values():
        try:
            return param.list_ctx()[0]
        except RuntimeError:  # deferred initialisation
            continue
    return mx.cpu()

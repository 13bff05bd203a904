"""Embedding face images with a backbone: raw ``HWC`` images in, ``(N, D)`` numpy out.

The backbone maps a batch ``(B, 3, H, W)`` float32 of normalised RGB images,
``x = (pixel - 127.5) / 128`` (insightface's input convention), to embeddings
``(B, D)``.  :func:`embed_images` takes raw ``HWC`` uint8 RGB images, normalises
them with :class:`gluon_face.data.FaceTransform` (no random flip), batches them,
spreads every batch over the given devices with
:func:`mxnet.gluon.utils.split_and_load` and returns one ``(N, D)`` float32
numpy array in input order.  :func:`extract_embeddings` adds insightface's
feature extraction on top: the mirrored image's embedding and the L2
normalisation (:func:`gluon_face.evaluation.l2_normalize`, the package's one).

The evaluation protocols built on these (:func:`gluon_face.evaluation.evaluate_bin`,
:func:`gluon_face.evaluation.evaluate_identities`) live in
:mod:`gluon_face.evaluation.protocols`.  :func:`gluon_face.inference.extract_embeddings`
is a different function: a fixed-batch forward over prepared ``NCHW`` arrays.

Library code never prints: long loops report through a ``progress`` callback that
the tools connect to a tqdm bar.
"""
import math

import numpy as onp

from ._l2norm import l2_normalize
from .devices import _as_contexts, _require_mxnet

# MXNet is imported inside the functions, so that importing this module (and
# gluon_face.evaluation, whose protocols build on it) does not need MXNet.

__all__ = ["embed_images", "extract_embeddings"]


def _default_transform():
    from .data import FaceTransform

    return FaceTransform(flip=False)


def embed_images(net, images, ctx_list=None, batch_size=64, flip=False, transform=None,
                 progress=None):
    """Embed raw face images with ``net``, batch by batch, over one or more devices.

    Every image goes through ``transform`` (default ``FaceTransform(flip=False)``:
    ``x = (pixel - 127.5) / 128``, ``HWC -> CHW``, float32); the batches of
    ``batch_size`` images are split evenly across ``ctx_list`` with
    :func:`mxnet.gluon.utils.split_and_load`.  The last, partial batch is padded
    with zero images up to the full batch shape (so a hybridized network sees one
    input shape and every device a slice of equal size) and the embeddings of the
    padding are dropped.  ``net`` runs in inference mode (``autograd.pause(
    train_mode=False)``, even inside ``autograd.record``), so BatchNorm uses its
    running statistics, Dropout is the identity and no graph is recorded.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone whose parameters live on every context of
        ``ctx_list``; ``net(x)`` with ``x`` of shape ``(b, 3, H, W)`` float32
        returns ``(b, D)``.
    images : sequence of numpy.ndarray
        ``N`` images, each ``(H, W, 3)`` uint8 RGB: a list, an ``(N, H, W, 3)``
        array or any object with ``len`` and integer indexing (e.g.
        :class:`gluon_face.data.ImageFiles`, which decodes lazily, so large
        folders are never held in memory at once).
    ctx_list : list of mxnet.Context or mxnet.Context, optional
        Devices to spread each batch over; default ``[mx.cpu()]``.
    batch_size : int
        Images per forward pass over all devices together.  It is rounded up to a
        multiple of ``len(ctx_list)`` so every device gets ``ceil(batch_size / K)``
        images.
    flip : bool
        Embed the left-right mirrored images ``image[:, ::-1]`` instead (the
        mirror is taken before ``transform``).
    transform : callable, optional
        ``image (H, W, 3) uint8 -> (3, H', W') float32``; default
        ``gluon_face.data.FaceTransform(flip=False)``.  Pass
        ``FaceTransform(flip=False, image_size=(H', W'))`` to resize to the
        network's input size.
    progress : callable, optional
        Called as ``progress(n)`` after every batch with the number ``n`` of
        images embedded in it (``tqdm.update`` fits).

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float32, row ``i`` the embedding of ``images[i]`` (not
        normalised).

    Raises
    ------
    ValueError
        If ``batch_size < 1``, an image is not ``(H, W, 3)`` or the transformed
        images of one batch differ in shape.
    """
    _require_mxnet()
    from mxnet.util import np_array, np_shape

    # the backbones are numpy-mode blocks: numpy semantics whatever the caller's
    # mode (what @use_np does; entered here because MXNet is imported lazily)
    with np_shape(True), np_array(True):
        return _embed_images(net, images, ctx_list, batch_size, flip, transform, progress)


def _embed_images(net, images, ctx_list, batch_size, flip, transform, progress):
    """:func:`embed_images` without the switch to numpy mode."""
    from mxnet import autograd
    from mxnet.gluon.utils import split_and_load

    contexts = _as_contexts(ctx_list)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    per_device = int(math.ceil(batch_size / len(contexts)))
    full = per_device * len(contexts)
    transform = _default_transform() if transform is None else transform

    num = len(images)
    chunks = []
    for start in range(0, num, full):
        stop = min(start + full, num)
        batch = []
        for i in range(start, stop):
            image = onp.asarray(images[i])
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {i} has shape {image.shape}; expected (H, W, 3) RGB")
            if flip:
                image = onp.ascontiguousarray(image[:, ::-1])
            batch.append(onp.asarray(transform(image), dtype=onp.float32))
        shapes = {b.shape for b in batch}
        if len(shapes) != 1:
            raise ValueError(f"images {start}..{stop - 1} give different input shapes "
                             f"{sorted(shapes)} after the transform; "
                             "pass transform=FaceTransform(flip=False, image_size=(H, W))")
        data = onp.stack(batch)
        if len(batch) < full:  # pad the last batch; the padding's embeddings are dropped below
            pad = onp.zeros((full - len(batch),) + data.shape[1:], dtype=onp.float32)
            data = onp.concatenate([data, pad])
        # inference mode even when called inside autograd.record() (e.g. mid-training)
        with autograd.pause(train_mode=False):
            outputs = [net(x) for x in split_and_load(data, contexts, even_split=True)]
        emb = onp.concatenate([o.asnumpy() for o in outputs])[:len(batch)]
        chunks.append(emb.astype(onp.float32, copy=False))
        if progress is not None:
            progress(len(batch))
    if not chunks:
        raise ValueError("no images to embed")
    return onp.concatenate(chunks)


def extract_embeddings(net, images, ctx_list=None, batch_size=64, flip=False, normalize=True,
                       transform=None, progress=None):
    """Embeddings for a gallery of images, as stored by ``tools/extract.py``.

    ``e = f(x)``, or with ``flip`` ``e = f(x) + f(mirror(x))`` (insightface's
    feature extraction); then, unless ``normalize`` is False, every row is
    scaled to unit L2 norm by :func:`gluon_face.evaluation.l2_normalize` (in
    float64, then rounded to float32 once; an all-zero row stays zero).

    Parameters
    ----------
    net, images, ctx_list, batch_size, transform, progress
        As in :func:`embed_images` (with ``flip``, ``2N`` images are embedded).
    flip : bool
        Add the embedding of the mirrored image.
    normalize : bool
        L2-normalise every row.

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float32.
    """
    kwargs = dict(ctx_list=ctx_list, batch_size=batch_size, transform=transform,
                  progress=progress)
    emb = embed_images(net, images, flip=False, **kwargs)
    if flip:
        emb = emb + embed_images(net, images, flip=True, **kwargs)
    if normalize:
        # float32 like the raw embeddings: the stored .npy and its readers expect it
        emb = l2_normalize(emb).astype(onp.float32)
    return emb

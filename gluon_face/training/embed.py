"""Embedding images with a trained backbone, and the verification protocol on ``.bin`` pairs.

The backbone maps a batch ``(B, 3, H, W)`` float32 of normalised RGB images,
``x = (pixel - 127.5) / 128`` (insightface's input convention), to embeddings
``(B, D)``.  :func:`embed_images` takes raw ``HWC`` uint8 RGB images, normalises
them with :class:`gluon_face.data.FaceTransform` (no random flip), batches them,
spreads every batch over the given devices with
:func:`mxnet.gluon.utils.split_and_load` and returns one ``(N, D)`` float32
numpy array in input order.

:func:`evaluate_bin` runs insightface's verification protocol on one set of
pairs: each image and its left-right mirror are embedded, the two embeddings are
summed and L2-normalised, and :func:`gluon_face.evaluation.verification_accuracy`
scores the pairs with 10-fold cross-validation; the accuracy without the mirror is
reported as well, and is the reported number for data that is not
mirror-symmetric (``flip_test=False``).

Library code never prints: long loops report through a ``progress`` callback that
the tools connect to a tqdm bar.
"""
import math
import os

import numpy as onp
from mxnet.util import use_np  # noqa: E402

from .. import _mxnet  # noqa: F401  (actionable error when MXNet is missing)

__all__ = ["embed_images", "evaluate_bin", "evaluate_identities", "extract_embeddings",
           "l2_normalize", "parse_ctx", "find_images", "ImageFiles", "IMAGE_EXTENSIONS"]

#: File name endings (lower case) that :func:`find_images` treats as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _default_transform():
    from ..data import FaceTransform

    return FaceTransform(flip=False)


def _as_contexts(ctx_list):
    import mxnet as mx

    if ctx_list is None:
        return [mx.cpu()]
    if isinstance(ctx_list, mx.Context):
        return [ctx_list]
    ctx_list = list(ctx_list)
    if not ctx_list:
        raise ValueError("ctx_list is empty: give at least one mxnet Context")
    return ctx_list


@use_np  # the backbones are numpy-mode blocks: works whatever the caller's mode
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
        :class:`ImageFiles`, which decodes lazily, so large folders are never held
        in memory at once).
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


def l2_normalize(x, eps=1e-10):
    """Row-wise L2 normalisation ``x / sqrt(sum(x ** 2) + eps)`` of an ``(N, D)`` array."""
    x = onp.asarray(x, dtype=onp.float32)
    return x / onp.sqrt(onp.sum(x * x, axis=1, keepdims=True) + eps)


def evaluate_bin(net, images, issame, ctx_list=None, batch_size=64, nfolds=10,
                 far_target=1e-3, transform=None, progress=None, flip_test=True, cache=None):
    """Verification accuracy of ``net`` on one set of pairs, with and without the mirror.

    Pair ``i`` is ``(images[2i], images[2i+1])``.  The images (and, with
    ``flip_test``, their left-right mirrors) are embedded with
    :func:`embed_images`; then

    * ``'flip'``: ``e = normalize(f(x) + f(mirror(x)))``
      (:func:`gluon_face.evaluation.combine_flip`), insightface's reported number;
    * ``'noflip'``: ``e = f(x)``

    are scored by :func:`gluon_face.evaluation.verification_accuracy` (squared L2
    distance of the normalised embeddings, thresholds ``arange(0, 4, 0.01)``,
    ``nfolds``-fold cross-validation without shuffling, VAL at FAR
    ``far_target``).

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Initialised backbone on every context of ``ctx_list``.
    images : sequence of numpy.ndarray
        ``2P`` images ``(H, W, 3)`` uint8 RGB, as returned by
        :func:`gluon_face.data.load_bin`.
    issame : array_like of bool
        ``(P,)``: whether pair ``i`` shows the same identity.
    ctx_list, batch_size, transform
        As in :func:`embed_images`.
    nfolds : int
        Cross-validation folds.
    far_target : float
        False accept rate at which VAL is reported.
    progress : callable, optional
        ``progress(n)`` after every batch; at most ``4P`` images are embedded in
        total (``2P`` without ``flip_test``): an image that appears in several
        pairs is embedded once.
    flip_test : bool
        Add the mirrored embedding (faces).  Data whose identities are not
        mirror-symmetric (the built-in glyph identities: a mirrored ``b`` is a
        ``d``) must be scored without it: then ``'flip'`` is None and nothing
        mirrored is embedded.
    cache : dict, optional
        Embeddings already computed by the same ``net`` with the same
        ``transform``, keyed by image content; filled with the new ones.  Share
        one dict between the calls of one evaluation round (e.g. with
        :func:`evaluate_identities` on the images the pairs are drawn from),
        never across changes of the weights.

    Returns
    -------
    dict
        ``{'flip': VerificationResult or None, 'noflip': VerificationResult,
        'score': the reported one of the two ('flip' with flip_test, else
        'noflip'), 'flip_test': bool, 'pairs': P, 'distances': (P,) float64}``,
        the last the reported embedding's squared-L2 pair distances (to compare
        decisions across models).

    Raises
    ------
    ValueError
        If ``len(images) != 2 * len(issame)`` or there are no pairs.
    """
    from ..evaluation import combine_flip, pair_distances, verification_accuracy

    issame = onp.asarray(issame, dtype=bool).reshape(-1)
    if len(issame) == 0:
        raise ValueError("no pairs to evaluate")
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs; "
                         "a .bin holds exactly 2 images per pair")
    kwargs = dict(ctx_list=ctx_list, batch_size=batch_size, transform=transform,
                  progress=progress)
    cache = {} if cache is None else cache
    emb = _embed_once(net, images, False, cache, **kwargs)
    noflip = verification_accuracy(emb, issame, nfolds=nfolds, far_target=far_target)
    flip, reported = None, emb
    if flip_test:
        reported = combine_flip(emb, _embed_once(net, images, True, cache, **kwargs))
        flip = verification_accuracy(reported, issame, nfolds=nfolds, far_target=far_target)
    return {
        "flip": flip,
        "noflip": noflip,
        "score": flip if flip_test else noflip,
        "flip_test": bool(flip_test),
        "pairs": len(issame),
        "distances": pair_distances(reported),
    }


def _image_key(image):
    """A key that two images share exactly when they are equal byte for byte."""
    import hashlib

    image = onp.ascontiguousarray(image)
    return (image.shape, str(image.dtype),
            hashlib.blake2b(image.tobytes(), digest_size=16).digest())


def _embed_once(net, images, flip, cache, **kwargs):
    """``embed_images(net, images, flip)``, each distinct image embedded once.

    Pair sets reuse images (a face appears in several pairs), and an open set's
    pairs and its identification images overlap: ``cache`` maps
    ``(image key, flip)`` to an embedding already computed with the same ``net``
    and settings, and is filled with the new ones.
    """
    keys = [_image_key(images[i]) for i in range(len(images))]
    missing = {}
    for i, key in enumerate(keys):
        if (key, flip) not in cache and key not in missing:
            missing[key] = i
    if missing:
        emb = embed_images(net, [images[i] for i in missing.values()], flip=flip, **kwargs)
        for key, row in zip(missing, emb):
            cache[(key, flip)] = row
    if not keys:
        raise ValueError("no images to embed")
    return onp.stack([cache[(key, flip)] for key in keys])


def evaluate_identities(net, images, labels, ctx_list=None, batch_size=64, flip_test=True,
                        far_targets=(1e-2, 1e-3, 1e-4), enrolled_fraction=0.75, seed=0,
                        transform=None, progress=None, cache=None):
    """Open-set metrics of ``net`` on labelled images of identities it never saw.

    The images are embedded once (with ``flip_test``, ``f(x) + f(mirror(x))``)
    and L2-normalised, then scored two ways:

    * all-pairs verification (IJB-C style): every pair of images, TAR at each
      of ``far_targets`` and the ROC
      (:func:`gluon_face.evaluation.all_pairs_verification`);
    * 1:N identification (MegaFace / IJB style): a share ``enrolled_fraction``
      of the identities is enrolled with one image each
      (:func:`gluon_face.evaluation.split_gallery_probes` with ``seed``), every
      other image is a probe; rank-1, rank-5, the CMC curve, and TPIR at FPIR
      1e-2 and 1e-1 for the probes of identities not enrolled
      (:func:`gluon_face.evaluation.identification`).

    Parameters
    ----------
    net, ctx_list, batch_size, transform, progress
        As in :func:`embed_images`.
    cache : dict, optional
        As in :func:`evaluate_bin`.
    images : sequence of numpy.ndarray
        ``N`` images ``(H, W, 3)`` uint8 RGB.
    labels : array_like
        ``(N,)`` identity of each image.

    Returns
    -------
    dict
        ``{'all_pairs': AllPairsResult, 'identification': IdentificationResult,
        'identities': number of identities, 'images': N, 'embeddings': (N, D)
        float32 normalised}``.
    """
    from ..evaluation import all_pairs_verification, identification, split_gallery_probes

    labels = onp.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    kwargs = dict(ctx_list=ctx_list, batch_size=batch_size, transform=transform,
                  progress=progress)
    cache = {} if cache is None else cache
    emb = _embed_once(net, images, False, cache, **kwargs)
    if flip_test:
        emb = emb + _embed_once(net, images, True, cache, **kwargs)
    emb = l2_normalize(emb)
    pairs = all_pairs_verification(emb, labels, far_targets=far_targets)
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=enrolled_fraction,
                                           seed=seed)
    ident = identification(emb[gallery], labels[gallery], emb[probes], labels[probes])
    return {"all_pairs": pairs, "identification": ident,
            "identities": int(len(onp.unique(labels))), "images": len(labels),
            "embeddings": emb}


def extract_embeddings(net, images, ctx_list=None, batch_size=64, flip=False, normalize=True,
                       transform=None, progress=None):
    """Embeddings for a gallery of images, as stored by ``tools/extract.py``.

    ``e = f(x)``, or with ``flip`` ``e = f(x) + f(mirror(x))`` (insightface's
    feature extraction); then ``e / sqrt(sum(e ** 2) + 1e-10)`` row-wise unless
    ``normalize`` is False.

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
    return l2_normalize(emb) if normalize else emb


def parse_ctx(text):
    """Parse a device string into a list of MXNet contexts.

    Accepted forms: ``cpu``, ``cpu:0,1`` (separate CPU contexts), ``gpu`` (=
    ``gpu:0``), ``gpu:0,1,3``.

    Raises
    ------
    ValueError
        On any other form, or a GPU index that is not visible.
    """
    import mxnet as mx

    kind, _, ids = str(text).strip().partition(":")
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"unknown device {text!r}: use cpu, cpu:0,1, gpu or gpu:0,1")
    try:
        idx = [int(i) for i in ids.split(",")] if ids else [0]
    except ValueError:
        raise ValueError(f"bad device list in {text!r}: use e.g. gpu:0,1") from None
    if any(i < 0 for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"bad device list in {text!r}: indices must be distinct and >= 0")
    if kind == "cpu":
        return [mx.cpu(i) for i in idx]
    available = mx.context.num_gpus()
    missing = [i for i in idx if i >= available]
    if missing:
        raise ValueError(f"device {text!r} asks for gpu {','.join(map(str, missing))} "
                         f"but {available} GPU(s) are visible")
    return [mx.gpu(i) for i in idx]


def find_images(folder):
    """Sorted relative paths of every image file under ``folder`` (recursive).

    A file counts as an image when its name ends in one of
    :data:`IMAGE_EXTENSIONS` (case-insensitive); hidden files and folders are
    skipped.  Paths use ``/`` and sort by their components, so the order does not
    depend on the file system.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(name if rel == "." else os.path.join(rel, name))
    parts = sorted(tuple(p.split(os.sep)) for p in found)
    return ["/".join(p) for p in parts]


class ImageFiles:
    """A lazily decoded list of image files: ``files[i]`` -> ``(H, W, 3)`` uint8 RGB.

    Suitable as the ``images`` argument of :func:`embed_images`: only one batch
    is decoded at a time.

    Parameters
    ----------
    paths : list of str
        Image files (absolute, or relative to ``root``).
    root : str, optional
        Folder the paths are relative to.
    """

    def __init__(self, paths, root=None):
        self.paths = list(paths)
        self.root = root

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        path = self.paths[i] if self.root is None else os.path.join(self.root, self.paths[i])
        try:
            with Image.open(path) as im:
                return onp.asarray(im.convert("RGB"), dtype=onp.uint8)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from None

"""Evaluation protocols that embed images with a network, then score them.

:func:`evaluate_bin` runs insightface's verification protocol on one set of
pairs: each image and its left-right mirror are embedded, the two embeddings are
summed and L2-normalised, and :func:`gluon_face.evaluation.verification_accuracy`
scores the pairs with 10-fold cross-validation; the accuracy without the mirror is
reported as well, and is the reported number for data that is not
mirror-symmetric (``flip_test=False``).  :func:`evaluate_identities` scores
labelled images of unseen identities: all-pairs TAR at FAR and 1:N
identification.

Unlike the rest of :mod:`gluon_face.evaluation` these functions need MXNet (they
run the network through :func:`gluon_face.embedding.embed_images`), but only when
called: :mod:`gluon_face.embedding` imports MXNet inside its functions, so the
package stays importable without MXNet.

Library code never prints: long loops report through a ``progress`` callback that
the tools connect to a tqdm bar.
"""
import hashlib

import numpy as onp

from .._l2norm import l2_normalize
from ..embedding import embed_images
from .identification import all_pairs_verification, identification, split_gallery_probes
from .verification import combine_flip, pair_distances, verification_accuracy

__all__ = ["evaluate_bin", "evaluate_identities"]


def evaluate_bin(net, images, issame, ctx_list=None, batch_size=64, nfolds=10,
                 far_target=1e-3, transform=None, progress=None, flip_test=True, cache=None):
    """Verification accuracy of ``net`` on one set of pairs, with and without the mirror.

    Pair ``i`` is ``(images[2i], images[2i+1])``.  The images (and, with
    ``flip_test``, their left-right mirrors) are embedded with
    :func:`~gluon_face.embedding.embed_images`; then

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
        As in :func:`~gluon_face.embedding.embed_images`.
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
        As in :func:`~gluon_face.embedding.embed_images`.
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
    labels = onp.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    kwargs = dict(ctx_list=ctx_list, batch_size=batch_size, transform=transform,
                  progress=progress)
    cache = {} if cache is None else cache
    emb = _embed_once(net, images, False, cache, **kwargs)
    if flip_test:
        emb = emb + _embed_once(net, images, True, cache, **kwargs)
    # float32 as documented (and as extract_embeddings returns); the metrics below
    # renormalise in float64 anyway
    emb = l2_normalize(emb).astype(onp.float32)
    pairs = all_pairs_verification(emb, labels, far_targets=far_targets)
    gallery, probes = split_gallery_probes(labels, enrolled_fraction=enrolled_fraction,
                                           seed=seed)
    ident = identification(emb[gallery], labels[gallery], emb[probes], labels[probes])
    return {"all_pairs": pairs, "identification": ident,
            "identities": int(len(onp.unique(labels))), "images": len(labels),
            "embeddings": emb}

"""The built-in demo set: scikit-learn's handwritten digits in insightface layout.

Training needs no download: scikit-learn ships 1,797 real 8x8 grey images of
the digits 0-9 (``sklearn.datasets.load_digits``, the UCI optical-digits test
set, about 180 per digit).  Each digit plays the part of one identity:

* ``train.rec`` / ``train.idx`` / ``property`` — digits 0-6 minus a held-out
  share of each digit, upscaled to 32x32 RGB (``property`` = ``7,32,32``);
* ``open_set.bin`` — verification pairs of digits 7, 8 and 9, which training
  never sees: the face-verification situation (new people at test time);
* ``closed_set.bin`` — pairs of the held-out images of digits 0-6: same
  classes as training, unseen images.

Both ``.bin`` sets hold :data:`NUM_PAIRS` pairs, half same-class, ordered so
that each of the 10 contiguous folds of the verification protocol is balanced.
Everything is deterministic (fixed seed): two builds give identical files.

The set is built on first use into a cache folder, in a temporary sibling
folder renamed into place when complete, with a ``stamp.json`` listing every
file's size and SHA-256; a folder whose files do not match it is rebuilt.
"""
import os

import numpy as np

from ._cache import cache_root, cached_build, verify_stamp, write_stamp
from ._image import encode_image
from .recordio import write_face_rec
from .verification import balanced_pairs, write_bin

__all__ = ["demo_data_dir", "demo_cache_root", "build_demo_data", "build_demo_pairs",
           "verify_demo_data",
           "DEMO_VERSION", "TRAIN_DIGITS", "OPEN_SET_DIGITS", "HOLDOUT_PER_CLASS",
           "NUM_PAIRS", "DEMO_IMAGE_SIZE"]

DEMO_VERSION = "demo-v1"
"""Name of the cache sub-folder; bump it whenever the content changes."""
TRAIN_DIGITS = (0, 1, 2, 3, 4, 5, 6)
OPEN_SET_DIGITS = (7, 8, 9)
HOLDOUT_PER_CLASS = 30
"""Images of each training digit kept out of ``train.rec`` for ``closed_set.bin``."""
NUM_PAIRS = 600
"""Pairs per ``.bin`` (10 folds of 30 same + 30 different pairs)."""
DEMO_IMAGE_SIZE = 32
SEED = 20231
_NFOLDS = 10
_FILES = ("train.rec", "train.idx", "property", "open_set.bin", "closed_set.bin")


def demo_cache_root(cache_dir=None):
    """The folder that holds ``demo-v1``: ``cache_dir``, else ``$GLUON_FACE_CACHE``,
    else ``~/.cache/gluon_face``."""
    return cache_root(cache_dir)


def _digit_images():
    """(1797, 32, 32, 3) uint8 RGB images and (1797,) int labels."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16 of a 4x4 block of the original 32x32 bitmap.
    grey = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    size = DEMO_IMAGE_SIZE
    up = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC) for g in grey])
    rgb = np.repeat(up[:, :, :, None], 3, axis=3)
    return np.ascontiguousarray(rgb), digits.target.astype(np.int64)


def _split():
    """Images, labels, the generator after the held-out draw, and the index groups.

    Returns ``(images, labels, rng, train_idx, holdout_groups, open_groups)``;
    ``rng`` has drawn the held-out images (always the same ones) and nothing else.
    """
    images, labels = _digit_images()
    rng = np.random.default_rng(SEED)
    train_idx, holdout_groups = [], []
    for digit in TRAIN_DIGITS:
        idx = np.flatnonzero(labels == digit)
        held = np.sort(rng.choice(idx, size=HOLDOUT_PER_CLASS, replace=False))
        holdout_groups.append(held)
        train_idx.append(np.setdiff1d(idx, held))
    open_groups = [np.flatnonzero(labels == d) for d in OPEN_SET_DIGITS]
    return images, labels, rng, train_idx, holdout_groups, open_groups


def _write_pair_sets(out_dir, images, rng, open_groups, holdout_groups, num_pairs):
    for name, groups in (("open_set.bin", open_groups), ("closed_set.bin", holdout_groups)):
        pairs, issame = balanced_pairs(groups, num_pairs, rng, _NFOLDS)
        write_bin(os.path.join(out_dir, name), [images[i] for i in pairs.ravel()], issame,
                  fmt="png")


def build_demo_pairs(out_dir, num_pairs):
    """Larger ``open_set.bin`` and ``closed_set.bin`` than the demo's, from the same images.

    The demo's 600 pairs move the accuracy in steps of 0.17 points; a few
    thousand pairs measure small differences (e.g. between embedding modes).
    Open-set pairs come from digits 7-9, closed-set pairs from the same
    held-out images of digits 0-6 as the demo set's (never in ``train.rec``);
    pairs are distinct and balanced per fold as in the demo.  ``num_pairs``
    must be a multiple of 20 and at most 6,000 (the closed set has 3,045
    distinct same-digit pairs).
    """
    if not 0 < num_pairs <= 6000 or num_pairs % (2 * _NFOLDS):
        raise ValueError(f"num_pairs must be a multiple of {2 * _NFOLDS} in [20, 6000], "
                         f"got {num_pairs}")
    images, _, rng, _, holdout_groups, open_groups = _split()
    os.makedirs(out_dir, exist_ok=True)
    _write_pair_sets(out_dir, images, rng, open_groups, holdout_groups, num_pairs)


def build_demo_data(out_dir):
    """Write the demo set into ``out_dir`` (created; must not hold other files).

    Returns
    -------
    dict
        Counts written: ``train_images``, ``num_classes``, ``holdout_images``,
        ``open_set_images``, ``pairs``.
    """
    images, labels, rng, train_idx, holdout_groups, open_groups = _split()
    os.makedirs(out_dir, exist_ok=True)
    samples = ((label, encode_image(images[i], "png"))
               for label, idx in enumerate(train_idx) for i in idx)
    info = write_face_rec(os.path.join(out_dir, "train"), samples,
                          (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE))
    _write_pair_sets(out_dir, images, rng, open_groups, holdout_groups, NUM_PAIRS)
    return {"train_images": info["num_images"], "num_classes": info["num_classes"],
            "holdout_images": int(sum(len(g) for g in holdout_groups)),
            "open_set_images": int(sum(len(g) for g in open_groups)), "pairs": NUM_PAIRS}


def _write_stamp(folder, info):
    write_stamp(folder, DEMO_VERSION, _FILES, seed=SEED, info=info)


def verify_demo_data(folder):
    """Why ``folder`` is not a complete demo set, or None when it is.

    Checks the stamp's version and every file's size and SHA-256.
    """
    return verify_stamp(folder, DEMO_VERSION, _FILES)


def demo_data_dir(cache_dir=None, rebuild=False):
    """Path of the built-in demo set, building it on first use.

    Parameters
    ----------
    cache_dir : str, optional
        Cache root; the set lives in ``<cache_dir>/demo-v1``.  Default
        ``$GLUON_FACE_CACHE``, else ``~/.cache/gluon_face``.
    rebuild : bool
        Build afresh even if a valid copy exists.

    Returns
    -------
    str
        The folder holding ``train.rec``, ``train.idx``, ``property``
        (``7,32,32``), ``open_set.bin``, ``closed_set.bin`` and ``stamp.json``.

    Notes
    -----
    A missing, incomplete or corrupted folder (any file whose size or
    checksum differs from ``stamp.json``) is rebuilt.  The build happens in a
    temporary sibling folder that is renamed into place, so concurrent callers
    and interrupted builds never see a half-written set.
    """
    def build(folder):
        _write_stamp(folder, build_demo_data(folder))

    return cached_build(DEMO_VERSION, build, verify_demo_data, cache_dir, rebuild)

"""Picklable image transforms for face training and evaluation.

All transforms are plain classes (no lambdas, no closures), so a dataset
wrapped with ``dataset.transform_first(FaceTransform())`` can be sent to
``gluon.data.DataLoader`` worker processes.  Random transforms keep their own
``numpy.random.Generator`` and re-seed it in every process they run in: forked
workers otherwise inherit one random state and would all flip the same images.

Input images are HWC uint8 RGB ``numpy.ndarray`` (what
:class:`~gluon_face.data.FaceRecordDataset` returns).
"""
import os

import numpy as np

from ._image import resize_image

__all__ = ["Compose", "RandomFlipLeftRight", "Resize", "CenterCrop", "RandomCrop",
           "Normalize", "FaceTransform", "normalize_image"]


def normalize_image(image, mean=127.5, scale=128.0):
    """insightface input normalisation of HWC uint8 images.

    .. math:: y_{c,h,w} = (x_{h,w,c} - \\mu) / s, \\quad \\mu = 127.5,\\ s = 128

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8, or (N, H, W, 3) for a batch.

    Returns
    -------
    numpy.ndarray
        (3, H, W) (or (N, 3, H, W)) float32 in about [-1, 1].
    """
    image = np.asarray(image)
    out = (image.astype(np.float32) - np.float32(mean)) / np.float32(scale)
    axes = (2, 0, 1) if out.ndim == 3 else (0, 3, 1, 2)
    return np.ascontiguousarray(out.transpose(axes))


def _size2(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    height, width = size
    return (int(height), int(width))


class _Random:
    """Per-process random generator: a fresh stream in every forked worker."""

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = None
        self._pid = None
        self._owner = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_rng"] = None
        state["_pid"] = None
        return state

    @property
    def rng(self):
        pid = os.getpid()
        if self._rng is None or self._pid != pid:
            if self.seed is None:
                self._rng = np.random.default_rng()
            elif pid == self._owner:
                self._rng = np.random.default_rng(self.seed)
            else:  # a different stream per worker (pids vary: not reproducible)
                self._rng = np.random.default_rng([self.seed, pid])
            self._pid = pid
        return self._rng


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image):
        for t in self.transforms:
            image = t(image)
        return image

    def __repr__(self):
        return "Compose(%r)" % (self.transforms,)


class RandomFlipLeftRight(_Random):
    """Mirror an HWC image left-right with probability ``p``.

    Parameters
    ----------
    p : float
        Flip probability.
    seed : int, optional
        Seed of this transform's own generator (per process).
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        self.p = float(p)

    def __call__(self, image):
        if self.rng.random() < self.p:
            return np.ascontiguousarray(image[:, ::-1])
        return image

    def __repr__(self):
        return "RandomFlipLeftRight(p=%g)" % self.p


class Resize:
    """Resize an HWC uint8 image to ``size`` (int or (H, W)); area filter when shrinking."""

    def __init__(self, size):
        self.size = _size2(size)

    def __call__(self, image):
        return resize_image(image, self.size)

    def __repr__(self):
        return "Resize(%r)" % (self.size,)


def _check_crop(image, size):
    if image.shape[0] < size[0] or image.shape[1] < size[1]:
        raise ValueError("cannot crop %dx%d out of a %dx%d image" % (*size, *image.shape[:2]))


class CenterCrop:
    """Cut the central ``size`` (int or (H, W)) window of an HWC image."""

    def __init__(self, size):
        self.size = _size2(size)

    def __call__(self, image):
        _check_crop(image, self.size)
        top = (image.shape[0] - self.size[0]) // 2
        left = (image.shape[1] - self.size[1]) // 2
        return image[top:top + self.size[0], left:left + self.size[1]]

    def __repr__(self):
        return "CenterCrop(%r)" % (self.size,)


class RandomCrop(_Random):
    """Cut a uniformly placed ``size`` window of an HWC image."""

    def __init__(self, size, seed=None):
        super().__init__(seed)
        self.size = _size2(size)

    def __call__(self, image):
        _check_crop(image, self.size)
        top = int(self.rng.integers(0, image.shape[0] - self.size[0] + 1))
        left = int(self.rng.integers(0, image.shape[1] - self.size[1] + 1))
        return image[top:top + self.size[0], left:left + self.size[1]]

    def __repr__(self):
        return "RandomCrop(%r)" % (self.size,)


class Normalize:
    """HWC uint8 -> CHW float32 with ``(x - mean) / scale`` (see :func:`normalize_image`)."""

    def __init__(self, mean=127.5, scale=128.0):
        self.mean = float(mean)
        self.scale = float(scale)

    def __call__(self, image):
        return normalize_image(image, self.mean, self.scale)

    def __repr__(self):
        return "Normalize(mean=%g, scale=%g)" % (self.mean, self.scale)


class FaceTransform(Compose):
    """The standard face-training transform: [crop] -> [resize] -> [flip] -> normalise.

    Input (H, W, 3) uint8 RGB; output (3, H', W') float32 ``(x - 127.5) / 128``.

    Parameters
    ----------
    flip : bool
        Random left-right mirror with probability 0.5 (training); False for
        evaluation.
    image_size : int or (int, int), optional
        Resize to this (H, W) when the image (after cropping) differs.
    crop : int or (int, int), optional
        Crop window taken before resizing.
    random_crop : bool
        Place the crop window at random (training) instead of at the centre.
    seed : int, optional
        Seed of the random parts (per process; see module notes).

    Examples
    --------
    >>> ds = FaceRecordDataset('train.rec').transform_first(FaceTransform(flip=True))
    """

    def __init__(self, flip=True, image_size=None, crop=None, random_crop=False, seed=None):
        self.flip = bool(flip)
        self.image_size = _size2(image_size)
        self.crop = _size2(crop)
        steps = []
        if self.crop is not None:
            steps.append(RandomCrop(self.crop, seed) if random_crop else CenterCrop(self.crop))
        if self.image_size is not None:
            steps.append(Resize(self.image_size))
        if self.flip:
            steps.append(RandomFlipLeftRight(0.5, None if seed is None else seed + 1))
        steps.append(Normalize())
        super().__init__(steps)

    def __repr__(self):
        return "FaceTransform(%s)" % ", ".join(repr(t) for t in self.transforms)

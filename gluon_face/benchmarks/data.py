"""Input-pipeline throughput: decode + augment images/s (``tools/benchmark_data.py``).

The pipeline measured is the training one: :class:`FaceRecordDataset` (read +
JPEG decode) -> :class:`FaceTransform` (random flip, ``(x - 127.5) / 128``,
HWC->CHW) -> ``gluon.data.DataLoader`` batching, with ``num_workers``
processes (0 = in the calling process).
"""
import os
import time

import numpy as np

from ..data._image import encode_image, resize_image
from ..data.recordio import FaceRecordDataset, write_face_rec
from ..data.transforms import FaceTransform

__all__ = ["make_synthetic_rec", "benchmark_loader", "default_worker_counts"]


def _synthetic_face(rng, size):
    """A smooth random image (low-frequency colour field plus mild noise).

    JPEG sizes and decode costs of such images are close to those of real
    aligned face crops, unlike white noise (which compresses far worse).
    """
    coarse = rng.integers(0, 256, size=(7, 7, 3), dtype=np.uint8)
    image = resize_image(coarse, (size, size)).astype(np.int16)
    image += rng.integers(-6, 7, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic_rec(prefix, num_images=1024, num_classes=32, image_size=112, seed=0,
                       quality=95):
    """Write a synthetic insightface-layout file of JPEG images for benchmarks and tests.

    Parameters
    ----------
    prefix : str
        Output prefix (``prefix.rec``, ``prefix.idx``, ``dirname/property``).
    num_images : int
        Total images, split as evenly as possible over ``num_classes``.
    num_classes : int
    image_size : int
        Side of the square images, pixels.
    seed : int
    quality : int
        JPEG quality.

    Returns
    -------
    dict
        As :func:`write_face_rec`, plus ``mean_bytes`` per encoded image.
    """
    if num_images < num_classes or num_classes < 1:
        raise ValueError("need num_images >= num_classes >= 1, got %d and %d"
                         % (num_images, num_classes))
    rng = np.random.default_rng(seed)
    labels = np.sort(np.arange(num_images) % num_classes)
    total = [0]

    def samples():
        for label in labels:
            buf = encode_image(_synthetic_face(rng, image_size), "jpg", quality)
            total[0] += len(buf)
            yield int(label), buf

    info = write_face_rec(prefix, samples(), (image_size, image_size))
    info["mean_bytes"] = total[0] / float(num_images)
    return info


class _Indices:
    """A fixed index sequence usable as a Gluon sampler."""

    def __init__(self, indices):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def default_worker_counts():
    """``[0, 1, N]`` (deduplicated) with N the number of usable CPU cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return sorted({0, 1, cores})


def benchmark_loader(rec_path, num_workers=0, batch_size=64, num_images=None,
                     transform=None, warmup_batches=1):
    """Images/s through ``DataLoader(FaceRecordDataset(rec_path).transform_first(t))``.

    Parameters
    ----------
    rec_path : str
        Record file (or folder holding ``train.rec``).
    num_workers : int
        DataLoader worker processes (0: decode in this process).
    batch_size : int
    num_images : int, optional
        Images to time (after warm-up), default: one pass over the file.
    transform : callable, optional
        Default ``FaceTransform(flip=True)``.
    warmup_batches : int
        Batches fetched before the clock starts (worker start-up excluded).

    Returns
    -------
    dict
        ``num_workers``, ``images`` (timed), ``seconds``, ``images_per_s``.
    """
    from mxnet import gluon

    from ..graph import mxnet_compat

    ds = FaceRecordDataset(rec_path)
    if len(ds) == 0:
        raise ValueError("%s: no images" % ds.rec_path)
    transform = FaceTransform(flip=True) if transform is None else transform
    data = ds.transform_first(transform)
    wanted = len(ds) if num_images is None else int(num_images)
    total_batches = warmup_batches + max(1, -(-wanted // batch_size))
    # Draw with replacement so any count can be timed on a small file.
    order = np.random.default_rng(0).integers(0, len(ds), size=total_batches * batch_size)
    batch_sampler = gluon.data.BatchSampler(_Indices(order), batch_size, "discard")
    loader = gluon.data.DataLoader(data, batch_sampler=batch_sampler, num_workers=num_workers)
    images = 0
    start = time.perf_counter() if warmup_batches <= 0 else None
    try:
        for b, (x, _) in enumerate(loader):
            x.wait_to_read()
            if b < warmup_batches:
                if b + 1 == warmup_batches:
                    start = time.perf_counter()
                continue
            images += x.shape[0]
        seconds = time.perf_counter() - start
    finally:
        mxnet_compat.close_data_loader(loader)
    return {"num_workers": int(num_workers), "images": images, "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else float("inf")}

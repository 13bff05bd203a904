"""Deterministic, resumable batches of training images.

The order of an epoch and its random mirrors are a pure function of
``(seed, epoch)``: epoch ``e`` draws a permutation and one flip bit per image
from ``numpy.random.default_rng([seed, e])``.  A run resumed at global step
``k`` therefore sees exactly the batches the uninterrupted run saw from step
``k`` on, however many DataLoader workers decode them, and no random state has
to be saved.

With several workers of a distributed job (``num_parts > 1``), each takes the
positions ``part, part + num_parts, ...`` of the same permutation, and every
part has the same number of batches (extra images are dropped), so that
``dist_sync`` workers step together.  The last incomplete batch of an epoch is
dropped too: every step has the same batch shape (a hybridized graph keeps one
shape) and divides evenly over the devices.
"""
import numpy as onp

__all__ = ["EpochBatches", "FlipDataset", "batches_per_epoch"]


def batches_per_epoch(num_images, batch_size, num_parts=1):
    """Steps per epoch: ``(num_images // num_parts) // batch_size``."""
    return (int(num_images) // int(num_parts)) // int(batch_size)


class FlipDataset:
    """``2N`` virtual items over a dataset of ``N``: item ``i + N`` is item ``i`` mirrored.

    Mirroring happens before ``transform`` (``image[:, ::-1]`` on HWC). Picklable
    (for DataLoader workers) as long as ``dataset`` and ``transform`` are.

    Parameters
    ----------
    dataset : sequence
        ``dataset[i] -> (image (H, W, 3) uint8, label int)``.
    transform : callable
        ``image (H, W, 3) uint8 -> (3, H', W') float32``.
    """

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform
        self._n = len(dataset)

    def __len__(self):
        return 2 * self._n

    def __getitem__(self, i):
        flip = i >= self._n
        image, label = self.dataset[i - self._n if flip else i]
        if flip:
            image = onp.ascontiguousarray(image[:, ::-1])
        return self.transform(image), onp.float32(label)


class EpochBatches:
    """Batch sampler over :class:`FlipDataset` indices for one epoch.

    Iterating yields lists of ``batch_size`` indices into a :class:`FlipDataset`
    (``i`` or ``i + N`` for a mirrored image), starting at batch ``start``.

    Parameters
    ----------
    num_images : int
        ``N``, images in the underlying dataset.
    batch_size : int
    epoch : int
        0-based epoch number (selects the permutation).
    seed : int
    flip : bool
        Draw a random mirror bit per image (probability 0.5).
    start : int
        First batch to yield (for resuming inside an epoch).
    part, num_parts : int
        This worker's share of the epoch in a distributed job.
    """

    def __init__(self, num_images, batch_size, epoch, seed=0, flip=True, start=0, part=0,
                 num_parts=1):
        self.num_images = int(num_images)
        self.batch_size = int(batch_size)
        self.epoch = int(epoch)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.start = int(start)
        self.part = int(part)
        self.num_parts = int(num_parts)
        self.num_batches = batches_per_epoch(num_images, batch_size, num_parts)

    def indices(self):
        """All ``(num_batches, batch_size)`` indices of this worker's epoch."""
        rng = onp.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_images)
        flips = rng.random(self.num_images) < 0.5
        if self.flip:
            order = order + self.num_images * flips[order]
        mine = order[self.part::self.num_parts]
        used = self.num_batches * self.batch_size
        return mine[:used].reshape(self.num_batches, self.batch_size)

    def __iter__(self):
        for row in self.indices()[self.start:]:
            yield row.tolist()

    def __len__(self):
        return max(0, self.num_batches - self.start)

"""Deterministic, resumable epoch batches."""
import numpy as onp

from gluon_face.training.loader import EpochBatches, FlipDataset, batches_per_epoch


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = EpochBatches(50, 8, epoch=3, seed=1).indices()
    b = EpochBatches(50, 8, epoch=3, seed=1).indices()
    c = EpochBatches(50, 8, epoch=4, seed=1).indices()
    onp.testing.assert_array_equal(a, b)
    assert not onp.array_equal(a, c)
    assert a.shape == (6, 8)
    # each image at most once (flipped index i + N stands for image i)
    assert len(set((a % 50).ravel().tolist())) == 48


def test_start_skips_batches():
    full = list(EpochBatches(50, 8, epoch=1, seed=0))
    tail = list(EpochBatches(50, 8, epoch=1, seed=0, start=4))
    assert tail == full[4:]
    assert len(EpochBatches(50, 8, epoch=1, start=4)) == 2


def test_no_flip_gives_plain_indices():
    idx = EpochBatches(30, 5, epoch=0, flip=False).indices()
    assert idx.max() < 30
    assert sorted(idx.ravel().tolist()) == list(range(30))


def test_parts_are_disjoint_and_equal_length():
    parts = [EpochBatches(50, 4, epoch=0, part=p, num_parts=3).indices() for p in range(3)]
    assert all(p.shape == (4, 4) for p in parts)
    seen = onp.concatenate([p.ravel() for p in parts]) % 50
    assert len(set(seen.tolist())) == seen.size
    assert batches_per_epoch(50, 4, 3) == 4


def test_flip_dataset_mirrors_second_half():
    images = [onp.arange(12, dtype=onp.uint8).reshape(2, 2, 3) + 10 * i for i in range(3)]
    ds = FlipDataset([(im, i) for i, im in enumerate(images)], transform=lambda x: x)
    assert len(ds) == 6
    img, label = ds[4]
    assert label == 1
    onp.testing.assert_array_equal(img, images[1][:, ::-1])
    onp.testing.assert_array_equal(ds[1][0], images[1])

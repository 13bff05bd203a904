"""Transforms: values, shapes, randomness per process, picklability."""
import pickle

import numpy as np
import pytest

from gluon_face.data import (
    CenterCrop,
    FaceTransform,
    RandomCrop,
    RandomFlipLeftRight,
    Resize,
    normalize_image,
)


def _image(h=6, w=5):
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_normalize_matches_naive_formula():
    image = _image()
    out = normalize_image(image)
    assert out.shape == (3, 6, 5) and out.dtype == np.float32
    for c in range(3):
        for y in range(6):
            for x in range(5):
                assert out[c, y, x] == np.float32((float(image[y, x, c]) - 127.5) / 128.0)
    batch = normalize_image(np.stack([image, image[::-1]]))
    assert batch.shape == (2, 3, 6, 5)
    np.testing.assert_array_equal(batch[1], normalize_image(image[::-1]))
    ends = normalize_image(np.array([[[0, 255, 128]]], np.uint8)).ravel()
    np.testing.assert_allclose(ends, [-127.5 / 128, 127.5 / 128, 0.5 / 128])


def test_face_transform_no_flip_is_normalize():
    image = _image()
    np.testing.assert_array_equal(FaceTransform(flip=False)(image), normalize_image(image))


def test_flip_is_a_mirror_and_about_half_the_time():
    image = _image()
    t = RandomFlipLeftRight(seed=3)
    outs = [t(image) for _ in range(400)]
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    kept = [np.array_equal(o, image) for o in outs]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 150 < sum(flipped) < 250
    # seeded: reproducible
    t2 = RandomFlipLeftRight(seed=3)
    assert [np.array_equal(t2(image), image[:, ::-1]) for _ in range(400)] == flipped
    assert sum(np.array_equal(RandomFlipLeftRight(p=0)(image), image) for _ in range(20)) == 20


def test_crop_and_resize():
    image = _image(8, 10)
    np.testing.assert_array_equal(CenterCrop((4, 6))(image), image[2:6, 2:8])
    crops = {RandomCrop(4, seed=s)(image).tobytes() for s in range(20)}
    assert len(crops) > 3
    for s in range(5):
        c = RandomCrop(4, seed=s)(image)
        assert c.shape == (4, 4, 3)
        assert any(np.array_equal(c, image[y:y + 4, x:x + 4]) for y in range(5) for x in range(7))
    assert Resize(16)(image).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="cannot crop 9x9 out of a 8x10"):
        CenterCrop(9)(image)
    out = FaceTransform(flip=False, crop=(6, 8), image_size=12)(image)
    assert out.shape == (3, 12, 12) and out.dtype == np.float32


def test_transforms_pickle_without_state():
    t = FaceTransform(flip=True, crop=4, random_crop=True, seed=1)
    t(_image())
    clone = pickle.loads(pickle.dumps(t))
    assert clone(_image()).shape == (3, 4, 4)
    assert repr(clone).startswith("FaceTransform(")


class _Same:
    """A dataset of one asymmetric image, repeated (picklable)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), 0


def test_workers_flip_independently():
    """Forked DataLoader workers must not replay one random stream."""
    from mxnet import gluon

    ds = gluon.data.SimpleDataset(_Same(64)).transform_first(FaceTransform(flip=True, seed=0))
    loader = gluon.data.DataLoader(ds, batch_size=16, num_workers=2)
    plain = normalize_image(_Same(1)[0][0])
    patterns = []
    for x, _ in loader:
        x = x.asnumpy()
        flipped = [not np.array_equal(xi, plain) for xi in x]
        assert all(np.array_equal(xi, plain[:, :, ::-1]) for xi, f in zip(x, flipped) if f)
        patterns.append(tuple(flipped))
    assert len(set(patterns)) == len(patterns) == 4

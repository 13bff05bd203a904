"""Fixtures of the data tests: image folders and record files made in tmp_path."""
import importlib

import numpy as np
import pytest

from gluon_face.data._image import encode_image


def colour_image(label, index, size=(24, 20)):
    """A deterministic RGB image whose colour encodes (label, index).

    Channel 0 is bright and channels 1/2 dark, so a BGR/RGB mix-up is visible.
    """
    rng = np.random.default_rng(1000 * label + index)
    image = np.empty(size + (3,), dtype=np.uint8)
    image[:, :, 0] = 200 + 5 * (label % 10)
    image[:, :, 1] = 20 + 3 * (index % 20)
    image[:, :, 2] = 60
    # a smooth pattern, so images of one class differ (and JPEG stays close)
    image[: size[0] // 2, : size[1] // 2, 1] += rng.integers(0, 40, dtype=np.uint8)
    return image


@pytest.fixture
def image_folder(tmp_path):
    """``make(counts, size=(24, 20), fmt='png', name='faces')`` -> folder of identity folders.

    Identity ``c`` is folder ``id_<c>`` holding ``counts[c]`` images
    ``img_<i>.<fmt>``; returns the folder path and the images as a dict
    ``{(label, i): array}``.
    """
    def make(counts, size=(24, 20), fmt="png", name="faces"):
        root = tmp_path / name
        images = {}
        for label, n in enumerate(counts):
            folder = root / ("id_%02d" % label)
            folder.mkdir(parents=True)
            for i in range(n):
                image = colour_image(label, i, size)
                images[(label, i)] = image
                (folder / ("img_%02d.%s" % (i, fmt))).write_bytes(encode_image(image, fmt))
        return str(root), images
    return make


@pytest.fixture
def tool():
    """``tool('pack_rec')`` -> :mod:`gluon_face.commands.pack_rec`."""
    def load(name):
        return importlib.import_module("gluon_face.commands." + name)
    return load


@pytest.fixture(name="colour_image")
def colour_image_fixture():
    """:func:`colour_image`, for tests (conftest modules are not importable)."""
    return colour_image

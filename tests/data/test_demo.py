"""The built-in digits demo set: content, determinism, caching, rebuild on corruption."""
import json
import os

import numpy as np
import pytest

from gluon_face.data import FaceRecordDataset, demo_data_dir, load_bin
from gluon_face.data import demo as demo_mod


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_data_dir(str(tmp_path_factory.mktemp("cache")))


def _reference_images():
    """The demo's images recomputed independently: 8x8 digits -> 32x32 grey -> RGB."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(np.rint(digits.images / 16.0 * 255.0), 0, 255).astype(np.uint8)
    up = [cv2.resize(g, (32, 32), interpolation=cv2.INTER_CUBIC) for g in grey]
    return {np.repeat(u[:, :, None], 3, axis=2).tobytes(): int(t)
            for u, t in zip(up, digits.target)}


def test_layout_and_content(demo_dir):
    assert os.path.basename(demo_dir) == "demo-v1"
    assert sorted(os.listdir(demo_dir)) == ["closed_set.bin", "open_set.bin", "property",
                                            "stamp.json", "train.idx", "train.rec"]
    with open(os.path.join(demo_dir, "property")) as f:
        assert f.read().strip() == "7,32,32"
    ref = _reference_images()
    ds = FaceRecordDataset(demo_dir)
    assert ds.layout == "insightface" and ds.num_classes == 7 and ds.image_size == (32, 32)
    labels = ds.labels()
    counts = np.bincount(labels, minlength=7)
    assert counts.sum() == len(ds) and counts.min() > 100
    # every training image is a real digit of its own class (PNG: exact bytes)
    train_keys = set()
    for i in range(0, len(ds), 7):
        image, label = ds[i]
        assert ref[image.tobytes()] == label
    for i in range(len(ds)):
        train_keys.add(ds[i][0].tobytes())
    # all images of digits 0-6 are either in training or held out
    n06 = sum(1 for t in ref.values() if t < 7)
    assert len(ds) + 7 * demo_mod.HOLDOUT_PER_CLASS == n06

    for name, allowed in (("open_set.bin", {7, 8, 9}), ("closed_set.bin", set(range(7)))):
        images, issame = load_bin(os.path.join(demo_dir, name))
        assert images.shape == (1200, 32, 32, 3) and issame.shape == (600,)
        classes = np.array([ref[im.tobytes()] for im in images]).reshape(-1, 2)
        assert set(classes.ravel()) == allowed
        np.testing.assert_array_equal(classes[:, 0] == classes[:, 1], issame)
        # balanced in each of the 10 contiguous folds of the protocol
        assert issame.reshape(10, 60).sum(axis=1).tolist() == [30] * 10
        pairs = {tuple(sorted((a.tobytes(), b.tobytes())))
                 for a, b in zip(images[0::2], images[1::2])}
        assert len(pairs) == 600  # no pair repeated
        if name == "closed_set.bin":  # held-out images, never trained on
            assert not train_keys & {im.tobytes() for im in images}


def test_reopen_does_not_rebuild(demo_dir):
    before = {n: os.stat(os.path.join(demo_dir, n)).st_mtime_ns for n in os.listdir(demo_dir)}
    assert demo_data_dir(os.path.dirname(demo_dir)) == demo_dir
    after = {n: os.stat(os.path.join(demo_dir, n)).st_mtime_ns for n in os.listdir(demo_dir)}
    assert before == after


def test_env_var_and_corruption_rebuild(tmp_path, monkeypatch, demo_dir):
    monkeypatch.setenv("GLUON_FACE_CACHE", str(tmp_path))
    path = demo_data_dir()
    assert path == str(tmp_path / "demo-v1")
    # deterministic: same checksums as the module's build
    with open(os.path.join(demo_dir, "stamp.json")) as f:
        want = json.load(f)["files"]
    with open(os.path.join(path, "stamp.json")) as f:
        assert json.load(f)["files"] == want
    # flip one byte in the middle of train.rec (same size: only the checksum sees it)
    rec = os.path.join(path, "train.rec")
    with open(rec, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert demo_mod.verify_demo_data(path).endswith("checksum differs from the stamp")
    assert demo_data_dir() == path
    assert demo_mod.verify_demo_data(path) is None
    # a missing file and a missing stamp are rebuilt too
    os.remove(os.path.join(path, "open_set.bin"))
    assert "open_set.bin: missing" in demo_mod.verify_demo_data(path)
    demo_data_dir()
    os.remove(os.path.join(path, "stamp.json"))
    demo_data_dir()
    with open(os.path.join(path, "stamp.json")) as f:
        assert json.load(f)["files"] == want
    # no temporary build folders are left behind
    assert sorted(os.listdir(tmp_path)) == ["demo-v1"]


def test_interrupted_build_leaves_no_valid_looking_folder(tmp_path, monkeypatch):
    def boom(out_dir):
        with open(os.path.join(out_dir, "train.rec"), "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_mod, "build_demo_data", boom)
    with pytest.raises(KeyboardInterrupt):
        demo_data_dir(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_build_demo_pairs_extends_the_demo_pair_sets(tmp_path, demo_dir):
    from gluon_face.data.demo import build_demo_pairs

    # 600 pairs: the demo's own files, byte for byte (same images, same generator draws)
    build_demo_pairs(str(tmp_path / "600"), 600)
    for name in ("open_set.bin", "closed_set.bin"):
        with open(tmp_path / "600" / name, "rb") as a, open(os.path.join(demo_dir, name),
                                                             "rb") as b:
            assert a.read() == b.read(), name
    build_demo_pairs(str(tmp_path / "big"), 2000)
    everything, _, _, _, holdout_groups, _ = demo_mod._split()
    held = {everything[i].tobytes() for g in holdout_groups for i in g}
    assert len(held) == 7 * demo_mod.HOLDOUT_PER_CLASS
    images, issame = load_bin(str(tmp_path / "big" / "closed_set.bin"))
    assert len(issame) == 2000 and issame.reshape(10, -1).sum(axis=1).tolist() == [100] * 10
    # more pairs of the held-out images only: none of them was trained on
    used = {im.tobytes() for im in images}
    small = {im.tobytes() for im in load_bin(os.path.join(demo_dir, "closed_set.bin"))[0]}
    assert used <= held and small <= held and len(used) > len(small)
    ds = FaceRecordDataset(demo_dir)
    assert not used & {ds[i][0].tobytes() for i in range(len(ds))}
    pairs = {tuple(sorted((images[2 * i].tobytes(), images[2 * i + 1].tobytes())))
             for i in range(len(issame))}
    assert len(pairs) == 2000  # distinct pairs
    with pytest.raises(ValueError, match="multiple of 20"):
        build_demo_pairs(str(tmp_path / "bad"), 610)

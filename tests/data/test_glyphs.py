"""The built-in glyph identities: splits, names, near-duplicates, determinism, bad fonts.

The set is built once per session (the ``glyph_dir`` fixture of tests/conftest.py,
in the cache ``tools/train.py`` uses); the determinism test builds it a second time.
"""
import json
import os
import shutil
import unicodedata

import numpy as np
import pytest

from gluon_face.data import FaceRecordDataset, load_bin, read_dataset_info
from gluon_face.data import glyphs as glyph_mod
from gluon_face.evaluation import verification_accuracy

pytestmark = pytest.mark.slow


def _rec_images(folder, rec="train.rec"):
    """{image bytes: label name} of every image of a record file."""
    ds = FaceRecordDataset(os.path.join(folder, rec))
    return {ds[i][0].tobytes(): ds.label_name(ds.label_of(i)) for i in range(len(ds))}, ds


@pytest.fixture(scope="module")
def content(glyph_dir):
    train, train_ds = _rec_images(glyph_dir)
    opened, open_ds = _rec_images(glyph_dir, os.path.join("open_set", "open_set.rec"))
    return {"train": train, "train_ds": train_ds, "open": opened, "open_ds": open_ds}


def test_layout_and_description(glyph_dir):
    files = sorted(os.listdir(glyph_dir))
    assert files == sorted(["train.rec", "train.idx", "property", "labels.txt", "open_set.bin",
                            "closed_set.bin", "open_set", "dataset.json", "stamp.json"])
    info = read_dataset_info(glyph_dir)
    # the set says itself that it is not mirror-symmetric
    assert info["flip"] is False and info["flip_test"] is False
    assert info["identification"] == "open_set/open_set.rec"
    assert info["open_identities"] == glyph_mod.NUM_OPEN_IDENTITIES
    assert 1000 < info["train_identities"] < 1600
    with open(os.path.join(glyph_dir, "property")) as f:
        assert f.read().strip() == "%d,32,32" % info["train_identities"]


def test_labels_name_code_points(content, glyph_dir):
    for ds in (content["train_ds"], content["open_ds"]):
        assert ds.layout == "insightface" and ds.image_size == (32, 32)
        assert len(ds.label_names) == ds.num_classes
        for name in ds.label_names:
            code, _, uname = name.partition(" ")
            assert code.startswith("U+") and len(code) >= 6
            cp = int(code[2:], 16)
            # the optional Unicode name is the character's own
            assert uname == unicodedata.name(chr(cp), "")
            assert unicodedata.category(chr(cp)) not in ("Mn", "Me", "Mc", "Zs", "Cc", "Cf")
        # 12 to 16 faces per identity, as selected
        counts = np.bincount(ds.labels(), minlength=ds.num_classes)
        if ds is content["open_ds"]:
            assert counts.min() >= glyph_mod.MIN_FACES and counts.max() <= 16
        else:  # two faces of each training identity are held out
            assert counts.min() >= glyph_mod.MIN_FACES - glyph_mod.CLOSED_HOLDOUT
            assert counts.max() <= 16 - glyph_mod.CLOSED_HOLDOUT


def test_training_and_open_identities_are_disjoint(content):
    train_names = set(content["train_ds"].label_names)
    open_names = set(content["open_ds"].label_names)
    assert not train_names & open_names
    assert len(train_names) == content["train_ds"].num_classes
    # and no open-set photo is a training photo
    assert not set(content["train"]) & set(content["open"])


def _training_photos(content):
    """{photo bytes: identity name} of every photo of every training identity, held-out
    ones included, taken again from the fonts (the closed set's photos are in no .rec)."""
    names = content["train_ds"].label_names
    by_cp = {int(n.split(" ")[0][2:], 16): n for n in names}
    paths = glyph_mod.glyph_font_files()
    drawings = glyph_mod.draw_glyphs(paths, glyph_mod.font_code_points(paths), sorted(by_cp))
    return {glyph_mod.photo_of(d, cp, face).tobytes(): by_cp[cp]
            for (cp, face), d in drawings.items()}


def test_pair_sets(content, glyph_dir):
    """Open-set pairs: photos of open-set identities.  Closed-set pairs: held-out photos of
    training identities (never in train.rec).  Same/different as the names say, balanced
    in every fold of the protocol, no pair twice."""
    every_training_photo = _training_photos(content)
    assert set(content["train"]) <= set(every_training_photo)
    for name, num in (("open_set.bin", glyph_mod.NUM_OPEN_PAIRS),
                      ("closed_set.bin", glyph_mod.NUM_CLOSED_PAIRS)):
        images, issame = load_bin(os.path.join(glyph_dir, name))
        assert images.shape == (2 * num, 32, 32, 3)
        assert issame.reshape(10, -1).sum(axis=1).tolist() == [num // 20] * 10
        keys = [im.tobytes() for im in images]
        if name == "open_set.bin":
            labels = [content["open"][k] for k in keys]
        else:
            assert not set(keys) & set(content["train"])
            labels = [every_training_photo[k] for k in keys]
        labels = np.array(labels).reshape(-1, 2)
        np.testing.assert_array_equal(labels[:, 0] == labels[:, 1], issame)
        pairs = {tuple(sorted(p)) for p in zip(keys[0::2], keys[1::2])}
        assert len(pairs) == num and all(a != b for a, b in pairs)


def test_no_near_duplicate_identities(content):
    """Independent check of the selection: face-averaged drawings of all kept identities
    (training and open set together) are at most DUPLICATE_COSINE apart."""
    from PIL import ImageFont

    names = content["train_ds"].label_names + content["open_ds"].label_names
    cps = [int(n.split(" ")[0][2:], 16) for n in names]
    paths = glyph_mod.glyph_font_files()
    cmaps = glyph_mod.font_code_points(paths)
    fonts = [ImageFont.truetype(p, 40) for p in paths]
    means = []
    for cp in cps:
        stack = [glyph_mod.render_canonical(font, cp) for font, cmap in zip(fonts, cmaps)
                 if cp in cmap]
        stack = np.stack([s for s in stack if s is not None]).astype(np.float64)
        means.append(stack.reshape(len(stack), 32, 2, 32, 2).mean(axis=(0, 2, 4)).ravel())
    means = np.stack(means)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    gram = means @ means.T
    np.fill_diagonal(gram, -1)
    assert gram.max() <= glyph_mod.DUPLICATE_COSINE + 1e-9
    # Latin A stays, its Greek and Cyrillic look-alikes went
    assert 0x41 in cps and 0x391 not in cps and 0x410 not in cps


def test_raw_pixels_are_far_from_solving_the_open_set(glyph_dir):
    """The set is hard for pixels: the floor a trained network must clear by 25 points."""
    images, issame = load_bin(os.path.join(glyph_dir, "open_set.bin"))
    x = (images.reshape(len(images), -1).astype(np.float64) - 127.5) / 128
    x -= x.mean(axis=1, keepdims=True)
    assert 0.55 < verification_accuracy(x, issame).accuracy < 0.70


def test_two_builds_are_identical(glyph_dir, tmp_path):
    again = glyph_mod.glyph_data_dir(str(tmp_path))
    with open(os.path.join(glyph_dir, "stamp.json")) as f:
        want = json.load(f)["files"]
    with open(os.path.join(again, "stamp.json")) as f:
        assert json.load(f)["files"] == want


def test_corrupt_cache_is_detected(glyph_dir, tmp_path):
    copy = str(tmp_path / glyph_mod.GLYPHS_VERSION)
    shutil.copytree(glyph_dir, copy)
    assert glyph_mod.verify_glyph_data(copy) is None
    rec = os.path.join(copy, "open_set", "open_set.rec")
    with open(rec, "r+b") as f:
        f.seek(4000)
        byte = f.read(1)
        f.seek(4000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert glyph_mod.verify_glyph_data(copy).endswith("checksum differs from the stamp")
    os.remove(os.path.join(copy, "labels.txt"))
    assert "labels.txt: missing" in glyph_mod.verify_glyph_data(copy)


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    """glyph_data_dir rebuilds a folder that fails its stamp (a stand-in build keeps it fast)."""
    calls = []

    def fake_build(folder, font_dir=None, progress=None):
        calls.append(folder)
        for name in glyph_mod._FILES:
            path = os.path.join(folder, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(name)
        return {"stand-in": True}

    monkeypatch.setattr(glyph_mod, "build_glyph_data", fake_build)
    path = glyph_mod.glyph_data_dir(str(tmp_path))
    assert len(calls) == 1 and glyph_mod.verify_glyph_data(path) is None
    assert glyph_mod.glyph_data_dir(str(tmp_path)) == path and len(calls) == 1
    with open(os.path.join(path, "property"), "a") as f:
        f.write("x")
    assert glyph_mod.glyph_data_dir(str(tmp_path)) == path and len(calls) == 2
    assert glyph_mod.verify_glyph_data(path) is None
    assert sorted(os.listdir(tmp_path)) == [glyph_mod.GLYPHS_VERSION]


@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_bad_font_is_named(tmp_path, problem):
    fonts = glyph_mod.glyph_font_files()
    for path in fonts:
        shutil.copy(path, tmp_path)
    bad = tmp_path / glyph_mod.GLYPH_FACES[5]
    if problem == "missing":
        bad.unlink()
    else:
        bad.write_bytes(b"not a font at all" * 10)
    with pytest.raises(glyph_mod.GlyphFontError) as info:
        glyph_mod.build_glyph_data(str(tmp_path / "out"), font_dir=str(tmp_path))
    message = str(info.value)
    assert str(bad) in message and "\n" not in message
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_photograph_is_seeded_and_varies():
    paths = glyph_mod.glyph_font_files()
    from PIL import ImageFont

    drawing = glyph_mod.render_canonical(ImageFont.truetype(paths[0], 40), ord("g"))
    assert drawing.shape == (64, 64) and drawing.max() == 255
    a = glyph_mod.photograph(drawing, np.random.default_rng(1))
    b = glyph_mod.photograph(drawing, np.random.default_rng(1))
    c = glyph_mod.photograph(drawing, np.random.default_rng(2))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    # dark ink on lighter paper: the darkest pixels are ink
    assert a.mean() > np.percentile(a, 5) + 20

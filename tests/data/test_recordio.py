"""Record files: our writer, MXNet's im2rec, an independent insightface-layout packer."""
import os
import pickle
import struct
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from gluon_face.data import (
    FaceRecordDataset,
    FaceRecordWriter,
    FaceTransform,
    RecordFormatError,
    pack_folder,
    read_labels,
    read_property,
    write_face_rec,
)
from gluon_face.data._image import encode_image
from gluon_face.data.recordio import IndexedRecordReader

from ..conftest import require

MAGIC = struct.pack("<I", 0xCED7230A)


def _samples(colour_image, counts, size=(24, 20), fmt="png"):
    return [(label, encode_image(colour_image(label, i, size), fmt))
            for label, n in enumerate(counts) for i in range(n)]


def _files(folder):
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- round trip


def test_round_trip_writer_reader(tmp_path, colour_image):
    counts = [3, 1, 4, 2]
    info = write_face_rec(tmp_path / "train", _samples(colour_image, counts), (24, 20))
    assert info["num_images"] == 10 and info["num_classes"] == 4
    assert _files(tmp_path) == ["property", "train.idx", "train.rec"]
    assert read_property(tmp_path / "property") == (4, 24, 20)
    for path in (tmp_path, tmp_path / "train.rec"):
        ds = FaceRecordDataset(str(path))
        assert ds.layout == "insightface"
        assert len(ds) == 10 and ds.num_classes == 4 and ds.image_size == (24, 20)
        expected = [(label, i) for label, n in enumerate(counts) for i in range(n)]
        for j, (label, i) in enumerate(expected):
            image, got = ds[j]
            assert got == label and type(got) is int
            assert image.dtype == np.uint8 and image.shape == (24, 20, 3)
            np.testing.assert_array_equal(image, colour_image(label, i))  # PNG: lossless
        assert ds.identity_ranges.tolist() == [[1, 4], [4, 5], [5, 9], [9, 11]]
        assert ds.labels().tolist() == [lab for lab, _ in expected]
    with pytest.raises(IndexError):
        ds[10]
    assert ds[-1][1] == 3


def test_our_file_reads_with_mxnet_like_insightface(tmp_path, colour_image):
    """What insightface's reader does with MXNet's RecordIO calls works on our files."""
    counts = [2, 3]
    write_face_rec(tmp_path / "train", _samples(colour_image, counts, fmt="jpg"), (24, 20))
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"),
                                        str(tmp_path / "train.rec"), "r")
    header, _ = mx.recordio.unpack(rec.read_idx(0))
    assert header.flag == 2
    first, end = int(header.label[0]), int(header.label[1])
    assert (first, end) == (6, 8)
    for c, key in enumerate(range(first, end)):
        h, body = mx.recordio.unpack(rec.read_idx(key))
        assert body == b""
        start, stop = int(h.label[0]), int(h.label[1])
        for k in range(start, stop):
            hk, img = mx.recordio.unpack_img(rec.read_idx(k))  # BGR, as cv2 decodes
            assert hk.label == c
            diff = np.abs(img[:, :, ::-1].astype(int) - colour_image(c, k - start))
            assert diff.mean() < 3
    rec.close()


def test_labels_must_be_grouped_in_order(tmp_path):
    with pytest.raises(ValueError, match="labels must run 0, 1, 2"):
        write_face_rec(tmp_path / "train", [(0, b"x" * 10), (2, b"y" * 10)], (8, 8))
    assert _files(tmp_path) == []


def test_interrupted_writer_leaves_nothing(tmp_path, colour_image):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        with FaceRecordWriter(tmp_path / "train", (24, 20)) as w:
            for label, buf in _samples(colour_image, [2, 2]):
                w.add(label, buf)
            raise KeyboardInterrupt
    assert _files(tmp_path) == ["keep.txt"]


def test_rewrite_replaces_old_files(tmp_path, colour_image):
    write_face_rec(tmp_path / "train", _samples(colour_image, [2, 2, 2]), (24, 20))
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1]), (24, 20))
    ds = FaceRecordDataset(str(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 2
    assert _files(tmp_path) == ["property", "train.idx", "train.rec"]


# --------------------------------------------------------------------------- MXNet's files


def _raw_insightface_pack(colour_image, folder, counts, header_first=True):
    """An insightface-layout file made with MXNet's RecordIO calls only (not our writer)."""
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(folder, "train.idx"),
                                        os.path.join(folder, "train.rec"), "w")
    n = sum(counts)
    ranges, key = [], 1
    for c in counts:
        ranges.append((key, key + c))
        key += c
    header0 = mx.recordio.pack(mx.recordio.IRHeader(2, [n + 1, n + 1 + len(counts)], 0, 0), b"")
    if header_first:
        rec.write_idx(0, header0)
    key = 1
    for label, c in enumerate(counts):
        for i in range(c):
            bgr = colour_image(label, i)[:, :, ::-1]
            rec.write_idx(key, mx.recordio.pack_img(
                mx.recordio.IRHeader(0, float(label), key, 0), bgr, quality=95, img_fmt=".jpg"))
            key += 1
    for start, stop in ranges:
        rec.write_idx(key, mx.recordio.pack(
            mx.recordio.IRHeader(2, [start, stop], key, 0), b""))
        key += 1
    if not header_first:
        rec.write_idx(0, header0)
    rec.close()
    with open(os.path.join(folder, "property"), "w") as f:
        f.write("%d,24,20" % len(counts))


@pytest.mark.parametrize("header_first", [True, False])
def test_reads_independent_insightface_pack(tmp_path, header_first, colour_image):
    counts = [2, 4, 1]
    _raw_insightface_pack(colour_image, str(tmp_path), counts, header_first)
    ds = FaceRecordDataset(str(tmp_path / "train.rec"))
    assert ds.layout == "insightface"
    assert len(ds) == 7 and ds.num_classes == 3 and ds.image_size == (24, 20)
    j = 0
    for label, c in enumerate(counts):
        for i in range(c):
            image, got = ds[j]
            assert got == label
            # JPEG round trip, and RGB order restored from cv2's BGR
            assert np.abs(image.astype(int) - colour_image(label, i)).mean() < 3
            j += 1


def test_reads_plain_pack_img_file(tmp_path, colour_image):
    """A plain im2rec-style file: every record an image, keys from 0, no property."""
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "data.idx"), str(tmp_path / "data.rec"),
                                        "w")
    labels = [2, 0, 1, 2, 0]
    for key, label in enumerate(labels):
        bgr = colour_image(label, key)[:, :, ::-1]
        rec.write_idx(key, mx.recordio.pack_img(
            mx.recordio.IRHeader(0, float(label), key, 0), bgr, quality=95, img_fmt=".jpg"))
    # a vector label (im2rec --pack-label): the first entry is the class
    rec.write_idx(5, mx.recordio.pack_img(
        mx.recordio.IRHeader(0, np.array([1, 7, 9], np.float32), 5, 0),
        colour_image(1, 5)[:, :, ::-1], quality=95, img_fmt=".png"))
    rec.close()
    ds = FaceRecordDataset(str(tmp_path / "data.rec"))
    assert ds.layout == "im2rec" and ds.num_classes_source == "max label + 1"
    assert len(ds) == 6 and ds.num_classes == 3 and ds.image_size == (24, 20)
    assert [ds[i][1] for i in range(6)] == labels + [1]
    np.testing.assert_array_equal(ds[5][0], colour_image(1, 5))


def _im2rec_script():
    path = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
    require("im2rec", os.path.isfile(path), "this mxnet wheel does not ship tools/im2rec.py")
    return path


def test_reads_file_made_by_mxnet_im2rec(tmp_path, image_folder):
    """.lst -> .rec with MXNet's own tools/im2rec.py (it re-encodes with cv2)."""
    script = _im2rec_script()
    root, images = image_folder([3, 2, 4], fmt="png")
    prefix = str(tmp_path / "im2rec")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, script, "--list", "--recursive", prefix, root],
                   check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, script, "--num-thread", "1", prefix, root],
                   check=True, capture_output=True, env=env)
    # .lst lines: index<TAB>label<TAB>relative path (shuffled by default)
    entries = {}
    with open(prefix + ".lst") as f:
        for line in f:
            idx, label, rel = line.strip().split("\t")
            entries[int(idx)] = (int(float(label)), rel)
    ds = FaceRecordDataset(prefix + ".rec")
    assert ds.layout == "im2rec"
    assert len(ds) == 9 and ds.num_classes == 3
    for i, key in enumerate(ds.image_keys):
        image, label = ds[i]
        want_label, rel = entries[int(key)]
        assert label == want_label
        folder, name = rel.split("/")
        source = images[(int(folder[3:]), int(name[4:6]))]
        assert label == int(folder[3:])
        assert np.abs(image.astype(int) - source).mean() < 3


def test_dataloader_with_workers(tmp_path, colour_image):
    counts = [5, 6, 5]
    write_face_rec(tmp_path / "train", _samples(colour_image, counts, size=(16, 16)), (16, 16))
    ds = FaceRecordDataset(str(tmp_path))
    loader = gluon.data.DataLoader(ds.transform_first(FaceTransform(flip=False)),
                                   batch_size=4, num_workers=2, shuffle=False)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.asnumpy())
        ys.append(y.asnumpy())
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    assert x.shape == (16, 3, 16, 16) and x.dtype == np.float32
    assert y.tolist() == ds.labels().tolist()
    direct = np.stack([(ds[i][0].transpose(2, 0, 1) - 127.5) / 128 for i in range(len(ds))])
    np.testing.assert_allclose(x, direct, atol=1e-6)
    # the dataset pickles without an open file handle
    pickle.loads(pickle.dumps(ds))[3]


# --------------------------------------------------------------------------- container


def test_reader_joins_records_split_at_magic(tmp_path):
    """dmlc splits a record wherever its payload holds the magic word; we rejoin it."""
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "x.idx"), str(tmp_path / "x.rec"), "w")
    payloads = [b"abcd" + MAGIC + b"efgh", MAGIC, MAGIC + MAGIC + b"z", b"xyz" + MAGIC + b"12",
                b"", b"q" * 13, MAGIC * 3]
    for key, p in enumerate(payloads):
        rec.write_idx(key, p)
    rec.close()
    reader = IndexedRecordReader(str(tmp_path / "x.rec"))
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / "x.idx"), str(tmp_path / "x.rec"), "r")
    for key, p in enumerate(payloads):
        assert reader.read(key) == p == theirs.read_idx(key)
    theirs.close()


# --------------------------------------------------------------------------- bad input


def _good(colour_image, tmp_path, counts=(2, 2)):
    write_face_rec(tmp_path / "train", _samples(colour_image, list(counts)), (24, 20))
    return tmp_path / "train.rec"


def test_missing_idx(tmp_path, colour_image):
    rec = _good(colour_image, tmp_path)
    os.remove(tmp_path / "train.idx")
    with pytest.raises(FileNotFoundError, match=r"train\.idx: index file not found"):
        FaceRecordDataset(str(rec))


def test_missing_rec(tmp_path):
    with pytest.raises(FileNotFoundError, match="record file not found"):
        FaceRecordDataset(str(tmp_path / "nope.rec"))


def test_truncated_rec(tmp_path, colour_image):
    rec = _good(colour_image, tmp_path)
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) - 30])
    with pytest.raises(RecordFormatError, match=r"train\.rec.*truncated"):
        FaceRecordDataset(str(rec))


def test_corrupted_rec_names_record(tmp_path, colour_image):
    rec = _good(colour_image, tmp_path)
    offsets = dict(line.split() for line in (tmp_path / "train.idx").read_text().splitlines())
    data = bytearray(rec.read_bytes())
    pos = int(offsets["3"])
    data[pos:pos + 4] = b"JUNK"  # the magic word of record 3
    rec.write_bytes(bytes(data))
    ds = FaceRecordDataset(str(rec))
    ds[0]
    with pytest.raises(RecordFormatError, match=r"train\.rec: record 3: bad magic"):
        ds[2]


def test_corrupted_image_bytes(tmp_path, colour_image):
    rec = _good(colour_image, tmp_path)
    offsets = dict(line.split() for line in (tmp_path / "train.idx").read_text().splitlines())
    data = bytearray(rec.read_bytes())
    pos = int(offsets["2"]) + 8 + 24  # past the chunk head and the image header
    data[pos:pos + 16] = b"\0" * 16  # wipe the PNG signature and IHDR
    rec.write_bytes(bytes(data))
    ds = FaceRecordDataset(str(rec))
    with pytest.raises(RecordFormatError, match=r"record 2: not an image"):
        ds[1]


def test_record_that_is_not_an_image(tmp_path, colour_image):
    def pack(name, extra):
        rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / (name + ".idx")),
                                            str(tmp_path / (name + ".rec")), "w")
        rec.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, 0.0, 0, 0),
                                          encode_image(colour_image(0, 0))))
        rec.write_idx(1, extra)
        rec.close()
        return str(tmp_path / (name + ".rec"))

    ds = FaceRecordDataset(pack("p", mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, 1, 0),
                                                      b"hello, world")))
    assert ds[0][1] == 0
    with pytest.raises(RecordFormatError, match=r"p\.rec: record 1: not an image"):
        ds[1]
    # too short for a record header: found when the labels are scanned at open
    with pytest.raises(RecordFormatError, match=r"q\.rec: record 1: .*too short"):
        FaceRecordDataset(pack("q", b"short"))


def test_labels_outside_property(tmp_path, colour_image):
    # insightface layout: more identity records than property's class count
    _good(colour_image, tmp_path, (1, 1, 1))
    (tmp_path / "property").write_text("2,24,20")
    with pytest.raises(RecordFormatError, match=r"property: says 2 classes.*3 identity"):
        FaceRecordDataset(str(tmp_path))
    # plain file with a property beside it: label 3 with 3 classes
    plain = tmp_path / "plain"
    plain.mkdir()
    rec = mx.recordio.MXIndexedRecordIO(str(plain / "d.idx"), str(plain / "d.rec"), "w")
    for key, label in enumerate([0, 3, 1]):
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0),
                                            encode_image(colour_image(label, key))))
    rec.close()
    (plain / "property").write_text("3,24,20\n")
    ds = FaceRecordDataset(str(plain / "d.rec"))
    assert ds[0][1] == 0
    with pytest.raises(RecordFormatError, match=r"d\.rec: record 1: label 3 is outside \[0, 3\)"):
        ds[1]


def test_property_missing(tmp_path, colour_image):
    _good(colour_image, tmp_path)
    os.remove(tmp_path / "property")
    with pytest.raises(FileNotFoundError, match="property file not found"):
        FaceRecordDataset(str(tmp_path))


@pytest.mark.parametrize("text", ["", "3,112", "three,112,112", "3,112,112,1", "0,112,112",
                                  "3;112;112"])
def test_property_malformed(tmp_path, text, colour_image):
    _good(colour_image, tmp_path)
    (tmp_path / "property").write_text(text)
    with pytest.raises(RecordFormatError, match=r"property: malformed property"):
        FaceRecordDataset(str(tmp_path))


def test_index_malformed(tmp_path, colour_image):
    _good(colour_image, tmp_path)
    (tmp_path / "train.idx").write_text("0\t0\n1\tabc\n")
    with pytest.raises(RecordFormatError, match=r"train\.idx: line 2"):
        FaceRecordDataset(str(tmp_path))


def test_index_of_another_file(tmp_path, colour_image):
    rec = _good(colour_image, tmp_path, (3, 3))
    other = tmp_path / "other"
    other.mkdir()
    write_face_rec(other / "train", _samples(colour_image, [1, 1], size=(40, 40)), (40, 40))
    os.replace(other / "train.idx", tmp_path / "train.idx")
    with pytest.raises(RecordFormatError, match=r"train\.rec"):
        ds = FaceRecordDataset(str(rec))
        for i in range(len(ds)):
            ds[i]


# --------------------------------------------------------------------------- pack_folder


def test_pack_folder_round_trip(tmp_path, image_folder):
    root, images = image_folder([2, 3, 1], fmt="png")
    info = pack_folder(root, tmp_path / "out" / "train")
    assert info["identities"] == ["id_00", "id_01", "id_02"]
    ds = FaceRecordDataset(str(tmp_path / "out"))
    assert len(ds) == 6 and ds.num_classes == 3 and ds.image_size == (24, 20)
    keys = sorted(images)
    for j, (label, i) in enumerate(keys):
        image, got = ds[j]
        assert got == label
        np.testing.assert_array_equal(image, images[(label, i)])
    # deterministic: a second pack is byte-identical
    pack_folder(root, tmp_path / "again" / "train")
    for name in ("train.rec", "train.idx", "property", "labels.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_pack_folder_size_check_and_resize(tmp_path, image_folder):
    root, _ = image_folder([2, 2])
    with pytest.raises(RecordFormatError, match=r"img_00\.png: image is 24x20.*expected 32x32"):
        pack_folder(root, tmp_path / "out" / "train", image_size=32)
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []
    pack_folder(root, tmp_path / "out" / "train", image_size=32, resize=True)
    ds = FaceRecordDataset(str(tmp_path / "out"))
    assert ds[0][0].shape == (32, 32, 3) and ds.image_size == (32, 32)


def test_pack_folder_mixed_sizes(tmp_path, image_folder, colour_image):
    root, _ = image_folder([2, 2])
    odd = os.path.join(root, "id_01", "img_01.png")
    with open(odd, "wb") as f:
        f.write(encode_image(colour_image(1, 1, (30, 30))))
    with pytest.raises(RecordFormatError, match=r"id_01/img_01\.png: image is 30x30"):
        pack_folder(root, tmp_path / "out" / "train")


def test_pack_folder_empty_identity(tmp_path, image_folder):
    root, _ = image_folder([2, 2])
    os.mkdir(os.path.join(root, "id_05"))
    with pytest.raises(RecordFormatError, match=r"id_05: empty identity folder"):
        pack_folder(root, tmp_path / "out" / "train")
    assert not (tmp_path / "out").exists()


def test_pack_folder_unreadable_image(tmp_path, image_folder):
    root, _ = image_folder([2, 3])
    with open(os.path.join(root, "id_01", "img_02.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "out").mkdir()
    with pytest.raises(RecordFormatError, match=r"id_01/img_02\.png: unreadable image"):
        pack_folder(root, tmp_path / "out" / "train")
    assert _files(tmp_path / "out") == []  # no temporary leftovers either


# --------------------------------------------------------------------------- labels.txt


NAMES = ["\u00c5sa", "Jos\u00e9", "Ann Lee ", "\u674e\u5c0f\u9f8d"]


def test_names_round_trip(tmp_path, colour_image):
    info = write_face_rec(tmp_path / "train", _samples(colour_image, [2, 1, 3, 1]), (24, 20),
                          names=NAMES)
    labels_txt = tmp_path / "labels.txt"
    assert info["labels"] == str(labels_txt)
    assert _files(tmp_path) == ["labels.txt", "property", "train.idx", "train.rec"]
    # byte for byte: UTF-8, a tab, "\n" endings, spaces kept
    assert labels_txt.read_bytes() == (b"0\t\xc3\x85sa\n1\tJos\xc3\xa9\n2\tAnn Lee \n"
                                       b"3\t\xe6\x9d\x8e\xe5\xb0\x8f\xe9\xbe\x8d\n")
    assert read_labels(labels_txt) == NAMES
    ds = FaceRecordDataset(str(tmp_path))
    assert ds.labels_path == str(labels_txt) and ds.label_names == NAMES
    assert [ds.label_name(c) for c in range(4)] == NAMES
    assert ds.label_name(np.int64(1)) == "Jos\u00e9" and ds.label_name(np.float32(3)) == NAMES[3]
    assert ds.label_name(ds[2][1]) == "Jos\u00e9"
    for bad in (4, -1):
        with pytest.raises(IndexError, match=r"outside \[0, 4\)"):
            ds.label_name(bad)
    with pytest.raises(ValueError, match="not a whole number"):
        ds.label_name(1.5)
    assert pickle.loads(pickle.dumps(ds)).label_names == NAMES


def test_no_names_no_labels_file(tmp_path, colour_image):
    info = write_face_rec(tmp_path / "train", _samples(colour_image, [1, 2]), (24, 20))
    assert info["labels"] is None
    ds = FaceRecordDataset(str(tmp_path))
    assert ds.labels_path is None and ds.label_names is None
    assert ds.label_name(1) == "1"
    with pytest.raises(IndexError):
        ds.label_name(2)


def test_names_do_not_change_the_record_file(tmp_path, colour_image):
    """labels.txt is a separate file: .rec/.idx/property are those of a set without names,
    and MXNet's own reader sees the same records."""
    samples = _samples(colour_image, [2, 3], fmt="jpg")
    write_face_rec(tmp_path / "plain" / "train", samples, (24, 20))
    write_face_rec(tmp_path / "named" / "train", samples, (24, 20), names=["a", "b"])
    for name in ("train.rec", "train.idx", "property"):
        assert ((tmp_path / "plain" / name).read_bytes()
                == (tmp_path / "named" / name).read_bytes()), name
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "named" / "train.idx"),
                                        str(tmp_path / "named" / "train.rec"), "r")
    header, _ = mx.recordio.unpack(rec.read_idx(0))
    assert header.flag == 2 and [int(v) for v in header.label] == [6, 8]
    labels = [int(mx.recordio.unpack(rec.read_idx(k))[0].label) for k in range(1, 6)]
    assert labels == [0, 0, 1, 1, 1]
    rec.close()


def test_old_labels_file_removed_without_names(tmp_path, colour_image):
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1, 1]), (24, 20),
                   names=["a", "b", "c"])
    assert (tmp_path / "labels.txt").exists()
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1]), (24, 20))
    assert _files(tmp_path) == ["property", "train.idx", "train.rec"]
    assert FaceRecordDataset(str(tmp_path)).label_names is None
    # another prefix in the same folder: property (and labels.txt) are per folder
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1]), (24, 20),
                   names=["x", "y"])
    write_face_rec(tmp_path / "val", _samples(colour_image, [1, 1, 1]), (24, 20))
    assert "labels.txt" not in _files(tmp_path)
    # and names replace older names
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1]), (24, 20),
                   names=["p", "q"])
    write_face_rec(tmp_path / "train", _samples(colour_image, [1]), (24, 20), names=["r"])
    assert (tmp_path / "labels.txt").read_bytes() == b"0\tr\n"


@pytest.mark.parametrize("bad", ["a\tb", "a\nb", "a\rb", "", "a\u2028b", "a\x85b", "a\x0bb"])
def test_bad_names_refused(tmp_path, colour_image, bad):
    with pytest.raises(ValueError) as exc:
        write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1, 1]), (24, 20),
                       names=["ok", bad, "ok too"])
    message = str(exc.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(str(tmp_path / "labels.txt") + ": label 1: name ")
    assert _files(tmp_path) == []  # no .rec/.idx/property/labels.txt, no temporary file


def test_bad_names_leave_an_older_set_untouched(tmp_path, colour_image):
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 2]), (24, 20), names=["a", "b"])
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    with pytest.raises(ValueError, match="label 0"):
        write_face_rec(tmp_path / "train", _samples(colour_image, [1]), (24, 20),
                       names=["x\ny"])
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before


@pytest.mark.parametrize("names, fragment", [
    (["a", "b"], "2 names, but the data has more classes (label 2)"),
    (["a", "b", "c", "d"], "4 names, but 3 classes were written to train.rec"),
])
def test_name_count_must_match_classes(tmp_path, colour_image, names, fragment):
    with pytest.raises(ValueError) as exc:
        write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1, 1]), (24, 20),
                       names=names)
    assert str(exc.value) == "%s: %s" % (tmp_path / "labels.txt", fragment)
    assert _files(tmp_path) == []


def test_names_must_be_a_sequence_of_str(tmp_path):
    with pytest.raises(TypeError, match="sequence of str"):
        FaceRecordWriter(tmp_path / "train", (8, 8), names="abc")
    with pytest.raises(ValueError, match=r"label 1: name 7 is not a str \(int\)"):
        FaceRecordWriter(tmp_path / "train", (8, 8), names=["a", 7])


def test_labels_count_differs_from_property(tmp_path, colour_image):
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1, 1]), (24, 20),
                   names=["a", "b", "c"])
    labels_txt, prop = tmp_path / "labels.txt", tmp_path / "property"
    labels_txt.write_text("0\ta\n1\tb\n", encoding="utf-8")
    with pytest.raises(RecordFormatError) as exc:
        FaceRecordDataset(str(tmp_path))
    assert str(exc.value) == "%s: 2 labels, but %s says 3 classes" % (labels_txt, prop)
    with pytest.raises(RecordFormatError, match="2 labels, but .*property says 3 classes"):
        read_labels(labels_txt, 3, prop)
    with pytest.raises(RecordFormatError, match="2 labels, expected 3 classes"):
        read_labels(labels_txt, 3)
    assert read_labels(labels_txt, 2) == ["a", "b"]
    # more names than classes is just as wrong
    labels_txt.write_text("0\ta\n1\tb\n2\tc\n3\td\n", encoding="utf-8")
    with pytest.raises(RecordFormatError, match="4 labels, but .*property says 3 classes"):
        FaceRecordDataset(str(tmp_path))


def _plain_rec(folder, labels, colour_image):
    rec = mx.recordio.MXIndexedRecordIO(str(folder / "d.idx"), str(folder / "d.rec"), "w")
    for key, label in enumerate(labels):
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0),
                                            encode_image(colour_image(label, key))))
    rec.close()
    return str(folder / "d.rec")


def test_labels_beside_plain_im2rec_file(tmp_path, colour_image):
    rec = _plain_rec(tmp_path, [2, 0, 1, 0], colour_image)
    labels_txt = tmp_path / "labels.txt"
    labels_txt.write_text("0\tzero\n1\tone\n2\ttwo\n", encoding="utf-8")
    ds = FaceRecordDataset(rec)
    assert ds.layout == "im2rec" and ds.label_names == ["zero", "one", "two"]
    assert ds.label_name(ds[0][1]) == "two"
    # without property the class count is max label + 1
    labels_txt.write_text("0\tzero\n1\tone\n", encoding="utf-8")
    with pytest.raises(RecordFormatError) as exc:
        FaceRecordDataset(rec)
    assert str(exc.value) == ("%s: 2 labels, but %s has 3 classes (max label + 1; no property)"
                              % (labels_txt, rec))
    # with property, its count rules
    (tmp_path / "property").write_text("5,24,20\n")
    with pytest.raises(RecordFormatError, match="2 labels, but .*property says 5 classes"):
        FaceRecordDataset(rec)
    labels_txt.write_text("".join("%d\tn%d\n" % (c, c) for c in range(5)), encoding="utf-8")
    assert FaceRecordDataset(rec).label_name(4) == "n4"


@pytest.mark.parametrize("text, fragment", [
    (b"0\ta\nb\n", "line 2: expected 'label<TAB>name', got 'b'"),
    (b"0\ta\n\n1\tb\n", "line 2: expected 'label<TAB>name'"),
    (b"0\ta\nx\tb\n", "line 2: label 'x' is not a non-negative integer"),
    (b"0\ta\n-1\tb\n", "line 2: label '-1' is not"),
    (b"0\ta\n1.0\tb\n", "line 2: label '1.0' is not"),
    (b"0\ta\n0\tb\n", "line 2: label 0 appears twice (first on line 1)"),
    (b"1\ta\n0\tb\n", "line 1: labels must run 0, 1, 2, ... in order; expected 0, got 1"),
    (b"0\ta\n2\tb\n", "line 2: labels must run 0, 1, 2, ... in order; expected 1, got 2"),
    (b"0\ta\n1\t\n", "line 2: name of label 1 is empty"),
    (b"0\ta\n1\tb\tc\n", "line 2: name of label 1 holds a tab"),
    (b"0\ta\n1\tb\x0bc\n", "line 2: name of label 1 holds a line break"),
    (b"0\ta\n1\t\xff\n", "not UTF-8 text (byte 6)"),
])
def test_labels_malformed(tmp_path, colour_image, text, fragment):
    write_face_rec(tmp_path / "train", _samples(colour_image, [1, 1]), (24, 20),
                   names=["a", "b"])
    (tmp_path / "labels.txt").write_bytes(text)
    for call in (lambda: read_labels(tmp_path / "labels.txt"),
                 lambda: FaceRecordDataset(str(tmp_path))):
        with pytest.raises(RecordFormatError) as exc:
            call()
        message = str(exc.value)
        assert message.startswith(str(tmp_path / "labels.txt") + ": "), message
        assert fragment in message and len(message.splitlines()) == 1, message


def test_read_labels_tolerates_crlf_bom_and_missing_final_newline(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbf0\tAnn\r\n1\tJos\xc3\xa9")
    assert read_labels(path, 2) == ["Ann", "Jos\u00e9"]
    path.write_bytes(b"")
    assert read_labels(path) == []
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.txt")


def test_pack_folder_writes_folder_names(tmp_path, image_folder):
    root, images = image_folder([2, 1, 2], fmt="png")
    # a non-ASCII name with a space sorts last: label 2 holds id_01's image
    os.rename(os.path.join(root, "id_01"), os.path.join(root, "\u00e5ngstr\u00f6m B"))
    info = pack_folder(root, tmp_path / "out" / "train")
    labels_txt = tmp_path / "out" / "labels.txt"
    assert info["labels"] == str(labels_txt)
    assert info["identities"] == ["id_00", "id_02", "\u00e5ngstr\u00f6m B"]
    assert labels_txt.read_bytes() == b"0\tid_00\n1\tid_02\n2\t\xc3\xa5ngstr\xc3\xb6m B\n"
    ds = FaceRecordDataset(str(tmp_path / "out"))
    assert ds.label_names == info["identities"]
    image, label = ds[4]
    assert ds.label_name(label) == "\u00e5ngstr\u00f6m B"
    np.testing.assert_array_equal(image, images[(1, 0)])
    assert [ds.label_name(ds.label_of(i)) for i in range(len(ds))] == \
        ["id_00", "id_00", "id_02", "id_02", "\u00e5ngstr\u00f6m B"]


@pytest.mark.parametrize("folder", ["zz\t03", "zz\n03", "zz\r03"])  # sorted last
def test_pack_folder_refuses_folder_names_that_break_lines(tmp_path, image_folder, colour_image,
                                                          folder):
    root, _ = image_folder([2, 2])
    os.mkdir(os.path.join(root, folder))
    with open(os.path.join(root, folder, "img_00.png"), "wb") as f:
        f.write(encode_image(colour_image(3, 0)))
    (tmp_path / "out").mkdir()
    with pytest.raises(RecordFormatError) as exc:
        pack_folder(root, tmp_path / "out" / "train")
    message = str(exc.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(root + ": identity folder %r (label 2)" % folder)
    assert "labels.txt" in message
    assert _files(tmp_path / "out") == []


# --------------------------------------------------------------------------- checked at open


def test_open_refuses_images_of_another_size_than_property(tmp_path, colour_image):
    """property says 112x112, the images are 24x20: found at open, not mid-epoch."""
    write_face_rec(tmp_path / "train", _samples(colour_image, [2, 2]), (112, 112))
    with pytest.raises(RecordFormatError) as exc:
        FaceRecordDataset(str(tmp_path))
    message = str(exc.value)
    assert message == ("%s: record 1: image is 24x20 (HxW), but %s says 112x112"
                       % (tmp_path / "train.rec", tmp_path / "property"))


def test_open_refuses_a_last_label_beyond_property(tmp_path, colour_image):
    """A plain im2rec file whose property has too few classes: the last record (the
    largest label of a sorted list) is read at open; any other one when it is read."""
    for labels, bad_key in (([0, 1, 2, 3], 3), ([0, 4, 1, 2], 1)):
        folder = tmp_path / ("case%d" % bad_key)
        folder.mkdir()
        rec = mx.recordio.MXIndexedRecordIO(str(folder / "d.idx"), str(folder / "d.rec"), "w")
        for key, label in enumerate(labels):
            rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0),
                                                encode_image(colour_image(label, key))))
        rec.close()
        (folder / "property").write_text("3,24,20\n")
        want = r"d\.rec: record %d: label %d is outside \[0, 3\) \(class count from property\)$" \
            % (bad_key, labels[bad_key])
        if bad_key == 3:
            with pytest.raises(RecordFormatError, match=want):
                FaceRecordDataset(str(folder / "d.rec"))
        else:
            ds = FaceRecordDataset(str(folder / "d.rec"))
            with pytest.raises(RecordFormatError, match=want):
                ds[1]
            with pytest.raises(RecordFormatError, match=want):
                ds.label_of(1)


def _jpeg_records(tmp_path, colour_image, bodies):
    """An insightface-layout file: a good first image, then ``bodies`` (all label 0)."""
    first = encode_image(colour_image(0, 0), "png")
    write_face_rec(tmp_path / "train", [(0, first)] + [(0, b) for b in bodies], (24, 20))
    return str(tmp_path / "train.rec")


def test_corrupt_jpeg_records_raise_one_line(tmp_path, colour_image):
    jpeg = encode_image(colour_image(0, 1), "jpg")
    huge = bytearray(jpeg)
    sof = huge.find(b"\xff\xc0")
    huge[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # OpenCV raises cv2.error
    rec = _jpeg_records(tmp_path, colour_image,
                        [jpeg[: len(jpeg) // 2], bytes(huge), jpeg[:4] + b"\x13" * 200])
    ds = FaceRecordDataset(rec)
    for idx, words in ((1, "not a decodable image"), (2, "CV_IO_MAX_IMAGE_PIXELS"),
                       (3, "not a decodable image")):
        with pytest.raises(RecordFormatError) as exc:
            ds[idx]
        message = str(exc.value)
        assert len(message.splitlines()) == 1, message
        assert message.startswith("%s: record %d: not an image: " % (rec, idx + 1))
        assert words in message


def test_strict_get_refuses_what_libjpeg_only_recovered_from(tmp_path, colour_image):
    jpeg = encode_image(colour_image(0, 1), "jpg")
    scan = jpeg.find(b"\xff\xda")  # the scan ends early, the file does not
    damaged = jpeg[: (scan + len(jpeg)) // 2] + b"\xff\xd9"
    ds = FaceRecordDataset(_jpeg_records(tmp_path, colour_image, [damaged, jpeg]))
    assert ds[1][0].shape == (24, 20, 3)  # the default decode goes on, as libjpeg does
    with pytest.raises(RecordFormatError, match=r"record 2: not an image: corrupt image data "
                       r"\(\d+ bytes\): Corrupt JPEG data: premature end of data segment"):
        ds.get(1, strict=True)
    np.testing.assert_array_equal(ds.get(2, strict=True)[0], ds[2][0])


# --------------------------------------------------------------------------- one set per folder


def test_existing_set(tmp_path, colour_image):
    from gluon_face.data.recordio import existing_set, set_files

    ds = tmp_path / "ds"
    assert existing_set(ds / "train") is None  # no folder yet
    assert set_files(ds / "train.rec") == [str(ds / "train.rec"), str(ds / "train.idx"),
                                           str(ds / "property"), str(ds / "labels.txt")]
    write_face_rec(ds / "train", _samples(colour_image, [1, 1]), (24, 20), names=["a", "b"])
    assert "train.rec already exists" in existing_set(ds / "train")
    assert existing_set(ds / "train.rec") == existing_set(ds / "train")
    reason = existing_set(ds / "val")
    assert reason.startswith("%s belongs to the set train.rec" % (ds / "property"))
    assert "val.rec needs a folder of its own" in reason
    os.remove(ds / "property")
    assert existing_set(ds / "val").startswith("%s belongs to" % (ds / "labels.txt"))
    os.remove(ds / "labels.txt")
    assert existing_set(ds / "val") == ("%s holds train.rec, which the new property would "
                                        "describe too; val.rec needs a folder of its own" % ds)
    os.remove(ds / "train.rec")
    assert "train.idx already exists" in existing_set(ds / "train")
    assert existing_set(ds / "val") is None
    assert existing_set(tmp_path / "elsewhere" / "train") is None


def test_pack_folder_pixel_limit(tmp_path, image_folder, colour_image):
    from PIL import Image

    root, _ = image_folder([1, 1])  # 24x20 PNG: 480 pixels
    with pytest.raises(RecordFormatError) as exc:
        pack_folder(root, tmp_path / "out" / "train", max_pixels=479)
    assert str(exc.value) == ("%s: image is 24x20 (HxW) = 480 pixels, more than the limit of "
                              "479" % os.path.join(root, "id_00", "img_00.png"))
    assert not (tmp_path / "out").exists()
    # a format whose header Pillow reads
    bmp = os.path.join(root, "id_01", "img_01.bmp")
    Image.fromarray(colour_image(1, 1, (30, 20))).save(bmp)
    with pytest.raises(RecordFormatError, match=r"img_01\.bmp: image is 30x20 .* limit of 500"):
        pack_folder(root, tmp_path / "out" / "train", max_pixels=500, image_size=(24, 20),
                    resize=True)
    info = pack_folder(root, tmp_path / "out" / "train", max_pixels=600, image_size=(24, 20),
                       resize=True)
    assert info["num_images"] == 3
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        pack_folder(root, tmp_path / "o2" / "train", max_pixels=0)


def test_a_signal_inside_the_writer_constructor_leaves_no_traceback(tmp_path, monkeypatch,
                                                                    capsys):
    """Ctrl-C / SIGTERM while MXNet builds the record writer: nothing printed at collection."""
    import gc

    import mxnet as mx

    from gluon_face.data.recordio import _open_record_writer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mx.recordio.MXRecordIO, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _open_record_writer(mx, str(tmp_path / "a.idx"), str(tmp_path / "a.rec"))
    gc.collect()
    assert capsys.readouterr().err == ""

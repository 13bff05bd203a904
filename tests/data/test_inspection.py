"""summarize_rec / sample_grid on good and inconsistent files."""
import mxnet as mx
import numpy as np

from gluon_face.data import FaceRecordDataset, sample_grid, summarize_rec, write_face_rec
from gluon_face.data._image import encode_image


def test_summary_of_good_file(tmp_path, colour_image):
    counts = [3, 1, 5, 2]
    write_face_rec(tmp_path / "train", [(c, encode_image(colour_image(c, i), "png"))
                                        for c, n in enumerate(counts) for i in range(n)], (24, 20))
    s = summarize_rec(str(tmp_path), check_images=True)
    assert s["layout"] == "insightface" and s["images"] == 11 and s["num_classes"] == 4
    assert s["identities"] == 4 and s["empty_classes"] == 0
    assert s["per_identity"] == {"min": 1, "median": 2.5, "max": 5}
    assert (s["label_min"], s["label_max"]) == (0, 3) and s["problems"] == []
    ds = FaceRecordDataset(str(tmp_path))
    grid = sample_grid(ds, rows=3, cols=2, pad=1)
    assert grid.shape == (3 * 25 + 1, 2 * 21 + 1, 3) and grid.dtype == np.uint8
    # first row holds identity 0's images, last row identity 3's
    top = grid[1:25, 1:21]
    assert any(np.array_equal(top, colour_image(0, i)) for i in range(3))
    bottom = grid[2 * 25 + 1:3 * 25, 1:21]
    assert any(np.array_equal(bottom, colour_image(3, i)) for i in range(2))


def test_summary_reports_labels_outside_property(tmp_path, colour_image):
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "d.idx"), str(tmp_path / "d.rec"), "w")
    for key, label in enumerate([0, 1, 5, 1]):
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0),
                                            encode_image(colour_image(label % 3, key))))
    rec.close()
    (tmp_path / "property").write_text("3,24,20")
    s = summarize_rec(str(tmp_path / "d.rec"))
    assert len(s["problems"]) == 1
    assert "labels outside [0, 3)" in s["problems"][0] and "record 2, label 5" in s["problems"][0]
    assert s["empty_classes"] == 1  # class 2 has no image


def test_summary_reports_identity_records_that_disagree(tmp_path, colour_image):
    """Identity ranges that do not match the image labels (a broken packer)."""
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"),
                                        str(tmp_path / "train.rec"), "w")
    rec.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [5, 7], 0, 0), b""))
    for key, label in zip(range(1, 5), [0, 0, 1, 1]):
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0),
                                            encode_image(colour_image(label, key))))
    rec.write_idx(5, mx.recordio.pack(mx.recordio.IRHeader(2, [1, 4], 5, 0), b""))
    rec.write_idx(6, mx.recordio.pack(mx.recordio.IRHeader(2, [4, 5], 6, 0), b""))
    rec.close()
    (tmp_path / "property").write_text("2,24,20")
    s = summarize_rec(str(tmp_path), check_images=True)
    assert len(s["problems"]) == 1
    assert "identity record 5" in s["problems"][0] and "record 3 has label 1" in s["problems"][0]


def test_check_counts_decoder_warnings_as_problems(tmp_path, colour_image, capfd):
    """A JPEG that libjpeg only recovers from ("premature end of data segment") is a
    problem of --check, named by record; the grid leaves its tile grey, and nothing
    reaches stderr."""
    jpeg = encode_image(colour_image(1, 0), "jpg")
    scan = jpeg.find(b"\xff\xda")
    damaged = jpeg[: (scan + len(jpeg)) // 2] + b"\xff\xd9"
    samples = [(0, encode_image(colour_image(0, 0), "png")), (1, damaged)]
    write_face_rec(tmp_path / "train", samples, (24, 20))
    s = summarize_rec(str(tmp_path), check_images=True)
    assert s["problems"] == [
        "%s: record 2: not an image: corrupt image data (%d bytes): Corrupt JPEG data: "
        "premature end of data segment" % (tmp_path / "train.rec", len(damaged))]
    problems = []
    grid = sample_grid(FaceRecordDataset(str(tmp_path)), rows=2, cols=1, pad=1,
                       problems=problems)
    assert problems == s["problems"]
    assert np.array_equal(grid[1:25, 1:21], colour_image(0, 0))
    assert (grid[26:50, 1:21] == 128).all()  # the damaged image's tile
    assert capfd.readouterr().err == ""
    # without the check the labels alone are scanned: no problem
    assert summarize_rec(str(tmp_path))["problems"] == []

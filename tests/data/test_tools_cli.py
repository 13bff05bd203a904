"""The data CLIs: pack_rec, inspect_rec, make_bin, benchmark_data (main(argv) -> int)."""
import os

import numpy as np
import pytest

from gluon_face.data import FaceRecordDataset, load_bin
from gluon_face.data._image import encode_image


def _one_line_error(capsys, prog, *fragments):
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(prog + ": error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


def test_pack_rec_round_trip(tmp_path, image_folder, tool, capsys):
    root, images = image_folder([2, 3, 2])
    out = tmp_path / "out"
    out.mkdir()
    assert tool("pack_rec").main([root, str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "7 images, 3 identities" in printed and "+ labels.txt" in printed
    assert sorted(os.listdir(out)) == ["labels.txt", "property", "train.idx", "train.rec"]
    assert (out / "labels.txt").read_bytes() == b"0\tid_00\n1\tid_01\n2\tid_02\n"
    ds = FaceRecordDataset(str(out))
    assert ds.label_names == ["id_00", "id_01", "id_02"]
    for j, key in enumerate(sorted(images)):
        image, label = ds[j]
        assert label == key[0] and ds.label_name(label) == "id_%02d" % key[0]
        np.testing.assert_array_equal(image, images[key])
    # --resize with --image-size HxW, and --encoding jpg
    assert tool("pack_rec").main([root, str(tmp_path / "r" / "faces"), "--image-size", "32x16",
                                  "--resize", "--encoding", "jpg", "--no-progress"]) == 0
    ds = FaceRecordDataset(str(tmp_path / "r" / "faces.rec"))
    assert ds.image_size == (32, 16) and ds[0][0].shape == (32, 16, 3)


@pytest.mark.parametrize("case", ["empty-identity", "unreadable", "wrong-size", "no-source",
                                  "tab-in-name", "newline-in-name"])
def test_pack_rec_bad_input(tmp_path, image_folder, tool, capsys, case):
    root, _ = image_folder([2, 2])
    args = [root, str(tmp_path / "out" / "train"), "--no-progress"]
    if case == "empty-identity":
        os.mkdir(os.path.join(root, "id_09"))
        want = ("id_09", "empty identity folder")
    elif case.endswith("-in-name"):
        name = "id\t09" if case == "tab-in-name" else "id_09\nx"
        os.mkdir(os.path.join(root, name))
        with open(os.path.join(root, name, "img_00.png"), "wb") as f:
            f.write(encode_image(np.zeros((24, 20, 3), np.uint8), "png"))
        want = ("identity folder %r" % name, "labels.txt")
    elif case == "unreadable":
        with open(os.path.join(root, "id_01", "img_00.png"), "wb") as f:
            f.write(b"not an image at all")
        want = ("id_01/img_00.png", "unreadable image")
    elif case == "wrong-size":
        args += ["--image-size", "64"]
        want = ("img_00.png", "expected 64x64")
    else:
        args[0] = str(tmp_path / "missing")
        want = ("missing", "not found")
    assert tool("pack_rec").main(args) == 2
    _one_line_error(capsys, "pack_rec", *want)
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []


def test_pack_rec_bad_size_argument(tmp_path, tool, capsys):
    with pytest.raises(SystemExit) as exc:
        tool("pack_rec").main([str(tmp_path), str(tmp_path / "o"), "--image-size", "0x3"])
    assert exc.value.code == 2


def test_pack_rec_help_mentions_labels(tool, capsys):
    with pytest.raises(SystemExit) as exc:
        tool("pack_rec").main(["--help"])
    assert exc.value.code == 0
    assert "labels.txt" in capsys.readouterr().out


def test_inspect_rec(tmp_path, image_folder, tool, capsys, monkeypatch):
    root, _ = image_folder([3, 1, 2])
    tool("pack_rec").main([root, str(tmp_path / "data" / "train"), "--no-progress"])
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    js = tmp_path / "s.json"
    assert tool("inspect_rec").main([str(tmp_path / "data"), "--grid", str(grid), "--check",
                                     "--no-progress", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "insightface" in out and "min 1 / median 2 / max 3" in out
    assert "[0, 2] vs [0, 3)" in out and "problems" in out
    assert "names" in out and "labels.txt (one per class)" in out
    from gluon_face.data._image import decode_image

    assert decode_image(grid.read_bytes()).shape == (3 * 26 + 2, 8 * 22 + 2, 3)
    assert '"images": 6' in js.read_text()
    # default grid name, in the current folder
    monkeypatch.chdir(tmp_path)
    assert tool("inspect_rec").main([str(tmp_path / "data" / "train.rec")]) == 0
    assert os.path.isfile(tmp_path / "train_samples.png")


def test_inspect_rec_bad_input(tmp_path, image_folder, tool, capsys):
    root, _ = image_folder([2, 2])
    data = tmp_path / "data"
    tool("pack_rec").main([root, str(data / "train"), "--no-progress"])
    capsys.readouterr()
    # labels.txt with fewer lines than property's classes
    (data / "labels.txt").write_text("0\tid_00\n")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "%s: 1 labels, but %s says 2 classes"
                    % (data / "labels.txt", data / "property"))
    (data / "labels.txt").write_text("0\tid_00\n0\tid_01\n")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "labels.txt: line 2: label 0 appears twice")
    os.remove(data / "labels.txt")  # no names: as before
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 0
    assert "- (no labels.txt)" in capsys.readouterr().out
    # labels outside property's class count
    (data / "property").write_text("1,24,20")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "property", "says 1 classes")
    (data / "property").write_text("24,20")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "property", "malformed property")
    os.remove(data / "property")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "property file not found")
    os.remove(data / "train.idx")
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "train.idx", "index file not found")


def test_inspect_rec_corrupted_record(tmp_path, image_folder, tool, capsys):
    root, _ = image_folder([2, 2])
    data = tmp_path / "data"
    tool("pack_rec").main([root, str(data / "train"), "--no-progress"])
    capsys.readouterr()
    offsets = dict(line.split() for line in (data / "train.idx").read_text().splitlines())
    raw = bytearray((data / "train.rec").read_bytes())
    pos = int(offsets["2"]) + 8 + 24 + 1
    raw[pos:pos + 8] = b"XXXXXXXX"  # break the PNG signature of record 2
    (data / "train.rec").write_bytes(bytes(raw))
    assert tool("inspect_rec").main([str(data), "--no-grid", "--check",
                                     "--no-progress"]) == 1
    _one_line_error(capsys, "inspect_rec", "train.rec: record 2: not an image")
    (data / "train.rec").write_bytes(bytes(raw[:-40]))
    assert tool("inspect_rec").main([str(data), "--no-grid"]) == 1
    _one_line_error(capsys, "inspect_rec", "train.rec", "truncated")


def _lfw(tmp_path, colour_image):
    root = tmp_path / "lfw"
    for p, name in enumerate(["Ann", "Bob"]):
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            (root / name / ("%s_%04d.jpg" % (name, i))).write_bytes(
                encode_image(colour_image(p, i), "jpg"))
    return root


def test_make_bin(tmp_path, colour_image, tool, capsys):
    root = _lfw(tmp_path, colour_image)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 2\nAnn 1 2\nAnn 1 Bob 2\n")
    out = tmp_path / "lfw.bin"
    assert tool("make_bin").main([str(root), str(pairs), str(out), "--no-progress"]) == 0
    assert "2 pairs: 1 same, 1 different" in capsys.readouterr().out
    images, issame = load_bin(str(out))
    assert images.shape == (4, 24, 20, 3) and issame.tolist() == [True, False]
    plain = tmp_path / "plain.txt"
    plain.write_text("Ann/Ann_0001.jpg Bob/Bob_0001.jpg 0\n")
    assert tool("make_bin").main([str(root), str(plain), str(tmp_path / "p.bin"), "--format",
                                  "plain", "--image-size", "16", "--no-progress"]) == 0
    assert load_bin(str(tmp_path / "p.bin"))[0].shape == (2, 16, 16, 3)


def test_make_bin_bad_input(tmp_path, colour_image, tool, capsys):
    root = _lfw(tmp_path, colour_image)
    pairs = tmp_path / "pairs.txt"
    out = tmp_path / "x.bin"
    pairs.write_text("Ann 1 2\nBob 1 7\n")
    assert tool("make_bin").main([str(root), str(pairs), str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "make_bin", "pairs.txt: line 2", "Bob_0007.jpg")
    pairs.write_text("Ann 1 2\n")
    assert tool("make_bin").main([str(tmp_path / "nope"), str(pairs), str(out)]) == 2
    _one_line_error(capsys, "make_bin", "nope", "image folder not found")
    assert tool("make_bin").main([str(root), str(tmp_path / "none.txt"), str(out)]) == 2
    _one_line_error(capsys, "make_bin", "none.txt", "pairs list not found")
    assert not out.exists()


def test_benchmark_data(tmp_path, tool, capsys):
    assert tool("benchmark_data").main(["--workers", "0", "2", "--num-images", "32",
                                        "--batch-size", "16", "--synthetic-images", "24",
                                        "--image-size", "32", "--train-rate", "3.0",
                                        "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "synthetic file: 24 images 32x32" in out
    assert "data pipeline:" in out and "training consumes 3.0 images/s" in out
    import json

    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [r["num_workers"] for r in rows] == [0, 2] and all(r["images"] == 32 for r in rows)
    assert tool("benchmark_data").main([str(tmp_path / "missing.rec")]) == 1
    _one_line_error(capsys, "benchmark_data", "missing.rec", "not found")


def test_pack_rec_overwrite_and_stale_temporary_files(tmp_path, image_folder, tool, capsys):
    root, _ = image_folder([2, 2])
    other, _ = image_folder([1, 1, 1], name="other")
    out = tmp_path / "out"
    assert tool("pack_rec").main([root, str(out / "train"), "--no-progress"]) == 0
    capsys.readouterr()
    # a run killed by SIGKILL leaves atomic_path's temporary names; someone else's stay
    stale = [out / ".train.rec.ab12cd_3.tmp", out / ".property.zzzzzzzz.tmp"]
    keep = [out / ".train.rec.tmp", out / ".val.rec.ab12cd_3.tmp", out / "notes.tmp"]
    for path in stale + keep:
        path.write_bytes(b"x")
    assert tool("pack_rec").main([other, str(out / "train"), "--no-progress"]) == 2
    _one_line_error(capsys, "pack_rec", "train.rec already exists", "--overwrite")
    assert all(p.exists() for p in stale)  # refused: nothing touched
    assert tool("pack_rec").main([other, str(out / "train"), "--overwrite",
                                  "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "removed 2 temporary file(s) left by an interrupted run" in printed
    assert all(str(p) in printed and not p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    ds = FaceRecordDataset(str(out))
    assert ds.num_classes == 3 and ds.label_names == ["id_00", "id_01", "id_02"]


def test_pack_rec_help_documents_the_pixel_limit(tool, capsys):
    with pytest.raises(SystemExit):
        tool("pack_rec").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-pixels N" in text and "default 40000000" in text and "--overwrite" in text


def test_make_bin_warns_about_a_degenerate_set(tmp_path, colour_image, tool, capsys):
    root = _lfw(tmp_path, colour_image)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Ann 1 2\nBob 1 2\n")
    out = tmp_path / "same.bin"
    assert tool("make_bin").main([str(root), str(pairs), str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == ("make_bin: warning: %s: all 2 pairs are same-identity pairs, so accuracy, "
                   "VAL and AUC are meaningless on it (a verification set needs both kinds)"
                   % out)
    assert load_bin(str(out))[1].tolist() == [True, True]

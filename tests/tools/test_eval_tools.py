"""The evaluate, extract and export_onnx commands (tools/*.py), called through main([...]).

A real (tiny) checkpoint is written with the trainer's own ``save_checkpoint``:
a FaceResNet-18 with 8 channels per stage at 32x32 and an 8-d embedding.
"""
import io
import json
from pathlib import Path

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from PIL import Image

from gluon_face.commands import evaluate, export_onnx, extract
from gluon_face.data import FaceTransform, load_bin, write_bin, write_face_rec
from gluon_face.embedding import extract_embeddings
from gluon_face.evaluation.protocols import evaluate_bin
from gluon_face.heads import get_head
from gluon_face.training.checkpoint import build_backbone, load_model, save_checkpoint

from ..conftest import require_module

SIZE, EMB, CLASSES = 32, 8, 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model = {"name": "faceresnet18",
             "kwargs": {"channels": [8, 8, 8, 8, 8], "emb_size": EMB, "image_size": SIZE}}
    backbone = build_backbone(model["name"], **model["kwargs"])
    backbone.initialize(mx.init.Xavier())
    head = get_head("arcface", EMB, CLASSES)
    head.initialize(mx.init.Normal(0.1))
    head(backbone(np.zeros((2, 3, SIZE, SIZE))), np.array([0, 1]))
    state = {"epoch": 1, "step": 10, "best_score": None, "model": model,
             "head": {"name": "arcface", "kwargs": {}}, "num_classes": CLASSES,
             "image_size": [SIZE, SIZE], "emb_size": EMB}
    save_checkpoint(str(out / "checkpoints" / "last"), backbone, head, None, state, "seed: 0\n")
    return str(out)


def random_images(rng, n, size=SIZE):
    return rng.randint(0, 256, size=(n, size, size, 3)).astype(onp.uint8)


def one_line_error(capsys, prog, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


# ---------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    rng = onp.random.RandomState(0)
    folder = tmp_path_factory.mktemp("bins")
    paths = []
    for name, pairs in (("lfw", 20), ("cfp_fp", 12)):
        images = random_images(rng, 2 * pairs)
        images[1::2][:pairs // 2] = images[0::2][:pairs // 2]  # half the pairs identical
        path = folder / f"{name}.bin"
        write_bin(str(path), images, [True] * (pairs // 2) + [False] * (pairs - pairs // 2),
                  fmt="png")
        paths.append(str(path))
    return paths


def test_evaluate_table_and_json(checkpoint, bins, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert evaluate.main([checkpoint, "--bin", *bins, "--json", str(out), "--no-progress",
                          "--batch-size", "7"]) == 0
    text = capsys.readouterr().out
    assert "faceresnet18" in text and "lfw" in text and "cfp_fp" in text
    report = json.loads(out.read_text())
    rows = {r["target"]: r for r in report["results"]}
    assert rows["lfw"]["pairs"] == 20 and rows["cfp_fp"]["pairs"] == 12
    # identical pairs at distance 0: the flip-free accuracy is a real number, not 0.0
    assert rows["lfw"]["accuracy_noflip"] >= 0.5
    # the numbers are the library's, on the checkpoint's network
    net, _, _ = load_model(checkpoint)
    images, issame = load_bin(bins[0])
    want = evaluate_bin(net, images, issame, transform=FaceTransform(flip=False))
    assert rows["lfw"]["accuracy"] == pytest.approx(want["flip"].accuracy)
    assert rows["lfw"]["accuracy_noflip"] == pytest.approx(want["noflip"].accuracy)
    assert rows["lfw"]["val"] == pytest.approx(want["flip"].val)


def test_evaluate_data_dir(checkpoint, bins, capsys):
    folder = str(Path(bins[0]).parent)
    assert evaluate.main([checkpoint, "--data-dir", folder, "--no-progress",
                          "--nfolds", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for line in lines if line.startswith(("lfw", "cfp_fp"))) == 2


def test_evaluate_bad_inputs(checkpoint, bins, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert evaluate.main([str(missing), "--bin", bins[0]]) == 2
    one_line_error(capsys, "evaluate", str(missing))
    assert evaluate.main([checkpoint, "--bin", str(tmp_path / "no.bin")]) == 2
    one_line_error(capsys, "evaluate", "no.bin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a pickle")
    assert evaluate.main([checkpoint, "--bin", str(junk), "--no-progress"]) == 2
    one_line_error(capsys, "evaluate", "junk.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate.main([checkpoint, "--data-dir", str(empty)]) == 2
    one_line_error(capsys, "evaluate", "no *.bin")
    assert evaluate.main([checkpoint, "--bin", bins[0], "--ctx", "tpu"]) == 2
    one_line_error(capsys, "evaluate", "tpu")


def checkpoint_with_data(checkpoint, folder, data_dir):
    """A copy of ``checkpoint`` whose config.yaml names ``data_dir`` as its training data."""
    import shutil

    copy = folder / "ckpt"
    shutil.copytree(checkpoint, copy)
    (copy / "checkpoints" / "last" / "config.yaml").write_text(f"data_dir: {data_dir}\n")
    return str(copy)


def report_rows(path):
    return json.loads(path.read_text())["results"]


def test_evaluate_embed_modes(checkpoint, bins, tmp_path, capsys):
    rng = onp.random.RandomState(3)
    data = tmp_path / "data"
    data.mkdir()
    samples = []
    for label, image in enumerate(random_images(rng, 6)):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        samples.append((label // 3, buf.getvalue()))
    write_face_rec(str(data / "train"), samples, (SIZE, SIZE))
    ckpt = checkpoint_with_data(checkpoint, tmp_path, data)
    out = tmp_path / "modes.json"
    assert evaluate.main([ckpt, "--bin", *bins, "--embed-mode", "block,hybrid,fused,int8",
                          "--calib-batches", "1", "--batch-size", "8", "--no-progress",
                          "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "d-acc vs block" in captured.out and "int8" in captured.out
    hybrid_lines = [line.split() for line in captured.out.splitlines() if " hybrid " in line]
    assert hybrid_lines and all(line[-3:] == ["+0.00", "+0.00000", "0"] for line in hybrid_lines)
    assert all(r["changed"] == 0 for r in report_rows(out) if r["embed_mode"] == "hybrid")
    report = json.loads(out.read_text())
    assert report["embed_modes"] == ["block", "hybrid", "fused", "int8"]
    # calibrated on the training records (all 6: fewer than one batch of 8)
    assert str(data) in report["calibration"]["source"]
    assert report["calibration"]["images"] == 6 and report["calibration"]["mode"] == "naive"
    rows = {(r["embed_mode"], r["target"]): r for r in report["results"]}
    assert len(rows) == 8
    for target, pairs in (("lfw", 20), ("cfp_fp", 12)):
        block = rows["block", target]
        for mode in ("hybrid", "fused"):  # float32 graphs: the same numbers
            assert rows[mode, target]["accuracy"] == pytest.approx(block["accuracy"])
        # int8: at most one pair decided differently
        assert abs(rows["int8", target]["accuracy"] - block["accuracy"]) <= 1 / pairs + 1e-9
    # the block row is the default run's
    assert evaluate.main([checkpoint, "--bin", bins[0], "--no-progress", "--batch-size", "8",
                          "--json", str(out)]) == 0
    default = json.loads(out.read_text())
    assert default["embed_modes"] == ["block"] and default["calibration"] is None
    assert default["results"][0]["accuracy"] == pytest.approx(rows["block", "lfw"]["accuracy"])


def test_evaluate_int8_calibrates_on_first_bin_without_training_data(checkpoint, bins, tmp_path,
                                                                     capsys):
    ckpt = checkpoint_with_data(checkpoint, tmp_path, tmp_path / "gone")
    out = tmp_path / "int8.json"
    assert evaluate.main([ckpt, "--bin", bins[1], "--embed-mode", "int8", "--calib-batches", "2",
                          "--batch-size", "4", "--no-progress", "--json", str(out)]) == 0
    assert "first .bin" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["calibration"]["images"] == 8 and "gone" in report["calibration"]["source"]
    assert report["results"][0]["embed_mode"] == "int8"


def test_evaluate_bad_embed_mode(checkpoint, bins, capsys):
    assert evaluate.main([checkpoint, "--bin", bins[0], "--embed-mode", "int4"]) == 2
    one_line_error(capsys, "evaluate", "--embed-mode", "int4", "int8")
    assert evaluate.main([checkpoint, "--bin", bins[0], "--embed-mode", "block,block"]) == 2
    one_line_error(capsys, "evaluate", "repeated")
    assert evaluate.main([checkpoint, "--bin", bins[0], "--embed-mode", "int8",
                          "--calib-batches", "0"]) == 2
    one_line_error(capsys, "evaluate", "--calib-batches")
    assert evaluate.main([checkpoint, "--bin", bins[0], "--embed-mode", "int8",
                          "--calib-mode", "kl"]) == 2
    one_line_error(capsys, "evaluate", "--calib-mode", "entropy")
    assert evaluate.main([checkpoint, "--bin", bins[0], "--embed-mode", "fused",
                          "--ctx", "cpu:0,1", "--no-progress"]) == 2
    one_line_error(capsys, "evaluate", "one device")


# ---------------------------------------------------------------- extract
def test_extract_folder(checkpoint, tmp_path, capsys):
    rng = onp.random.RandomState(1)
    src = tmp_path / "faces"
    images = random_images(rng, 5)
    names = ["p1/a.png", "p1/b.png", "p2/a.png", "p2/c.png", "z.png"]
    for name, image in zip(names, images):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(src / name)
    out = tmp_path / "gallery.npy"
    assert extract.main([checkpoint, str(src), str(out), "--flip", "--no-progress",
                         "--batch-size", "2"]) == 0
    assert "5 x 8" in capsys.readouterr().out
    emb = onp.load(out)
    assert emb.shape == (5, EMB) and emb.dtype == onp.float32
    onp.testing.assert_allclose(onp.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "gallery.paths.txt").read_text().splitlines() == names
    net, _, _ = load_model(checkpoint)
    want = extract_embeddings(net, images, flip=True, transform=FaceTransform(flip=False))
    onp.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)


def test_extract_rec(checkpoint, tmp_path):
    rng = onp.random.RandomState(2)
    images = random_images(rng, 6)
    labels = [0, 0, 1, 1, 1, 2]

    def png(image):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    data = tmp_path / "data"
    data.mkdir()
    write_face_rec(str(data / "train"), [(lab, png(im)) for lab, im in zip(labels, images)],
                   (SIZE, SIZE))
    out = tmp_path / "train_emb.npy"
    assert extract.main([checkpoint, str(data), str(out), "--no-normalize",
                         "--no-progress"]) == 0
    emb = onp.load(out)
    onp.testing.assert_array_equal(onp.load(tmp_path / "train_emb.labels.npy"), labels)
    net, _, _ = load_model(checkpoint)
    want = extract_embeddings(net, images, normalize=False, transform=FaceTransform(flip=False))
    onp.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)


def test_extract_bad_inputs(checkpoint, tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert extract.main([checkpoint, str(tmp_path / "missing.rec"), str(out)]) == 2
    one_line_error(capsys, "extract", "missing.rec")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert extract.main([checkpoint, str(empty), str(out)]) == 2
    one_line_error(capsys, "extract", "no image files")
    (empty / "a.png").write_bytes(b"not a png")
    assert extract.main([checkpoint, str(empty), str(out), "--no-progress"]) == 2
    one_line_error(capsys, "extract", "a.png")
    assert extract.main([str(tmp_path / "nockpt"), str(empty), str(out)]) == 2
    one_line_error(capsys, "extract", "nockpt")
    assert not out.exists()


# ---------------------------------------------------------------- export_onnx
def test_export_onnx_tool(checkpoint, tmp_path, capsys):
    require_module("onnx", "onnx")
    require_module("onnx", "onnxruntime")
    out = tmp_path / "r18.onnx"
    assert export_onnx.main([checkpoint, str(out), "--batch-size", "2", "--trials", "2"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "max |diff|" in text and "('batch', 8)" in text
    assert "RGB pixels 0..255" in text and "batches of 1, 2 images" in text
    # the test checkpoint takes 32x32 faces: insightface's loader would return None
    assert "would not load it as a recogniser: input 32x32" in text
    out.unlink()
    assert export_onnx.main([checkpoint, str(out), "--input", "normalized", "--trials", "2"]) == 0
    assert "(pixel - 127.5) / 128" in capsys.readouterr().out


def test_export_onnx_bad_inputs(checkpoint, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert export_onnx.main([str(tmp_path / "nockpt"), str(out)]) == 2
    one_line_error(capsys, "export_onnx", "nockpt")
    assert export_onnx.main([checkpoint, str(out), "--ctx", "cpu:0,1"]) == 2
    one_line_error(capsys, "export_onnx", "one device")
    assert export_onnx.main([checkpoint, str(out), "--atol", "0"]) == 1
    one_line_error(capsys, "export_onnx", "onnxruntime differs")
    assert not out.exists()


# ---------------------------------------------------------------- flip test, pixels, 1:N
def _labelled_images(rng, classes=6, per_class=4):
    """Images whose identity shows in their pixels: a class pattern plus noise."""
    patterns = rng.randint(0, 256, size=(classes, SIZE, SIZE, 3))
    images, labels = [], []
    for c in range(classes):
        for _ in range(per_class):
            noise = rng.randint(-40, 41, size=(SIZE, SIZE, 3))
            images.append(onp.clip(patterns[c] + noise, 0, 255).astype(onp.uint8))
            labels.append(c)
    return onp.stack(images), onp.array(labels)


@pytest.fixture(scope="module")
def glyph_like(tmp_path_factory):
    """A data folder that says it is not mirror-symmetric, with an identification .rec."""
    rng = onp.random.RandomState(3)
    folder = tmp_path_factory.mktemp("asym")
    images, labels = _labelled_images(rng)
    issame = [True, False] * 6
    pairs = []
    for i, same in enumerate(issame):
        a = onp.flatnonzero(labels == i % 6)
        b = a if same else onp.flatnonzero(labels == (i + 1) % 6)
        pairs += [images[a[0]], images[b[1]]]
    write_bin(str(folder / "open_set.bin"), onp.stack(pairs), issame, fmt="png")
    (folder / "open_set").mkdir()
    write_face_rec(str(folder / "open_set" / "open_set"),
                   [(int(c), _png(im)) for im, c in zip(images, labels)], (SIZE, SIZE),
                   names=[f"id{c}" for c in range(6)])
    (folder / "dataset.json").write_text(json.dumps(
        {"flip": False, "flip_test": False, "identification": "open_set/open_set.rec"}))
    return folder, images, labels


def _png(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_evaluate_flip_test_follows_dataset_json(checkpoint, glyph_like, tmp_path, capsys):
    folder = glyph_like[0]
    out = tmp_path / "r.json"
    assert evaluate.main([checkpoint, "--data-dir", str(folder), "--no-progress",
                          "--identify", "none", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "no flip test" in captured.err and "dataset.json" in captured.err
    row = json.loads(out.read_text())["results"][0]
    net, _, _ = load_model(checkpoint)
    images, issame = load_bin(str(folder / "open_set.bin"))
    want = evaluate_bin(net, images, issame, transform=FaceTransform(flip=False),
                        flip_test=False)
    assert want["flip"] is None and want["score"] is want["noflip"]
    assert row["flip_test"] is False and row["accuracy_flip"] is None
    assert row["accuracy"] == pytest.approx(want["noflip"].accuracy)
    # --flip-test on overrides the data's own setting
    assert evaluate.main([checkpoint, "--bin", str(folder / "open_set.bin"), "--no-progress",
                          "--flip-test", "on", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    with_flip = evaluate_bin(net, images, issame, transform=FaceTransform(flip=False))
    assert row["flip_test"] is True
    assert row["accuracy"] == pytest.approx(with_flip["flip"].accuracy)


def test_evaluate_raw_pixels_mode(checkpoint, glyph_like, tmp_path):
    """--embed-mode pixels: the centred pixels scored by the same protocol (naive check)."""
    from gluon_face.evaluation import verification_accuracy

    folder = glyph_like[0]
    out = tmp_path / "r.json"
    assert evaluate.main([checkpoint, "--bin", str(folder / "open_set.bin"), "--no-progress",
                          "--embed-mode", "block,pixels", "--json", str(out)]) == 0
    rows = {r["embed_mode"]: r for r in json.loads(out.read_text())["results"]}
    images, issame = load_bin(str(folder / "open_set.bin"))
    x = [[(float(v) - 127.5) / 128 for v in im.transpose(2, 0, 1).ravel()] for im in images]
    x = [[v - sum(row) / len(row) for v in row] for row in x]
    want = verification_accuracy(onp.array(x), issame)
    assert rows["pixels"]["accuracy"] == pytest.approx(want.accuracy)
    assert rows["pixels"]["auc"] == pytest.approx(want.auc)


def test_evaluate_identify(checkpoint, glyph_like, tmp_path, capsys):
    from gluon_face.evaluation import (
        all_pairs_verification,
        identification,
        split_gallery_probes,
    )

    folder, images, labels = glyph_like
    out = tmp_path / "r.json"
    assert evaluate.main([checkpoint, "--data-dir", str(folder), "--no-progress",
                          "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TAR@FAR=1e-3" in text and "rank-1" in text
    row = json.loads(out.read_text())["identification"][0]
    assert row["images"] == len(images) and row["identities"] == 6
    # the same numbers from embeddings computed here, without the mirror (dataset.json)
    net, _, _ = load_model(checkpoint)
    emb = extract_embeddings(net, images, transform=FaceTransform(flip=False))
    pairs = all_pairs_verification(emb, labels)
    gallery, probes = split_gallery_probes(labels)
    ident = identification(emb[gallery], labels[gallery], emb[probes], labels[probes])
    assert row["tar_at_far"]["0.001"] == pytest.approx(pairs.tar_at_far[1e-3])
    assert row["rank1"] == pytest.approx(ident.rank[1])
    assert row["pairs"] == len(images) * (len(images) - 1) // 2
    onp.testing.assert_allclose(row["roc"]["tar"], pairs.tar)
    onp.testing.assert_allclose(row["cmc"], ident.cmc)


def test_evaluate_identify_missing(checkpoint, glyph_like, tmp_path, capsys):
    assert evaluate.main([checkpoint, "--bin", str(glyph_like[0] / "open_set.bin"),
                          "--identify", str(tmp_path / "nothing")]) == 2
    one_line_error(capsys, "evaluate", "--identify", "nothing")

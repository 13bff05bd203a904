"""The data and evaluation tools as a careless user runs them: each case in its own process.

pack_rec, make_bin, inspect_rec, extract, evaluate, export_onnx and count_params.  After
every refusal: the documented exit code, one ``<prog>: error:`` line on stderr (no
traceback), the inputs and earlier outputs byte-identical, and no temporary file of
ours (``.*.tmp``) left behind.  Every tool process spends a couple of seconds importing
MXNet, so the independent cases of a test run side by side; the checks of argument
parsing alone run in this process at the end.
"""
import concurrent.futures
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.data import pack_folder, write_bin, write_face_rec
from gluon_face.data._image import encode_image

from .conftest import ROOT

SIZE = 32  # the checkpoint's input size
EMB = 8


def _face(label, index, size=(SIZE, SIZE)):
    """A deterministic RGB image: dark noise with one bright channel per identity."""
    rng = onp.random.default_rng(100 * label + index)
    image = rng.integers(0, 60, size=tuple(size) + (3,), dtype=onp.uint8)
    image[..., label % 3] += 150
    return image


def _image_folder(root, counts, size=(SIZE, SIZE), fmt="png"):
    """``root/id_<c>/<i>.<fmt>``: ``counts[c]`` images of identity ``c``."""
    for label, n in enumerate(counts):
        folder = os.path.join(root, f"id_{label}")
        os.makedirs(folder)
        for i in range(n):
            with open(os.path.join(folder, f"{i:04d}.{fmt}"), "wb") as f:
                f.write(encode_image(_face(label, i, size), fmt))
    return str(root)


def _side_by_side(run_tool, *calls):
    """``run_tool(*call)`` for every call, the processes running in parallel; in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(calls))) as pool:
        return list(pool.map(lambda call: run_tool(*call), calls))


def _load(name):
    """The module of command ``name``, for what needs no process of its own.

    tools/benchmark_torch.py is no command: it runs in a venv of its own, without
    gluon_face, so it is loaded from its file.
    """
    if name != "benchmark_torch":
        return importlib.import_module(f"gluon_face.commands.{name}")
    spec = importlib.util.spec_from_file_location(f"fault_tool_{name}",
                                                  os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run folder ``.../base`` whose ``checkpoints/last`` holds a tiny FaceResNet-18
    (32x32 input, 8-d embedding) and an ArcFace head, written by the trainer's own code."""
    from gluon_face.heads import get_head
    from gluon_face.training.checkpoint import build_backbone, save_checkpoint

    run = tmp_path_factory.mktemp("runs") / "base"
    kwargs = {"channels": [4, 4, 4, 8, 8], "emb_size": EMB, "image_size": SIZE}
    net = build_backbone("faceresnet18", **kwargs)
    net.initialize(mx.init.Xavier())
    head = get_head("arcface", EMB, 3)
    head.initialize(mx.init.Normal(0.1))
    head(net(np.zeros((2, 3, SIZE, SIZE))), np.array([0, 1]))
    state = {"epoch": 1, "step": 1, "best_score": None,
             "model": {"name": "faceresnet18", "kwargs": kwargs},
             "head": {"name": "arcface", "kwargs": {}}, "num_classes": 3,
             "image_size": [SIZE, SIZE], "emb_size": EMB}
    save_checkpoint(str(run / "checkpoints" / "last"), net, head, None, state, "seed: 0\n")
    return str(run)


# ---------------------------------------------------------------------------- pack_rec
def test_pack_rec_refusals(tmp_path, run_tool, snapshot, stray_temps, one_line_error):
    """An output inside the source, an image above --max-pixels, and one property (and
    labels.txt) per folder: packing val beside train, or train again, is refused without
    --overwrite."""
    a = _image_folder(tmp_path / "a", [2, 2])
    b = _image_folder(tmp_path / "b", [1, 1, 1])
    big = os.path.join(b, "id_1", "0009.jpg")
    with open(big, "wb") as f:
        f.write(encode_image(_face(1, 9, size=(200, 300)), "jpg"))
    ds = tmp_path / "out" / "ds"
    pack_folder(a, str(ds / "train"))
    before = snapshot(tmp_path)
    inside, pixels, other, again = _side_by_side(
        run_tool,
        ("pack_rec", a, os.path.join(a, "packed", "train"), "--no-progress"),
        ("pack_rec", b, tmp_path / "big" / "train", "--max-pixels", "50000", "--no-progress"),
        ("pack_rec", b, ds / "val", "--no-progress"),
        ("pack_rec", a, ds / "train", "--no-progress"))
    one_line_error(inside, 2, os.path.join(a, "packed", "train.rec"),
                   f"inside the input folder {a}", prog="pack_rec")
    one_line_error(pixels, 2, big, "200x300", "60000 pixels", "limit of 50000", prog="pack_rec")
    one_line_error(other, 2, str(ds / "property"), "belongs to the set train.rec", "val.rec",
                   "--overwrite", prog="pack_rec")
    one_line_error(again, 2, str(ds / "train.rec"), "already exists", "--overwrite",
                   prog="pack_rec")
    assert snapshot(tmp_path) == before and stray_temps(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "out"]  # no folder made either
    # --overwrite, and the removal of a killed run's temporary files: test_tools_cli.py


@pytest.mark.parametrize("signum, code, words", [
    (signal.SIGTERM, 143, "stopped by SIGTERM; nothing written"),
    (signal.SIGINT, 130, "interrupted; nothing written")])
def test_pack_rec_stopped_removes_its_temporary_files(tmp_path, snapshot, stray_temps,
                                                      one_line_error, signum, code, words):
    """SIGTERM (a batch scheduler) or Ctrl-C once writing has started."""
    src = tmp_path / "faces"
    for label in range(8):  # noise re-encoded as PNG: packing would take a second or so
        rng = onp.random.default_rng(label)
        (src / f"id_{label}").mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 256, size=(320, 320, 3), dtype=onp.uint8)
            (src / f"id_{label}" / f"{i:04d}.jpg").write_bytes(encode_image(image, "jpg"))
    out = tmp_path / "out"
    before = snapshot(src)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "pack_rec.py"), str(src),
           str(out / "train"), "--encoding", "png", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
                            # started with SIGINT ignored, as a background job of a script
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not stray_temps(tmp_path):  # writing has started
            assert proc.poll() is None, "pack_rec ended before it could be stopped"
            assert time.monotonic() < deadline, "pack_rec never started writing"
            time.sleep(0.005)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    one_line_error(done, code, words, prog="pack_rec")
    assert stray_temps(tmp_path) == []
    assert not out.exists()  # no file of the set, complete or not, nor the folder made for it
    assert snapshot(src) == before


# ---------------------------------------------------------------------------- make_bin
def test_make_bin_refuses_to_overwrite_its_inputs(tmp_path, run_tool, snapshot, stray_temps,
                                                  one_line_error):
    good = _image_folder(tmp_path / "data" / "good", [2, 2], fmt="jpg")
    pairs = tmp_path / "ok.txt"
    pairs.write_text("id_0/0000.jpg id_0/0001.jpg 1\nid_0/0000.jpg id_1/0000.jpg 0\n")
    inside = os.path.join(good, "id_0", "0000.jpg")
    before = snapshot(tmp_path)
    same, within, size = _side_by_side(
        run_tool,
        ("make_bin", good, pairs, pairs, "--no-progress"),
        ("make_bin", good, pairs, inside, "--no-progress"),
        ("make_bin", good, pairs, tmp_path / "x.bin", "--image-size", "0"))
    one_line_error(same, 2, f"{pairs}: output would overwrite the input {pairs}", prog="make_bin")
    one_line_error(within, 2, inside, f"inside the input folder {good}", prog="make_bin")
    one_line_error(size, 2, "--image-size", "expected an integer >= 1, got '0'", prog="make_bin")
    assert snapshot(tmp_path) == before and stray_temps(tmp_path) == []


# ---------------------------------------------------------------------------- extract, export_onnx
def test_extract_and_export_onnx(checkpoint, tmp_path, run_tool, snapshot, stray_temps,
                                 one_line_error):
    """extract: images of another size than the model's (unless --resize), a file name
    with a line break, an output inside the image folder; export_onnx: an output inside
    the checkpoint folder (``runs/base`` resolves to ``runs/base/checkpoints/last``)."""
    small = _image_folder(tmp_path / "small", [1, 2], size=(24, 24))  # the model takes 32x32
    odd = tmp_path / "odd"
    odd.mkdir()
    for i, name in enumerate(["a.png", "b\nc.png", "d.png"]):
        (odd / name).write_bytes(encode_image(_face(0, i), "png"))
    out = tmp_path / "out"
    out.mkdir()
    folder = os.path.join(checkpoint, "checkpoints", "last")
    params = os.path.join(folder, "backbone.params")
    before = snapshot(small, odd, checkpoint)
    size, newline, inside, onnx = _side_by_side(
        run_tool,
        ("extract", checkpoint, small, out / "e.npy", "--no-progress"),
        ("extract", checkpoint, odd, out / "o.npy", "--no-progress"),
        ("extract", checkpoint, small, os.path.join(small, "e.npy"), "--no-progress"),
        ("export_onnx", checkpoint, params))
    one_line_error(size, 2, os.path.join(small, "id_0", "0000.png"), "24x24", "32x32",
                   "--resize", prog="extract")
    one_line_error(newline, 2, "b\\nc.png", "line break", "o.paths.txt", prog="extract")
    one_line_error(inside, 2, "e.npy", f"inside the input folder {small}", prog="extract")
    one_line_error(onnx, 2, params, f"inside the input folder {folder}", prog="export_onnx")
    assert snapshot(small, odd, checkpoint) == before and os.listdir(out) == []
    assert stray_temps(tmp_path) == [] and stray_temps(checkpoint) == []
    # with --resize the same images go through (in this process: no need for another one)
    assert _load("extract").main([checkpoint, str(small), str(out / "r.npy"), "--resize",
                                  "--no-progress"]) == 0
    assert onp.load(out / "r.npy").shape == (3, EMB)
    assert (out / "r.paths.txt").read_text().splitlines() == [
        "id_0/0000.png", "id_1/0000.png", "id_1/0001.png"]


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_json_refusal_and_degenerate_set(checkpoint, tmp_path, run_tool, snapshot,
                                                  stray_temps, one_line_error):
    images = onp.stack([_face(i % 3, i) for i in range(20)])
    same = tmp_path / "same.bin"
    write_bin(str(same), images, [True] * 10, fmt="png")
    into = os.path.join(checkpoint, "checkpoints", "last", "results.json")
    before = snapshot(same, checkpoint)
    refused, degenerate = _side_by_side(
        run_tool,
        ("evaluate", checkpoint, "--bin", same, "--json", into, "--no-progress"),
        ("evaluate", checkpoint, "--bin", same, "--nfolds", "2", "--no-progress",
         "--json", tmp_path / "r.json"))
    one_line_error(refused, 2, into, "inside the input folder", prog="evaluate")
    assert degenerate.returncode == 0, degenerate.stderr
    lines = degenerate.stderr.strip().splitlines()
    assert len(lines) == 1, degenerate.stderr
    assert lines[0].startswith(f"evaluate: warning: {same}: all 10 pairs are same-identity")
    assert "meaningless" in lines[0]
    assert "same" in degenerate.stdout and (tmp_path / "r.json").is_file()
    assert snapshot(same, checkpoint) == before and stray_temps(tmp_path) == []
    assert stray_temps(checkpoint) == []


# ---------------------------------------------------------------------------- inspect_rec
def _pack(prefix, samples, size):
    write_face_rec(str(prefix), samples, size)
    return str(prefix) + ".rec"


def test_inspect_rec_refusals_and_bad_records(tmp_path, run_tool, snapshot, stray_temps,
                                              one_line_error):
    png = [(c, encode_image(_face(c, i), "png")) for c in range(3) for i in range(2)]
    good = _pack(tmp_path / "good" / "train", png, (SIZE, SIZE))
    # record 2: libjpeg recovers with "Corrupt JPEG data: premature end of data segment";
    # record 3: a header claiming 60000x60000 (OpenCV refuses with an exception)
    jpeg = encode_image(_face(0, 1), "jpg")
    scan = jpeg.find(b"\xff\xda")
    damaged = jpeg[:(scan + len(jpeg)) // 2] + b"\xff\xd9"
    huge = bytearray(encode_image(_face(1, 0), "jpg"))
    sof = huge.find(b"\xff\xc0")
    huge[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    corrupt = _pack(tmp_path / "corrupt" / "train",
                    [png[0], (0, damaged), (1, bytes(huge)), png[3]], (SIZE, SIZE))
    wrong_size = _pack(tmp_path / "wrong" / "train", png, (112, 112))  # property: 112x112
    plain = tmp_path / "plain"  # im2rec layout, property says 3 classes, last label 5
    plain.mkdir()
    rec = mx.recordio.MXIndexedRecordIO(str(plain / "d.idx"), str(plain / "d.rec"), "w")
    for key, label in enumerate([0, 1, 2, 5]):
        header = mx.recordio.IRHeader(0, float(label), key, 0)
        rec.write_idx(key, mx.recordio.pack(header, png[key % 6][1]))
    rec.close()
    (plain / "property").write_text(f"3,{SIZE},{SIZE}\n")
    grid = tmp_path / "grid.png"
    before = snapshot(tmp_path)
    over, bad, size, labels, abbrev = _side_by_side(
        run_tool,
        ("inspect_rec", good, "--grid", good),
        ("inspect_rec", corrupt, "--check", "--grid", grid, "--no-progress"),
        ("inspect_rec", wrong_size, "--no-grid"),
        ("inspect_rec", plain / "d.rec", "--no-grid"),
        ("count_params", "--emb", "8"))  # allow_abbrev=False: not --emb-size
    one_line_error(over, 2, f"{good}: output would overwrite the input {good}",
                   prog="inspect_rec")
    one_line_error(bad, 1, f"{corrupt}: record 2", "Corrupt JPEG data: premature end of data "
                   "segment", "2 problem(s)", prog="inspect_rec")
    assert f"{corrupt}: record 3: not an image" in bad.stdout
    assert "CV_IO_MAX_IMAGE_PIXELS" in bad.stdout
    one_line_error(size, 1, f"{wrong_size}: record 1: image is 32x32 (HxW)", "says 112x112",
                   prog="inspect_rec")
    one_line_error(labels, 1, "d.rec: record 3: label 5 is outside [0, 3)", prog="inspect_rec")
    one_line_error(abbrev, 2, "unrecognized arguments: --emb", prog="count_params")
    assert grid.is_file()  # the damaged tiles stay grey; nothing printed by libjpeg
    after = snapshot(tmp_path)
    after.pop(str(grid))
    assert after == before and stray_temps(tmp_path) == []


# ---------------------------------------------------------------------------- parsing only
@pytest.mark.parametrize("name, argv", [
    ("pack_rec", ["src", "out", "--max", "5"]),
    ("inspect_rec", ["x.rec", "--ro", "3"]),
    ("make_bin", ["img", "pairs.txt", "o.bin", "--image", "5"]),
    ("export_onnx", ["run", "m.onnx", "--at", "1"]),
    ("extract", ["run", "img", "e.npy", "--batch", "2"]),
    ("evaluate", ["run", "--bin", "a.bin", "--nfold", "2"]),
    ("count_params", ["--num-class", "10"]),
    ("benchmark", ["--network", "faceresnet18"]),
    ("benchmark_data", ["--worker", "0"]),
    ("benchmark_head", ["--class", "10"]),
    ("benchmark_torch", ["--network", "faceresnet18"]),
])
def test_abbreviated_flags_are_refused(name, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _load(name)._parse(argv)
    assert exc.value.code == 2
    assert f"unrecognized arguments: {argv[-2]}" in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, words", [
    ("pack_rec", ["src", "out", "--quality", "0"], ["--quality", "in [1, 100]"]),
    ("pack_rec", ["src", "out", "--max-pixels", "-1"], ["--max-pixels", ">= 1"]),
    ("inspect_rec", ["x.rec", "--cols", "0"], ["--cols", ">= 1"]),
    ("make_bin", ["img", "p.txt", "o.bin", "--image-size", "-3"], ["--image-size", "'-3'"]),
    ("make_bin", ["img", "p.txt", "o.bin", "--image-size", "12x"], ["--image-size", "'12x'"]),
    ("export_onnx", ["run", "m.onnx", "--atol", "-1"], ["--atol", "finite number >= 0"]),
    ("export_onnx", ["run", "m.onnx", "--atol", "inf"], ["--atol", "'inf'"]),
    ("export_onnx", ["run", "m.onnx", "--trials", "0"], ["--trials", ">= 1"]),
    ("export_onnx", ["run", "m.onnx", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    ("extract", ["run", "img", "e.npy", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    ("evaluate", ["run", "--bin", "a.bin", "--nfolds", "1"], ["--nfolds", ">= 2"]),
    ("evaluate", ["run", "--bin", "a.bin", "--batch-size", "-4"], ["--batch-size", ">= 1"]),
])
def test_nonsense_numbers_are_one_line_errors(name, argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        _load(name)._parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{name}: error: argument "), err
    for word in words:
        assert word in err, err

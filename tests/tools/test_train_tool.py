"""tools/train.py: a tiny end-to-end run, bad inputs (exit 2, one line), Ctrl-C + resume."""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as onp
import pytest
from PIL import Image

from gluon_face.commands import train
from gluon_face.data import write_bin, write_face_rec

from ..conftest import require_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "train.py")


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _image(label, rng):
    img = rng.integers(0, 60, size=(16, 16, 3))
    r, c = divmod(label, 2)
    img[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8, label % 3] += 180
    return onp.clip(img, 0, 255).astype(onp.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tool_data"))
    rng = onp.random.default_rng(1)
    write_face_rec(os.path.join(folder, "train"),
                   [(c, _png(_image(c, rng))) for c in range(4) for _ in range(10)], (16, 16))
    same = onp.arange(10) % 2 == 0
    pairs = []
    for i, is_same in enumerate(same):
        a = i % 4
        pairs += [_image(a, rng), _image(a if is_same else (a + 1) % 4, rng)]
    write_bin(os.path.join(folder, "lfw.bin"), onp.stack(pairs), same, fmt="png")
    return folder


def _tiny_args(data_dir, out, *extra):
    return ["--data-dir", data_dir, "--output", str(out), "--network", "faceresnet18",
            "--model-kwargs", "channels=[4,4,4,8,8]", "--emb-size", "8", "--batch-size", "8",
            "--epochs", "2", "--lr", "0.05", "--warmup-epochs", "0", "--log-interval", "2",
            "--no-hybridize", *extra]


def test_tiny_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_tiny_args(data_dir, out, "--loss", "arcface", "--margin-s", "16")) == 0
    captured = capsys.readouterr()
    assert "finished after 10 steps" in captured.out
    assert "verification accuracy lfw:" in captured.out
    assert "samples/s" in (out / "train.log").read_text()
    for name in ("config.yaml", "metrics.csv", "curves.png", "roc.png",
                 "checkpoints/last/state.json", "checkpoints/best/state.json"):
        assert (out / name).is_file(), name
    assert "margin_s: 16.0" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--loss", "nope"], "valid names: .*arcface"),
    (["--network", "resnet-x"], "valid names: .*faceresnet50"),
    (["--ctx", "cpu:0,1,2"], "does not split evenly"),
    (["--ctx", "gpu:0"], "gpu"),
    (["--optimizer", "lbfgs"], "optimizer"),
])
def test_bad_arguments_exit_2_with_one_line(data_dir, tmp_path, capsys, extra, message):
    import re

    assert train.main(_tiny_args(data_dir, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error:") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err


def test_missing_train_rec_and_bad_config(tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path)]) == 2
    assert "no train.rec" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epoch: 3\n")
    assert train.main(["--config", str(cfg)]) == 2
    assert "unknown config key(s) 'epoch'" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(data_dir, tmp_path):
    out = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    args = [sys.executable, TOOL] + _tiny_args(data_dir, out, "--epochs", "500",
                                               "--log-interval", "1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    log = out / "train.log"
    while time.time() < deadline:
        if log.is_file() and log.read_text().count("samples/s") >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "--resume" in stderr
    from gluon_face.training.checkpoint import load_checkpoint_state

    step = load_checkpoint_state(str(out))["step"]
    assert step >= 3
    rc = train.main(_tiny_args(data_dir, out, "--epochs", "500", "--resume", str(out),
                               "--max-steps", str(step + 2)))
    assert rc == 0
    assert load_checkpoint_state(str(out))["step"] == step + 2


@pytest.mark.slow
def test_tools_chain_in_fresh_processes(data_dir, tmp_path):
    """train -> evaluate -> extract -> export_onnx, each a new interpreter as a user runs them.

    In-process tests inherit the suite's ``npx.set_np()``; a fresh process does not, which is
    how these tools once failed for every user while their in-process tests passed.
    """
    def run(tool, *args):
        cmd = [sys.executable, os.path.join(ROOT, "tools", tool), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, f"{tool}: {proc.stderr[-2000:]}"
        return proc.stdout

    out = tmp_path / "run"
    run("train.py", *_tiny_args(data_dir, out, "--epochs", "1"))
    ckpt = out / "checkpoints" / "last"
    table = run("evaluate.py", ckpt, "--bin", os.path.join(data_dir, "lfw.bin"), "--no-progress")
    assert "lfw" in table
    emb = tmp_path / "emb.npy"
    run("extract.py", ckpt, os.path.join(data_dir, "train.rec"), emb, "--no-progress")
    embeddings = onp.load(emb)
    assert embeddings.shape == (40, 8) and onp.isfinite(embeddings).all()
    onnx_path = tmp_path / "model.onnx"
    require_module("onnx", "onnx")
    require_module("onnx", "onnxruntime")
    run("export_onnx.py", ckpt, onnx_path)
    assert onnx_path.stat().st_size > 0

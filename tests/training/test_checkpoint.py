"""Checkpoint folders: complete or absent, found from an output folder, model rebuilt."""
import os

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.training import CheckpointError, FaceTrainer, load_model
from gluon_face.training.checkpoint import (
    build_backbone,
    load_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def trained(make_config, tmp_path):
    out = tmp_path / "run"
    trainer = FaceTrainer(make_config(output=str(out), loss="arcface", max_steps=2))
    trainer.fit()
    return trainer, out


def test_checkpoint_holds_the_full_state(trained):
    trainer, out = trained
    folder = out / "checkpoints" / "last"
    assert sorted(os.listdir(folder)) == ["backbone.params", "config.yaml", "head.params",
                                          "state.json", "trainer.states"]
    state = load_checkpoint_state(str(out))
    assert state["step"] == 2 and state["epoch"] == 0
    assert state["model"]["name"] == "faceresnet18"
    assert state["model"]["kwargs"]["channels"] == [4, 4, 4, 8, 8]
    assert state["head"] == {"name": "arcface", "kwargs": {}}
    assert state["num_classes"] == 4 and state["emb_size"] == 8
    assert state["image_size"] == [16, 16]
    assert "max_steps: 2" in (folder / "config.yaml").read_text()


def test_load_model_reproduces_the_embeddings(trained):
    trainer, out = trained
    backbone, head, state = load_model(str(out), ctx=mx.cpu())
    x = mx.np.array(onp.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype("float32"))
    onp.testing.assert_allclose(backbone(x).asnumpy(), trainer.backbone(x).asnumpy(),
                                rtol=1e-5, atol=1e-6)
    y = mx.np.array([0.0, 1.0, 3.0])
    onp.testing.assert_allclose(head(backbone(x), y).asnumpy(),
                                trainer.head(trainer.backbone(x), y).asnumpy(),
                                rtol=1e-5, atol=1e-5)


def test_failed_write_keeps_the_previous_checkpoint(trained, tmp_path):
    trainer, out = trained
    folder = out / "checkpoints" / "last"
    before = (folder / "backbone.params").read_bytes()

    class Broken:
        def save_parameters(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(str(folder), trainer.backbone, Broken(), trainer.trainer, {"step": 99},
                        "x: 1\n")
    assert (folder / "backbone.params").read_bytes() == before
    assert load_checkpoint_state(str(folder))["step"] == 2
    leftovers = [n for n in os.listdir(folder.parent) if n.startswith(".")]
    assert leftovers == []


def test_resolve_checkpoint_forms(trained, tmp_path):
    _, out = trained
    last = str(out / "checkpoints" / "last")
    assert resolve_checkpoint(str(out)) == last
    assert resolve_checkpoint(str(out / "checkpoints")) == last
    assert resolve_checkpoint(last) == last
    os.rename(last, last + ".old")  # a crash between the two renames
    assert resolve_checkpoint(str(out)) == last + ".old"
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_checkpoint(str(tmp_path))


def test_build_backbone_channels_and_errors():
    net = build_backbone("faceresnet18", channels=[4, 4, 4, 8, 8], emb_size=8, image_size=16)
    net.initialize()
    assert net(mx.np.zeros((1, 3, 16, 16))).shape == (1, 8)
    with pytest.raises(ValueError, match="valid names"):
        build_backbone("mobilenet", channels=[4, 4, 4, 8, 8])

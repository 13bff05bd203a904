"""Checkpoint folders: complete or absent, found from an output folder, model rebuilt."""
import json
import os
import pickle
import re

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
                                          "optimizer.json", "optimizer.params", "state.json"]
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

    with pytest.raises(CheckpointError, match="disk full.*previous one is kept"):
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


def test_no_file_of_a_checkpoint_is_a_pickle(trained):
    _, out = trained
    folder = out / "checkpoints" / "last"
    for name in os.listdir(folder):
        assert not (folder / name).read_bytes().startswith(b"\x80"), name  # pickle protocol 2+
    meta = json.loads((folder / "optimizer.json").read_text())
    assert meta["optimizer"] == "sgd" and meta["num_update"] == 2
    arrays = mx.npx.load(str(folder / "optimizer.params"))
    assert len(arrays) == len(meta["states"]) > 10  # one momentum per trained parameter


class _Hostile:
    """Unpickling this creates ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_optimizer_state_is_never_loaded(trained, make_config, tmp_path):
    _, out = trained
    folder = out / "checkpoints" / "last"
    marker = tmp_path / "code-ran"
    for name in ("optimizer.json", "optimizer.params"):
        (folder / name).unlink()
    (folder / "trainer.states").write_bytes(pickle.dumps(_Hostile(str(marker))))
    with pytest.raises(CheckpointError, match="trainer.states: optimizer state stored as a "
                                              "pickle.*--upgrade-checkpoint"):
        FaceTrainer(make_config(output=str(out), resume=str(out), loss="arcface"))
    assert not marker.exists()


def test_legacy_states_upgrade_and_resume_exactly(make_config, tmp_path, run_steps):
    common = dict(epochs=2, lr=0.05, warmup_epochs=0.5, loss="arcface")
    full = FaceTrainer(make_config(output=str(tmp_path / "full"), **common))
    whole = run_steps(full, 6)
    out = tmp_path / "part"
    first = FaceTrainer(make_config(output=str(out), max_steps=3, **common))
    first.fit()
    folder = out / "checkpoints" / "last"
    first.trainer.save_states(str(folder / "trainer.states"))  # MXNet's pickle, as before
    for name in ("optimizer.json", "optimizer.params"):
        (folder / name).unlink()
    resumed = FaceTrainer(make_config(output=str(out), resume=str(out), **common),
                          upgrade_checkpoint=True)
    assert sorted(n for n in os.listdir(folder) if "optimizer" in n or "states" in n) == \
        ["optimizer.json", "optimizer.params"]
    onp.testing.assert_allclose(run_steps(resumed, 3), whole[3:], rtol=1e-5)


@pytest.mark.parametrize("name", ["backbone.params", "head.params", "optimizer.params",
                                  "optimizer.json", "center.params"])
def test_a_checkpoint_missing_a_file_is_refused(make_config, tmp_path, name):
    out = tmp_path / "run"
    FaceTrainer(make_config(output=str(out), max_steps=1, center_loss_weight=0.1)).fit()
    (out / "checkpoints" / "last" / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        FaceTrainer(make_config(output=str(out), resume=str(out), center_loss_weight=0.1))


def test_truncated_files_give_one_line(make_config, tmp_path):
    out = tmp_path / "run"
    FaceTrainer(make_config(output=str(out), max_steps=1)).fit()
    folder = out / "checkpoints" / "last"
    for name, want in (("optimizer.params", "optimizer.params: unreadable optimizer state"),
                       ("optimizer.json", "optimizer.json: unreadable optimizer state"),
                       ("backbone.params", "backbone.params: cannot read parameters (Invalid")):
        saved = (folder / name).read_bytes()
        (folder / name).write_bytes(saved[:len(saved) // 3])
        with pytest.raises(CheckpointError, match=re.escape(want)) as err:
            FaceTrainer(make_config(output=str(out), resume=str(out)))
        assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
        (folder / name).write_bytes(saved)


def test_resume_with_another_batch_size_is_refused(make_config, tmp_path):
    out = tmp_path / "run"
    FaceTrainer(make_config(output=str(out), max_steps=1)).fit()
    with pytest.raises(CheckpointError, match="batch size 8 .*--batch-size 8"):
        FaceTrainer(make_config(output=str(out), resume=str(out), batch_size=4))


def test_center_loss_resume_repeats_the_uninterrupted_losses(make_config, tmp_path, run_steps):
    common = dict(epochs=2, lr=0.05, warmup_epochs=0.5, center_loss_weight=0.5,
                  center_loss_alpha=0.3, loss="softmax")
    full = FaceTrainer(make_config(output=str(tmp_path / "full"), **common))
    whole = run_steps(full, 8)
    out = str(tmp_path / "part")
    FaceTrainer(make_config(output=out, max_steps=4, **common)).fit()
    resumed = FaceTrainer(make_config(output=out, resume=out, **common))
    # the centres enter the loss: re-initialised ones would change every later loss
    onp.testing.assert_allclose(run_steps(resumed, 4), whole[4:], rtol=1e-5)

"""The training loop on a tiny 4-identity set with a 4-channel FaceResNet-18."""
import math
import os
import threading
import time

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.heads import list_heads
from gluon_face.training import (
    CheckpointError,
    ConfigError,
    FaceTrainer,
    TrainingDiverged,
    load_model,
    train,
)
from gluon_face.training.checkpoint import load_checkpoint_state


def _params(block):
    return {k: v.data(v.list_ctx()[0]).asnumpy() for k, v in
            block._collect_params_with_prefix().items()}


@pytest.mark.parametrize("loss", list_heads())
def test_every_loss_trains_finite(make_config, loss, run_steps):
    trainer = FaceTrainer(make_config(loss=loss, lr=0.01))
    losses = run_steps(trainer, 3)
    assert all(math.isfinite(v) for v in losses), losses


def test_margin_flags_reach_the_head(make_config):
    trainer = FaceTrainer(make_config(loss="arcface", margin_s=16.0, margin_m=0.25,
                                      easy_margin=True))
    assert trainer.head_spec["kwargs"] == {"margin_s": 16.0, "margin_m": 0.25,
                                           "easy_margin": True}
    with pytest.raises(ValueError, match="margin_m"):
        FaceTrainer(make_config(loss="softmax", margin_m=0.3))


def test_center_loss_and_label_smoothing_train(make_config, run_steps):
    trainer = FaceTrainer(make_config(center_loss_weight=0.01, label_smoothing=0.1))
    before = trainer.center.centers.data().asnumpy().copy()
    losses = run_steps(trainer, 2)
    assert all(math.isfinite(v) for v in losses)
    assert not onp.allclose(before, trainer.center.centers.data().asnumpy())


def test_full_run_loss_falls_and_writes_outputs(make_config, tmp_path):
    out = tmp_path / "full"
    summary = train(make_config(output=str(out), epochs=3, lr=0.05, hybridize=True,
                                log_interval=2, verbose=4))
    assert summary["status"] == "finished" and summary["step"] == 3 * 6
    assert summary["last_loss"] < summary["first_loss"]
    assert 0.0 <= summary["verification"]["val"] <= 1.0
    for name in ("metrics.csv", "curves.png", "roc.png", "config.yaml",
                 "checkpoints/last/state.json", "checkpoints/best/backbone.params",
                 "checkpoints/last/optimizer.params"):
        assert os.path.isfile(out / name), name
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "epoch", "lr", "loss", "samples_per_sec", "val_acc"} <= set(header)
    state = load_checkpoint_state(str(out))
    assert state["step"] == 18 and state["epoch"] == 3
    backbone, head, state = load_model(str(out), ctx=mx.cpu())
    x = mx.np.zeros((2, 3, 16, 16))
    assert backbone(x).shape == (2, 8)
    assert head(backbone(x), mx.np.zeros((2,))).shape == (2, 4)


def test_two_contexts_equal_one_context(make_config, tmp_path, run_steps):
    """Same global batch on [cpu(0)] and on [cpu(0), cpu(1)]: same losses and weights.

    BatchNorm in training mode normalises with the statistics of each device's
    slice, so a split batch is a different computation; ``freeze_bn`` makes BN
    use its running statistics (a per-sample affine map) and the two runs must
    then agree to float rounding (the device gradients are summed in another
    order).
    """
    runs = []
    for ctx, kvstore in (("cpu", "local"), ("cpu:0,1", "local"), ("cpu:0,1", "device")):
        cfg = make_config(ctx=ctx, freeze_bn=True, loss="cosface", lr=0.005, kvstore=kvstore,
                          output=str(tmp_path / (ctx + kvstore)))
        trainer = FaceTrainer(cfg)
        losses = run_steps(trainer, 4)
        runs.append((losses, _params(trainer.backbone), _params(trainer.head)))
    for other in runs[1:]:
        onp.testing.assert_allclose(runs[0][0], other[0], rtol=1e-5)
        for key, value in runs[0][1].items():
            onp.testing.assert_allclose(value, other[1][key], rtol=1e-4, atol=1e-6, err_msg=key)
        for key, value in runs[0][2].items():
            onp.testing.assert_allclose(value, other[2][key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_repeats_the_uninterrupted_losses(make_config, tmp_path, optimizer, run_steps):
    common = dict(epochs=2, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003,
                  warmup_epochs=0.5, use_dropout=True, log_interval=1)
    full = FaceTrainer(make_config(output=str(tmp_path / "full"), **common))
    whole = run_steps(full, 9)

    first = FaceTrainer(make_config(output=str(tmp_path / "part"), max_steps=5, **common))
    summary = first.fit()
    assert summary["status"] == "max_steps" and summary["step"] == 5
    resumed = FaceTrainer(make_config(output=str(tmp_path / "part"),
                                      resume=str(tmp_path / "part"), **common))
    assert resumed.step == 5
    assert resumed.trainer.learning_rate == pytest.approx(full.scheduler(5))
    after = run_steps(resumed, 4)
    onp.testing.assert_allclose(after, whole[5:], rtol=1e-5)


def test_dataloader_workers_do_not_change_the_batches(make_config, tmp_path):
    losses = []
    for workers in (0, 2):
        summary = FaceTrainer(make_config(output=str(tmp_path / str(workers)), max_steps=3,
                                          num_workers=workers)).fit()
        losses.append((summary["first_loss"], summary["last_loss"]))
    onp.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_a_failing_batch_leaves_no_decoding_thread_behind(make_config, tmp_path, monkeypatch):
    # The background decoder is busy with the next batch when a corrupt record
    # ends the run; a thread left decoding when Python exits aborts the process
    # (exit 134), so fit must wait for it before it raises.
    from gluon_face.data import RecordFormatError
    from gluon_face.training.loader import FlipDataset

    from .conftest import make_tiny_data

    get = FlipDataset.__getitem__

    def slow_get(self, i):
        time.sleep(0.05)
        return get(self, i)

    monkeypatch.setattr(FlipDataset, "__getitem__", slow_get)
    data = make_tiny_data(str(tmp_path / "data"), corrupt=17)
    before = set(threading.enumerate())
    with pytest.raises(RecordFormatError, match="record 18"):
        FaceTrainer(make_config(data_dir=data, output=str(tmp_path / "out"))).fit()
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []


def test_a_failing_batch_from_a_worker_process_names_the_record(make_config, tmp_path):
    import multiprocessing

    from gluon_face.data import RecordFormatError

    from .conftest import make_tiny_data

    data = make_tiny_data(str(tmp_path / "data"), corrupt=17)
    with pytest.raises(RecordFormatError, match="record 18"):
        FaceTrainer(make_config(data_dir=data, output=str(tmp_path / "out"),
                                num_workers=2)).fit()
    assert multiprocessing.active_children() == []


def test_resume_rejects_another_network_or_class_count(make_config, tmp_path, tiny_data_5):
    out = str(tmp_path / "ckpt")
    FaceTrainer(make_config(output=out, max_steps=1)).fit()
    with pytest.raises(CheckpointError, match="different setup.*network faceresnet18"):
        FaceTrainer(make_config(output=str(tmp_path / "o1"), resume=out,
                                model_kwargs={"channels": [4, 4, 8, 8, 8]}))
    with pytest.raises(CheckpointError, match="4 classes vs 5"):
        FaceTrainer(make_config(output=str(tmp_path / "o2"), resume=out, data_dir=tiny_data_5))
    with pytest.raises(CheckpointError, match="loss 'cosface' vs 'arcface'"):
        FaceTrainer(make_config(output=str(tmp_path / "o3"), resume=out, loss="arcface"))


def test_nan_loss_stops_and_keeps_last_checkpoint(make_config, tmp_path):
    out = str(tmp_path / "nan")
    FaceTrainer(make_config(output=out, loss="softmax", max_steps=2)).fit()
    params = (tmp_path / "nan" / "checkpoints" / "last" / "backbone.params").read_bytes()
    trainer = FaceTrainer(make_config(output=out, resume=out, loss="softmax", lr=1e12,
                                      warmup_epochs=0, verbose=1, epochs=3))
    with pytest.raises(TrainingDiverged, match=r"(at|after) step \d+ .*last good checkpoint"):
        trainer.fit()
    state = load_checkpoint_state(out)
    assert state["step"] == 2
    assert (tmp_path / "nan" / "checkpoints" / "last" / "backbone.params").read_bytes() == params


def test_bad_inputs(make_config, tmp_path, tiny_data):
    with pytest.raises(ValueError, match="valid names: .*faceresnet18"):
        FaceTrainer(make_config(network="resnet9000", model_kwargs={}))
    with pytest.raises(ValueError, match="valid names: .*arcface.*cosface"):
        FaceTrainer(make_config(loss="triplet"))
    with pytest.raises(ConfigError, match="does not split evenly"):
        FaceTrainer(make_config(ctx="cpu:0,1,2", batch_size=8))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no train.rec"):
        FaceTrainer(make_config(data_dir=str(empty)))
    with pytest.raises(ValueError, match="gpu"):
        FaceTrainer(make_config(ctx="gpu:7"))
    with pytest.raises(ConfigError, match="val_targets"):
        FaceTrainer(make_config(val_targets=["lfw"]))
    with pytest.raises(ConfigError, match="DMLC_ROLE"):
        FaceTrainer(make_config(kvstore="dist_sync"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        FaceTrainer(make_config(resume=str(tmp_path / "nothing")))


def test_find_val_targets_order_and_names(tmp_path):
    from gluon_face.training import find_val_targets

    for name in ("zeta", "agedb_30", "lfw", "alpha", "cfp_fp"):
        (tmp_path / f"{name}.bin").write_bytes(b"")
    names = [n for n, _ in find_val_targets(str(tmp_path))]
    assert names == ["lfw", "cfp_fp", "agedb_30", "alpha", "zeta"]
    other = tmp_path / "elsewhere.bin"
    other.write_bytes(b"")
    assert find_val_targets(str(tmp_path), ["zeta", str(other)]) == [
        ("zeta", str(tmp_path / "zeta.bin")), ("elsewhere", str(other))]
    with pytest.raises(ConfigError, match="lfw, cfp_fp|agedb_30"):
        find_val_targets(str(tmp_path), ["calfw"])


def _asymmetric_data(folder):
    """The tiny set, declared not mirror-symmetric, with an identification .rec."""
    import json

    from gluon_face.data import write_face_rec

    from .conftest import PER_CLASS, _image, _png, make_tiny_data

    make_tiny_data(str(folder))
    rng = onp.random.default_rng(7)
    os.makedirs(folder / "unseen")
    write_face_rec(str(folder / "unseen" / "ids"),
                   [(c, _png(_image(c, rng))) for c in range(4) for _ in range(PER_CLASS // 2)],
                   (16, 16), names=["a", "b", "c", "d"])
    (folder / "dataset.json").write_text(json.dumps(
        {"flip": False, "flip_test": False, "identification": "unseen/ids.rec"}))
    return folder


def test_data_folder_decides_flips_and_open_set_metrics(make_config, tmp_path):
    """dataset.json turns the mirror off in training and verification, and names the
    identification set whose TAR@FAR and rank-1 each verification reports."""
    import yaml

    from gluon_face.embedding import extract_embeddings
    from gluon_face.evaluation import all_pairs_verification

    folder = _asymmetric_data(tmp_path / "data")
    out = tmp_path / "run"
    trainer = FaceTrainer(make_config(data_dir=str(folder), output=str(out), epochs=1,
                                      hybridize=True))
    cfg = trainer.config
    assert cfg.flip is False and cfg.flip_test is False
    assert cfg.val_identification == str(folder / "unseen" / "ids.rec")
    summary = trainer.fit()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["flip"] is False and saved["flip_test"] is False
    res = trainer.last_results["val"]
    assert res["flip"] is None and res["score"] is res["noflip"]
    # the reported open-set figures are those of the backbone's own embeddings
    path, images, labels = trainer.identification
    emb = extract_embeddings(trainer.backbone, images, ctx_list=trainer.ctx)
    want = all_pairs_verification(emb, labels)
    got = trainer.last_identification["all_pairs"]
    assert got.tar_at_far[1e-3] == pytest.approx(want.tar_at_far[1e-3], abs=1e-6)
    assert summary["identification"]["tar_at_far"][1e-3] == got.tar_at_far[1e-3]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"open_tar_far1e-3", "open_rank1", "val_acc"} <= set(header)
    # flags still win over the data folder, and 'none' turns identification off
    trainer = FaceTrainer(make_config(data_dir=str(folder), output=str(tmp_path / "r2"),
                                      flip=True, flip_test=True, val_identification="none"))
    assert trainer.config.flip is True and trainer.config.flip_test is True
    assert trainer.identification is None
    # a folder without dataset.json is faces: both mirrors on, nothing to identify
    trainer = FaceTrainer(make_config(output=str(tmp_path / "r3")))
    assert trainer.config.flip is True and trainer.config.flip_test is True
    assert trainer.identification is None


def test_margin_scale_is_ignored_by_heads_without_one(make_config):
    """The default job sets margin_s; --loss softmax (no fixed scale) must still build."""
    trainer = FaceTrainer(make_config(loss="softmax", margin_s=16.0))
    assert "margin_s" not in trainer.head_spec["kwargs"]
    trainer = FaceTrainer(make_config(loss="normface", margin_s=16.0))
    assert trainer.head_spec["kwargs"] == {"margin_s": 16.0}

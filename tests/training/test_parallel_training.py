"""--model-parallel / --sample-rate: the sharded head and Partial FC in the training loop.

Same tiny 4-identity set and 4-channel FaceResNet-18 as test_trainer.py.
"""
import math
import os

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.commands import train
from gluon_face.parallel import PartialFC, ShardedMarginHead
from gluon_face.training import CheckpointError, ConfigError, FaceTrainer, TrainConfig, load_model
from gluon_face.training.checkpoint import load_checkpoint_state

from .conftest import SIZE, _png, tiny_config
from .test_trainer import _params

MANY_CLASSES = 16
COLOURS = ((0,), (1,), (2,), (0, 1))


def _many_image(label, rng):
    """Quadrant ``label % 4`` lit in colour ``COLOURS[label // 4]``, plus noise."""
    img = rng.integers(0, 60, size=(SIZE, SIZE, 3))
    r, c = divmod(label % 4, 2)
    for ch in COLOURS[label // 4]:
        img[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8, ch] += 180
    return onp.clip(img, 0, 255).astype(onp.uint8)


@pytest.fixture(scope="module")
def many_data(tmp_path_factory):
    """16 identities x 3 images: enough classes per shard for Partial FC to sample."""
    from gluon_face.data import write_face_rec

    folder = str(tmp_path_factory.mktemp("many_classes"))
    rng = onp.random.default_rng(1)
    samples = [(label, _png(_many_image(label, rng)))
               for label in range(MANY_CLASSES) for _ in range(3)]
    write_face_rec(os.path.join(folder, "train"), samples, (SIZE, SIZE))
    return folder


def _centres(trainer):
    if trainer.parallel:
        return trainer.head.weight()
    return trainer.head.fc7_weight.data(trainer.ctx[0]).asnumpy()


@pytest.mark.parametrize("loss, optimizer", [("cosface", "sgd"), ("arcface", "adamw")])
def test_model_parallel_equals_the_single_device_head(make_config, tmp_path, loss, optimizer,
                                                      run_steps):
    """Plain head vs class centres sharded over cpu(0), cpu(1): same losses and weights.

    freeze_bn as in test_two_contexts_equal_one_context, so the split batch is the
    same computation; the same seed gives the same initial centres in both modes.
    """
    runs = []
    for parallel in (False, True):
        cfg = make_config(ctx="cpu:0,1", freeze_bn=True, loss=loss, optimizer=optimizer,
                          lr=0.005 if optimizer == "sgd" else 0.003, warmup_epochs=0.5,
                          label_smoothing=0.1, model_parallel=parallel,
                          output=str(tmp_path / str(parallel)))
        trainer = FaceTrainer(cfg)
        assert trainer.parallel is parallel
        if parallel:
            assert isinstance(trainer.head, ShardedMarginHead)
            assert not isinstance(trainer.head, PartialFC)
            assert [s.size for s in trainer.head.shards] == [2, 2]
        start = _centres(trainer).copy()
        losses = run_steps(trainer, 4)
        runs.append((start, losses, _params(trainer.backbone), _centres(trainer)))
    (start0, loss0, bb0, w0), (start1, loss1, bb1, w1) = runs
    onp.testing.assert_array_equal(start0, start1)
    onp.testing.assert_allclose(loss0, loss1, rtol=1e-5)
    assert loss0[-1] != loss0[0]
    for key, value in bb0.items():
        onp.testing.assert_allclose(value, bb1[key], rtol=1e-4, atol=1e-6, err_msg=key)
    onp.testing.assert_allclose(w0, w1, rtol=1e-4, atol=1e-6)
    assert not onp.allclose(start1, w1)  # the head's own optimizer did update the centres


def test_head_lr_follows_the_backbone_schedule(make_config, run_steps):
    trainer = FaceTrainer(make_config(ctx="cpu:0,1", model_parallel=True, warmup_epochs=1.0,
                                      epochs=2, optimizer="nag", momentum=0.8, wd=1e-3))
    opt, head_opt = trainer.trainer.optimizer, trainer.head.optimizer
    assert type(head_opt) is type(opt) and head_opt is not opt
    assert (head_opt.momentum, head_opt.wd) == (0.8, 1e-3)
    for _ in range(3):
        run_steps(trainer, 1)
        assert head_opt.num_update == opt.num_update == trainer.step
        assert head_opt.learning_rate == pytest.approx(trainer.trainer.learning_rate)
        assert head_opt.learning_rate == pytest.approx(trainer.scheduler(trainer.step))


def _sampled_fraction(trainer):
    return len(trainer.head.sampled_classes()) / trainer.num_classes


def test_partial_fc_trains_and_the_loss_falls(many_data, tmp_path, run_steps):
    trainer = FaceTrainer(tiny_config(many_data, output=str(tmp_path / "pfc"), ctx="cpu:0,1",
                                      sample_rate=0.5, lr=0.1, hybridize=True, epochs=6,
                                      loss="arcface", margin_s=8.0, margin_m=0.1))
    assert isinstance(trainer.head, PartialFC) and trainer.head.sample_rate == 0.5
    losses, fractions = [], []
    for _ in range(36):
        losses += run_steps(trainer, 1)
        fractions.append(_sampled_fraction(trainer))
    assert all(math.isfinite(v) for v in losses), losses
    assert min(fractions) < 1.0, fractions  # some steps really used a subset of the centres
    # Single batches are noisy here (3.7-7.1 in the first epoch): compare two epochs at
    # each end.  Over seeds 0-3, with and without split_prelu, this ratio was 0.66-0.84;
    # the former last-6-vs-first-6 < 0.75 failed for 3 of those 8 runs.
    assert onp.mean(losses[-12:]) < 0.9 * onp.mean(losses[:12]), losses


def test_partial_fc_resume_repeats_the_uninterrupted_losses(many_data, tmp_path, run_steps):
    # 16 classes over 2 shards of 8 at rate 0.75: 6 rows per shard and step, i.e. the
    # batch's classes plus negatives drawn by the head's generator (saved in head.states).
    common = dict(ctx="cpu:0,1", sample_rate=0.75, epochs=2, lr=0.05, warmup_epochs=0.5,
                  use_dropout=True, label_smoothing=0.1, optimizer="sgd")
    full = FaceTrainer(tiny_config(many_data, output=str(tmp_path / "full"), **common))
    whole, fractions = [], []
    for _ in range(9):
        whole += run_steps(full, 1)
        fractions.append(_sampled_fraction(full))
    assert min(fractions) < 1.0, fractions
    first = FaceTrainer(tiny_config(many_data, output=str(tmp_path / "part"), max_steps=5,
                                    **common))
    assert first.fit()["step"] == 5
    folder = tmp_path / "part" / "checkpoints" / "last"
    assert (folder / "head.states").is_file()
    resumed = FaceTrainer(tiny_config(many_data, output=str(tmp_path / "part"),
                                      resume=str(tmp_path / "part"), **common))
    assert resumed.step == 5
    assert resumed.head.optimizer.learning_rate == pytest.approx(full.scheduler(5))
    after = run_steps(resumed, 4)
    onp.testing.assert_allclose(after, whole[5:], rtol=1e-5)
    onp.testing.assert_allclose(resumed.head.weight(), full.head.weight(), rtol=1e-5,
                                atol=1e-7)

    # the checkpoint serves evaluation as a single-device ArcMarginBlock
    backbone, head, state = load_model(str(tmp_path / "part"), ctx=mx.cpu())
    assert state["head"]["parallel"] == {"sample_rate": 0.75}
    onp.testing.assert_array_equal(head.fc7_weight.data().asnumpy(), first.head.weight())
    x = mx.np.zeros((2, 3, 16, 16))
    assert head(backbone(x), mx.np.zeros((2,))).shape == (2, MANY_CLASSES)

    # a single-device run cannot continue it
    with pytest.raises(CheckpointError, match="model-parallel head vs single-device head"):
        FaceTrainer(tiny_config(many_data, output=str(tmp_path / "o"),
                                resume=str(tmp_path / "part"),
                                **dict(common, sample_rate=1.0)))
    os.remove(folder / "head.states")
    with pytest.raises(CheckpointError, match="head.states"):
        FaceTrainer(tiny_config(many_data, output=str(tmp_path / "o2"),
                                resume=str(tmp_path / "part"), **common))


def test_softmax_checkpoint_loads_as_cosine_softmax(make_config, tmp_path):
    out = str(tmp_path / "sm")
    trainer = FaceTrainer(make_config(ctx="cpu:0,1", model_parallel=True, loss="softmax",
                                      output=out, max_steps=2, center_loss_weight=0.01))
    summary = trainer.fit()
    assert math.isfinite(summary["last_loss"])
    _, head, state = load_model(out)
    assert state["head"]["parallel"] == {"sample_rate": 1.0}
    assert (head.margin_s, head.margin_m, head.margin_b) == (64.0, 0.0, 0.0)
    onp.testing.assert_array_equal(head.fc7_weight.data().asnumpy(), trainer.head.weight())
    assert load_checkpoint_state(out)["step"] == 2


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5, float("nan")])
def test_sample_rate_outside_the_unit_interval(rate):
    want = r"sample_rate must be a finite number" if rate != rate else \
        r"sample_rate must be in \(0, 1\]"
    with pytest.raises(ConfigError, match=want):
        TrainConfig(sample_rate=rate)


@pytest.mark.parametrize("loss", ["adacos", "asoftmax", "l2softmax"])
def test_loss_without_a_parallel_head_lists_the_valid_ones(make_config, loss):
    with pytest.raises(ConfigError) as info:
        FaceTrainer(make_config(loss=loss, model_parallel=True))
    msg = str(info.value)
    assert "\n" not in msg and loss in msg
    assert "arcface, combined, cosface, cosine, normface, sphereface" in msg
    with pytest.raises(ConfigError, match="valid: arcface"):
        FaceTrainer(make_config(loss=loss, sample_rate=0.5))


def test_model_parallel_refuses_dist_kvstores():
    with pytest.raises(ConfigError, match="kvstore dist_sync"):
        TrainConfig(model_parallel=True, kvstore="dist_sync")
    assert TrainConfig(sample_rate=0.3).parallel_head
    assert not TrainConfig().parallel_head


def test_train_tool_flags(many_data, tmp_path, capsys):
    base = ["--data-dir", many_data, "--network", "faceresnet18", "--model-kwargs",
            "channels=[4,4,4,8,8]", "--emb-size", "8", "--batch-size", "8", "--epochs", "2",
            "--warmup-epochs", "0", "--no-hybridize", "--ctx", "cpu:0,1"]
    out = tmp_path / "cli"
    code = train.main(base + ["--output", str(out), "--loss", "arcface", "--sample-rate", "0.5",
                              "--max-steps", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "max_steps after 2 steps" in captured.out
    assert "model-parallel head: PartialFC" in (out / "train.log").read_text()
    state = load_checkpoint_state(str(out))
    assert state["head"]["parallel"] == {"sample_rate": 0.5} and state["step"] == 2

    for extra, message in (
            (["--sample-rate", "1.5"], r"sample_rate must be in (0, 1]"),
            (["--sample-rate", "0"], r"sample_rate must be in (0, 1]"),
            (["--model-parallel", "--loss", "adacos"],
             "no model-parallel head; valid: arcface, combined, cosface, cosine, normface, "
             "sphereface")):
        code = train.main(base + ["--output", str(tmp_path / "bad")] + extra)
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("train.py: error:"), err
        assert message in lines[0], err

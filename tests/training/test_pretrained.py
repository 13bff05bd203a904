"""--pretrained: a new run that starts from another checkpoint's backbone; backbone-only
checkpoints (no classifier), which --resume refuses and --pretrained takes."""
import os

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.graph import mxnet_compat
from gluon_face.training import CheckpointError, ConfigError, FaceTrainer, load_model, train
from gluon_face.training.checkpoint import save_checkpoint
from gluon_face.training.run_folder import check_output


def _arrays(block):
    return {k: p.data(p.list_ctx()[0]).asnumpy()
            for k, p in mxnet_compat.structural_params(block).items()}


@pytest.fixture
def first_run(make_config, tmp_path):
    out = tmp_path / "first"
    train(make_config(output=str(out), epochs=1, max_steps=2))
    return out


def test_a_run_starts_from_the_backbone_and_nothing_else(make_config, first_run, tmp_path,
                                                        run_steps):
    saved, saved_head, _ = load_model(str(first_run))
    trainer = FaceTrainer(make_config(output=str(tmp_path / "second"),
                                      pretrained=str(first_run), seed=1))
    got = _arrays(trainer.backbone)
    for key, value in _arrays(saved).items():
        onp.testing.assert_array_equal(got[key], value, err_msg=key)
    assert trainer.step == 0
    # the head is this run's own initialisation (another seed), not the checkpoint's
    assert not onp.allclose(_arrays(trainer.head)["fc7_weight"],
                            _arrays(saved_head)["fc7_weight"])
    losses = run_steps(trainer, 2)
    assert all(onp.isfinite(losses))


def test_another_network_or_width_is_refused(make_config, first_run, tmp_path):
    with pytest.raises(CheckpointError, match="its backbone is 'faceresnet18'.*faceresnet34"):
        FaceTrainer(make_config(output=str(tmp_path / "x"), network="faceresnet34",
                                pretrained=str(first_run)))
    with pytest.raises(CheckpointError, match="backbone.params.*shape"):
        FaceTrainer(make_config(output=str(tmp_path / "y"), emb_size=16,
                                pretrained=str(first_run)))


def test_resume_and_pretrained_exclude_each_other(make_config, first_run):
    with pytest.raises(ConfigError, match="resume and pretrained"):
        make_config(resume=str(first_run), pretrained=str(first_run))


def test_the_run_never_writes_into_what_it_starts_from(make_config, first_run):
    for output in (first_run / "checkpoints" / "last" / "new", first_run.parent):
        cfg = make_config(output=str(output), pretrained=str(first_run))
        with pytest.raises(ConfigError, match="overlap"):
            check_output(cfg, overwrite=True, log=None)


def test_backbone_only_checkpoint(make_config, first_run, tmp_path):
    backbone, _, state = load_model(str(first_run))
    folder = str(tmp_path / "backbone_only")
    state = {k: v for k, v in state.items() if k != "folder"}
    save_checkpoint(folder, backbone, None, None, dict(state, head=None, num_classes=0),
                    "# no training run\n")
    assert not os.path.exists(os.path.join(folder, "head.params"))
    again, head, loaded = load_model(folder)
    assert head is None and loaded["head"] is None
    x = mx.np.ones((2, 3, 16, 16))
    onp.testing.assert_array_equal(again(x).asnumpy(), backbone(x).asnumpy())
    with pytest.raises(CheckpointError, match="backbone only.*--pretrained"):
        FaceTrainer(make_config(output=str(tmp_path / "r"), resume=folder))
    trainer = FaceTrainer(make_config(output=str(tmp_path / "p"), pretrained=folder))
    onp.testing.assert_array_equal(trainer.backbone(x).asnumpy(), backbone(x).asnumpy())

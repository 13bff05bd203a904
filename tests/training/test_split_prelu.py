"""Training through the split-PReLU graph (``split_prelu``, on by default with ``hybridize``).

The split graph computes the same function with other operators, so losses
agree with the plain graph to float32 rounding at first and the curves stay
together; parameters, gradients' destination and checkpoints are the backbone's.
"""
import json
import os

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.training import FaceTrainer
from gluon_face.training.checkpoint import load_checkpoint_state


def _ops(block):
    return [n["op"] for n in json.loads(block._cached_graph[1].tojson())["nodes"]]


def test_hybridized_training_runs_the_split_graph_on_the_backbone_parameters(make_config,
                                                                              run_steps):
    trainer = FaceTrainer(make_config(hybridize=True))
    block = trainer.train_backbone
    assert block is not trainer.backbone
    run_steps(trainer, 1)
    ops = _ops(block)
    assert "LeakyReLU" not in ops and "_npi_add" not in ops and "elemwise_add" in ops
    ours, theirs = block.collect_params(), trainer.backbone.collect_params()
    assert all(ours[k] is theirs[k] for k in theirs)  # gradients land in the backbone
    extra = set(ours.keys()) - set(theirs.keys())
    assert extra and all(ours[k].grad_req == "null" for k in extra)
    alpha = [p for k, p in theirs.items() if k.endswith("alpha")][0]
    assert onp.abs(alpha.grad().asnumpy()).sum() > 0  # the slope trains through the split

    for off in (make_config(hybridize=True, split_prelu=False), make_config(hybridize=False)):
        plain = FaceTrainer(off)
        assert plain.train_backbone is plain.backbone


def test_split_graph_loss_curve_follows_the_plain_graph(demo_losses):
    """24 steps on the digits demo set, softmax head, tiny FaceResNet-18 (as test_amp's).

    Same seed: only float32 rounding separates the split and plain graphs, so
    the first loss agrees to 1e-6 and the curves stay together; another seed
    (another initialisation, the same SGD noise) must leave the band.  (With a
    margin head, s=64 turns rounding into step-to-step chaos on this tiny net.)
    """
    plain, split, other = (demo_losses(split_prelu=False)[0], demo_losses(split_prelu=True)[0],
                           demo_losses(split_prelu=False, seed=1)[0])
    assert split[0] == pytest.approx(plain[0], rel=1e-5)

    def rel(a, b):
        a, b = a.reshape(-1, 4).mean(axis=1), b.reshape(-1, 4).mean(axis=1)
        return onp.abs(a - b) / b

    # rounding differences grow step by step (measured per 4-step window:
    # 6e-5, 2e-4, 2e-3, 2e-3, 1e-2, 2e-2); another seed starts far off (> 5%).
    assert rel(split, plain)[:2].max() < 1e-3
    assert rel(split, plain).max() < 0.04
    assert rel(other, plain).max() > 0.04


def test_resume_with_the_split_graph_repeats_the_uninterrupted_losses(make_config, tmp_path,
                                                                      run_steps):
    common = dict(epochs=2, warmup_epochs=0.5, hybridize=True)
    whole = run_steps(FaceTrainer(make_config(output=str(tmp_path / "full"), **common)), 7)
    part = str(tmp_path / "part")
    assert FaceTrainer(make_config(output=part, max_steps=3, **common)).fit()["step"] == 3
    state = load_checkpoint_state(part)
    assert state["step"] == 3
    # the split graph's fixed statistics are not part of the checkpoint
    saved = mx.npx.load(os.path.join(part, "checkpoints", "last", "backbone.params"))
    assert not any(k.endswith(("_slope_mean", "_rest_var")) for k in saved)
    resumed = FaceTrainer(make_config(output=part, resume=part, **common))
    onp.testing.assert_allclose(run_steps(resumed, 4), whole[3:], rtol=1e-5)


def test_split_prelu_auto_is_on_for_cpus_only(make_config):
    from gluon_face.training.trainer import split_prelu_for

    assert split_prelu_for([mx.cpu(0), mx.cpu(1)]) is True
    assert split_prelu_for([mx.gpu(0)]) is False  # a Context object needs no GPU
    assert split_prelu_for([mx.cpu(0), mx.gpu(0)]) is False
    trainer = FaceTrainer(make_config(hybridize=True, split_prelu=None))
    assert trainer.config.split_prelu is True  # resolved, and so recorded in config.yaml

"""The training loop's callbacks on the tiny 4-identity set (6 steps per epoch)."""
import logging
import signal
import time

import pytest

from gluon_face.training import Callback, FaceTrainer, TrainingDiverged
from gluon_face.training.callbacks import (
    Checkpoints,
    Plots,
    ProgressLog,
    SignalStop,
    Verification,
    default_callbacks,
)
from gluon_face.training.checkpoint import load_checkpoint_state


class Recorder(Callback):
    """Writes down every hook call with what the loop told it."""

    def __init__(self):
        self.events = []
        self.infos = []
        self.run = None

    def on_train_begin(self, trainer, run):
        self.events.append(("begin", run.start_step, run.end_step, trainer.step))

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(("epoch_begin", epoch, trainer.step))

    def on_step_end(self, trainer, info):
        self.infos.append(info)
        self.events.append(("step", info.step, info.epoch, trainer.step))

    def on_epoch_end(self, trainer, epoch):
        self.events.append(("epoch_end", epoch, trainer.step))

    def on_train_end(self, trainer, run):
        self.run = run
        self.events.append(("end", run.status, trainer.step))


def _steps(first, last, epoch):
    return [("step", s, epoch, s) for s in range(first, last + 1)]


def test_a_user_callback_sees_every_hook_in_order(make_config, tmp_path):
    out = str(tmp_path / "run")
    rec = Recorder()
    trainer = FaceTrainer(make_config(output=out, epochs=2, log_interval=100), callbacks=[rec])
    assert trainer.callbacks[-1] is rec
    summary = trainer.fit()
    assert summary["status"] == "finished" and summary["step"] == 12
    assert rec.events == (
        [("begin", 0, 12, 0), ("epoch_begin", 1, 0)] + _steps(1, 6, 1) + [("epoch_end", 1, 6)]
        + [("epoch_begin", 2, 6)] + _steps(7, 12, 2) + [("epoch_end", 2, 12)]
        + [("end", "finished", 12)])
    assert rec.run.error is None
    assert [i.step for i in rec.infos if i.epoch_end] == [6, 12]
    assert [i.step for i in rec.infos if i.evaluate] == [6, 12]  # verbose=0: epoch ends
    assert [i.step for i in rec.infos if i.last] == [12]
    assert rec.infos[0].loss == summary["first_loss"]
    assert rec.infos[-1].loss == summary["last_loss"]
    assert all(i.seconds > 0 for i in rec.infos)


def test_step_numbers_continue_across_a_resume(make_config, tmp_path):
    out = str(tmp_path / "run")
    first = Recorder()
    FaceTrainer(make_config(output=out, epochs=1, max_steps=4), callbacks=[first]).fit()
    assert first.events == ([("begin", 0, 4, 0), ("epoch_begin", 1, 0)] + _steps(1, 4, 1)
                            + [("end", "max_steps", 4)])  # no epoch_end: cut short
    resumed = Recorder()
    FaceTrainer(make_config(output=out, resume=out, epochs=2, verbose=4),
                callbacks=[resumed]).fit()
    assert resumed.events == (
        [("begin", 4, 12, 4), ("epoch_begin", 1, 4)] + _steps(5, 6, 1) + [("epoch_end", 1, 6)]
        + [("epoch_begin", 2, 6)] + _steps(7, 12, 2) + [("epoch_end", 2, 12)]
        + [("end", "finished", 12)])
    assert [i.step for i in resumed.infos if i.evaluate] == [6, 8, 12]


class StopAt(Recorder):
    def __init__(self, step, reason="enough", status="stopped"):
        super().__init__()
        self.stop_step, self.reason, self.status = step, reason, status

    def on_step_end(self, trainer, info):
        super().on_step_end(trainer, info)
        if info.step == self.stop_step:
            trainer.request_stop(self.reason, status=self.status)
            trainer.request_stop("ignored: the first request wins", status="other")


def test_a_stop_request_ends_the_run_after_that_step_with_a_checkpoint(make_config, tmp_path,
                                                                       caplog):
    out = tmp_path / "run"
    stop = StopAt(3)
    trainer = FaceTrainer(make_config(output=str(out), epochs=5), callbacks=[stop])
    with caplog.at_level(logging.INFO, logger="gluon_face.training"):
        summary = trainer.fit()
    assert summary["status"] == "stopped" and summary["step"] == 3
    assert [i.step for i in stop.infos] == [1, 2, 3]
    assert stop.events[-1] == ("end", "stopped", 3)
    assert load_checkpoint_state(str(out))["step"] == 3  # no evaluation point before it
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == "3"
    assert "stopped at step 3: enough" in caplog.messages
    # the next run carries on where the stop left off
    again = Recorder()
    FaceTrainer(make_config(output=str(out), resume=str(out), epochs=1),
                callbacks=[again]).fit()
    assert [i.step for i in again.infos] == [4, 5, 6]


def test_a_stop_with_its_own_status_at_an_epoch_end(make_config, tmp_path, caplog):
    out = tmp_path / "run"
    stop = StopAt(6, status="plateau")
    with caplog.at_level(logging.INFO, logger="gluon_face.training"):
        summary = FaceTrainer(make_config(output=str(out), epochs=3),
                              callbacks=[stop]).fit()
    assert summary["status"] == "plateau" and summary["step"] == 6
    assert stop.events[-2:] == [("epoch_end", 1, 6), ("end", "plateau", 6)]
    assert load_checkpoint_state(str(out))["step"] == 6
    assert not any("stopped at step" in m for m in caplog.messages)  # the caller reports it


class SeesBuiltins(Callback):
    """Checks, from after the built-ins, what they have done by each hook."""

    def __init__(self, out, handler_before):
        self.out = out
        self.before = handler_before
        self.checked_steps = []

    def on_train_begin(self, trainer, run):
        self.installed = signal.getsignal(signal.SIGTERM)
        assert self.installed != self.before  # SignalStop began first

    def on_step_end(self, trainer, info):
        assert signal.getsignal(signal.SIGTERM) == self.installed
        assert signal.getsignal(signal.SIGINT) == self.installed
        row = trainer.history[-1]
        if info.evaluate:
            # Verification's row, Checkpoints' checkpoint and Plots' figures of this step
            assert row["step"] == info.step and "val_acc" in row
            assert load_checkpoint_state(str(self.out))["step"] == info.step
            assert (self.out / "curves.png").is_file() and (self.out / "roc.png").is_file()
        else:
            assert row["step"] == info.step and "samples_per_sec" in row  # ProgressLog's
        self.checked_steps.append(info.step)

    def on_train_end(self, trainer, run):
        assert signal.getsignal(signal.SIGTERM) == self.before  # SignalStop ended first
        self.ended = True


def test_builtin_callbacks_come_first_in_their_order(make_config, tmp_path):
    assert [type(c) for c in default_callbacks()] == [ProgressLog, Verification, Checkpoints,
                                                      Plots, SignalStop]
    out = tmp_path / "run"
    mine = SeesBuiltins(out, signal.getsignal(signal.SIGTERM))
    trainer = FaceTrainer(make_config(output=str(out), epochs=1, verbose=4, log_interval=1),
                          callbacks=[mine])
    assert [type(c) for c in trainer.callbacks] == [ProgressLog, Verification, Checkpoints,
                                                    Plots, SignalStop, SeesBuiltins]
    trainer.fit()
    assert mine.checked_steps == [1, 2, 3, 4, 5, 6] and mine.ended


class Sleeper(Callback):
    def on_step_end(self, trainer, info):
        time.sleep(1.0)


def test_time_in_callbacks_is_not_training_speed(make_config, tmp_path):
    """With 1 s spent in a callback after every step, counting it would give at most
    8 samples/s (batch 8); the reported speed only counts loading and the step."""
    trainer = FaceTrainer(make_config(output=str(tmp_path / "run"), max_steps=3),
                          callbacks=[Sleeper()])
    trainer.fit()
    speeds = [row["samples_per_sec"] for row in trainer.history if "samples_per_sec" in row]
    assert len(speeds) == 3 and min(speeds) > 8.0, speeds


class FailsAtEnd(Callback):
    def on_train_end(self, trainer, run):
        raise RuntimeError("end hook failed")


def test_every_on_train_end_runs_and_sees_the_error(make_config, tmp_path):
    out = tmp_path / "run"
    rec = Recorder()
    trainer = FaceTrainer(make_config(output=str(out), max_steps=2),
                          callbacks=[FailsAtEnd(), rec])
    with pytest.raises(RuntimeError, match="end hook failed"):
        trainer.fit()
    assert isinstance(rec.run.error, RuntimeError)
    assert load_checkpoint_state(str(out))["step"] == 2  # Checkpoints ran before it


def test_on_train_end_runs_when_the_run_diverges(make_config, tmp_path):
    out = tmp_path / "run"
    rec = Recorder()
    before = signal.getsignal(signal.SIGINT)
    trainer = FaceTrainer(make_config(output=str(out), loss="softmax", lr=1e12, verbose=1),
                          callbacks=[rec])
    with pytest.raises(TrainingDiverged, match="not finite after step 1"):
        trainer.fit()
    assert isinstance(rec.run.error, TrainingDiverged) and rec.run.status is None
    assert rec.events[-1] == ("end", None, 1)
    assert signal.getsignal(signal.SIGINT) == before
    assert not (out / "checkpoints").exists()  # nothing saved from a diverged model


def test_callbacks_must_be_callback_instances(make_config):
    with pytest.raises(TypeError, match="Callback instances, got function"):
        FaceTrainer(make_config(), callbacks=[lambda trainer: None])


@pytest.mark.parametrize("contexts,hybridize,fused", [
    (1, True, True), (2, True, True), (2, False, False)])
def test_verification_embeds_through_the_fused_graph_on_cpu_contexts(contexts, hybridize,
                                                                     fused):
    """Hybridized CPU runs verify through one fused inference copy (on the first context);
    its embeddings are the backbone's to float32 rounding."""
    from types import SimpleNamespace

    import mxnet as mx
    import numpy as onp
    from mxnet import np

    from gluon_face.model_zoo import get_model
    from gluon_face.training.callbacks import _embedder

    ctx = [mx.cpu(i) for i in range(contexts)]
    net = get_model("faceresnet10-demo", emb_size=16, image_size=32)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    if hybridize:
        net.hybridize()
    trainer = SimpleNamespace(config=SimpleNamespace(hybridize=hybridize, eval_batch_size=4),
                              ctx=ctx, backbone=net, image_size=(32, 32))
    embedder, used = _embedder(trainer)
    assert (embedder is not net) == fused
    assert used == (ctx[:1] if fused else ctx)
    x = np.array(onp.random.RandomState(0).uniform(-1, 1, (4, 3, 32, 32)).astype("float32"))
    with mx.autograd.predict_mode():
        got = embedder(x).asnumpy()
        net.hybridize(active=False)
        want = net(x).asnumpy()
    onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * onp.abs(want).max())

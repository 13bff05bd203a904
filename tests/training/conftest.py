"""Tiny training fixtures: a 4-identity 16x16 record file and a .bin, written by
the project's own writers, and a TrainConfig for a 4-channel FaceResNet-18."""
import io
import os

import numpy as onp
import pytest
from PIL import Image

from gluon_face.data import write_bin, write_face_rec
from gluon_face.training import TrainConfig

NUM_CLASSES = 4
PER_CLASS = 12
SIZE = 16
TINY_CHANNELS = [4, 4, 4, 8, 8]


def _image(label, rng):
    """A class-specific pattern (a bright quadrant and a colour) plus noise."""
    img = rng.integers(0, 60, size=(SIZE, SIZE, 3))
    r, c = divmod(label, 2)
    img[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8, label % 3] += 180
    return onp.clip(img, 0, 255).astype(onp.uint8)


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def make_tiny_data(folder, num_classes=NUM_CLASSES, per_class=PER_CLASS, seed=0,
                   corrupt=None):
    """``corrupt=i``: record ``i`` holds a JPEG header followed by garbage."""
    rng = onp.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    samples = [(label, _png(_image(label, rng)))
               for label in range(num_classes) for _ in range(per_class)]
    if corrupt is not None:
        samples[corrupt] = (samples[corrupt][0], b"\xff\xd8\xff\xe0" + b"\x13" * 200)
    write_face_rec(os.path.join(folder, "train"), samples, (SIZE, SIZE))
    pairs, issame = [], []
    for i in range(10):
        a = i % num_classes
        b = a if i % 2 == 0 else (a + 1) % num_classes
        pairs += [_image(a, rng), _image(b, rng)]
        issame.append(a == b)
    write_bin(os.path.join(folder, "val.bin"), onp.stack(pairs), onp.array(issame), fmt="png")
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp("tiny_data")))


@pytest.fixture(scope="session")
def tiny_data_5(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp("tiny_data_5")), num_classes=5)


def tiny_config(data_dir, **changes):
    # PReLU (insightface's activation) as before the default job switched to ReLU: the
    # split-PReLU and bf16 paths these fixtures exercise exist for it.
    base = dict(data_dir=data_dir, network="faceresnet18",
                model_kwargs={"channels": TINY_CHANNELS}, emb_size=8, batch_size=8, epochs=2,
                lr=0.05, warmup_epochs=0.0, log_interval=1, hybridize=False, eval_batch_size=16,
                act_type="prelu", margin_s=None)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture
def make_config(tiny_data, tmp_path):
    def make(**changes):
        changes.setdefault("output", str(tmp_path / "run"))
        return tiny_config(changes.pop("data_dir", tiny_data), **changes)
    return make


def _train_losses(trainer, steps):
    """``steps`` train_step calls in the trainer's own data order; list of losses."""
    from gluon_face.training.loader import EpochBatches, FlipDataset

    cfg = trainer.config
    dataset = FlipDataset(trainer.dataset, trainer.transform)
    out = []
    while len(out) < steps:
        epoch = trainer.step // trainer.steps_per_epoch
        sampler = EpochBatches(len(trainer.dataset), cfg.batch_size, epoch, seed=cfg.seed,
                               flip=cfg.flip, start=trainer.step % trainer.steps_per_epoch)
        for batch in sampler:
            items = [dataset[i] for i in batch]
            data = onp.stack([x for x, _ in items])
            label = onp.array([y for _, y in items], dtype=onp.float32)
            out.append(trainer.train_step(data, label))
            if len(out) == steps:
                break
    return out


@pytest.fixture
def run_steps():
    """``run_steps(trainer, n)``: ``n`` training steps in the trainer's data order -> losses."""
    return _train_losses


@pytest.fixture
def demo_losses(tmp_path):
    """``demo_losses(**changes)`` -> (losses of 24 steps, trainer).

    A softmax head on the digits demo set with a tiny FaceResNet-18, hybridized:
    the job test_amp and test_split_prelu use to compare the loss curves of two
    graphs of the same function (same seed: only rounding sets them apart).
    """
    from gluon_face.data import demo_data_dir
    from gluon_face.training import FaceTrainer

    def run(**changes):
        name = "_".join(f"{k}{v}" for k, v in sorted(changes.items())) or "base"
        cfg = dict(data_dir=demo_data_dir(), network="faceresnet18",
                   model_kwargs={"channels": [8, 8, 16, 16, 32]}, emb_size=16, batch_size=16,
                   epochs=2, lr=0.02, warmup_epochs=0.0, loss="softmax", hybridize=True,
                   act_type="prelu", output=str(tmp_path / name))
        cfg.update(changes)
        trainer = FaceTrainer(TrainConfig(**cfg))
        return onp.array(_train_losses(trainer, 24)), trainer
    return run

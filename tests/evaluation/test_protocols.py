"""evaluate_bin against the metrics applied to a direct forward pass."""
import mxnet as mx
import numpy as onp
import pytest

from gluon_face.evaluation import combine_flip, verification_accuracy
from gluon_face.evaluation.protocols import evaluate_bin

from ..test_embedding import H, W, direct, make_net, normalise


def test_evaluate_bin_flip_and_noflip():
    rng = onp.random.RandomState(1)
    pairs = 30
    images = rng.randint(0, 256, size=(2 * pairs, H, W, 3)).astype(onp.uint8)
    issame = rng.rand(pairs) < 0.5
    # "same" pairs: the second image is a slightly noisy copy of the first
    noisy = images[0::2] + rng.randint(-8, 9, size=images[0::2].shape)
    images[1::2][issame] = onp.clip(noisy, 0, 255).astype(onp.uint8)[issame]
    net = make_net([mx.cpu()])
    out = evaluate_bin(net, images, issame, batch_size=16, transform=normalise)
    assert out["pairs"] == pairs
    e, ef = direct(net, images), direct(net, images[:, :, ::-1])
    want_flip = verification_accuracy(combine_flip(e, ef), issame)
    want_noflip = verification_accuracy(e, issame)
    assert out["flip"].accuracy == pytest.approx(want_flip.accuracy, abs=1e-12)
    assert out["flip"].val == pytest.approx(want_flip.val, abs=1e-12)
    assert out["noflip"].accuracy == pytest.approx(want_noflip.accuracy, abs=1e-12)
    assert out["noflip"].accuracy > 0.8  # the noisy copies are close; real number, not 0.0
    with pytest.raises(ValueError, match="2 images per pair"):
        evaluate_bin(net, images[:-1], issame, transform=normalise)
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_bin(net, images[:0], [], transform=normalise)

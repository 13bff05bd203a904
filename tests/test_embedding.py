"""embed_images / extract_embeddings against a direct forward pass.

The network is a tiny Conv-BN-PReLU-Dense HybridBlock defined here, so these tests
do not depend on the model zoo (tests/evaluation/test_protocols.py uses it too).
"""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face import evaluation, training
from gluon_face._l2norm import l2_normalize
from gluon_face.data import FaceTransform
from gluon_face.embedding import embed_images, extract_embeddings
from gluon_face.training import embed as embed_alias

H = W = 8
EMB = 6


@use_np
class TinyNet(HybridBlock):
    """(B, 3, H, W) -> (B, EMB), with a BatchNorm whose running stats are not trivial."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = nn.HybridSequential()
        self.features.add(nn.Conv2D(4, 3, padding=1, use_bias=False), nn.BatchNorm(), nn.PReLU())
        self.output = nn.Dense(EMB)
        self.shapes = []

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))

    def forward(self, x, *args):
        self.shapes.append(tuple(x.shape))  # batch shapes the network is called with
        return super().forward(x, *args)


def make_net(ctx_list):
    net = TinyNet()
    net.initialize(mx.init.Xavier(), ctx=ctx_list)
    bn = net.features[1]
    bn.running_mean.set_data(np.array(onp.random.uniform(-0.5, 0.5, 4).astype("float32")))
    bn.running_var.set_data(np.array(onp.random.uniform(0.5, 2.0, 4).astype("float32")))
    return net


def normalise(image):
    """The insightface input: (pixel - 127.5) / 128, HWC -> CHW float32."""
    return ((image.astype(onp.float32) - 127.5) / 128.0).transpose(2, 0, 1)


def direct(net, images, ctx=None):
    x = onp.stack([normalise(im) for im in images])
    return net(np.array(x, ctx=ctx or mx.cpu())).asnumpy()


@pytest.fixture
def images():
    return onp.random.RandomState(0).randint(0, 256, size=(10, H, W, 3)).astype(onp.uint8)


# ---------------------------------------------------------------- embed_images
def test_matches_direct_forward_with_padding(images):
    net = make_net([mx.cpu()])
    want = direct(net, images)
    seen = []
    net.shapes.clear()
    got = embed_images(net, images, ctx_list=[mx.cpu()], batch_size=4, transform=normalise,
                       progress=seen.append)
    assert got.shape == (10, EMB) and got.dtype == onp.float32
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # 10 images in batches of 4: the last batch (2 images) is padded to 4
    assert net.shapes == [(4, 3, H, W)] * 3
    assert seen == [4, 4, 2]


def test_inference_mode_even_while_recording(images):
    net = make_net([mx.cpu()])
    want = direct(net, images)
    with mx.autograd.record(train_mode=True):
        got = embed_images(net, images, batch_size=4, transform=normalise)
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_hybridized_and_list_input(images):
    net = make_net([mx.cpu()])
    want = direct(net, images)
    net.hybridize()
    got = embed_images(net, list(images), batch_size=3, transform=normalise)
    onp.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_default_transform_is_face_normalisation(images):
    for image in images:
        onp.testing.assert_allclose(FaceTransform(flip=False)(image), normalise(image),
                                    rtol=1e-6, atol=1e-6)
    net = make_net([mx.cpu()])
    onp.testing.assert_allclose(embed_images(net, images, batch_size=4), direct(net, images),
                                rtol=1e-5, atol=1e-6)


def test_two_contexts_match_one(images, ctx_list):
    net = make_net(ctx_list)
    single = embed_images(net, images, ctx_list=ctx_list[:1], batch_size=4, transform=normalise)
    net.shapes.clear()
    # batch 5 over 2 devices is rounded up to 6: 3 images per device, the last
    # batch (4 images) padded to 6 and split 3 + 3
    multi = embed_images(net, images, ctx_list=ctx_list, batch_size=5, transform=normalise)
    assert net.shapes == [(3, 3, H, W)] * 4
    onp.testing.assert_allclose(multi, single, rtol=1e-5, atol=1e-6)
    onp.testing.assert_allclose(multi, direct(net, images, ctx_list[0]), rtol=1e-5, atol=1e-6)


def test_flip_embeds_the_mirror(images):
    net = make_net([mx.cpu()])
    got = embed_images(net, images, batch_size=4, flip=True, transform=normalise)
    onp.testing.assert_allclose(got, direct(net, images[:, :, ::-1]), rtol=1e-5, atol=1e-6)
    assert not onp.allclose(got, direct(net, images), atol=1e-3)


def test_embed_bad_input(images):
    net = make_net([mx.cpu()])
    with pytest.raises(ValueError, match="batch_size"):
        embed_images(net, images, batch_size=0, transform=normalise)
    with pytest.raises(ValueError, match=r"image 1 has shape"):
        embed_images(net, [images[0], images[1, :, :, 0]], transform=normalise)
    with pytest.raises(ValueError, match="no images"):
        embed_images(net, images[:0], transform=normalise)


# ---------------------------------------------------------------- extract_embeddings
def test_extract_embeddings(images):
    net = make_net([mx.cpu()])
    e, ef = direct(net, images), direct(net, images[:, :, ::-1])
    raw = extract_embeddings(net, images, normalize=False, transform=normalise)
    onp.testing.assert_allclose(raw, e, rtol=1e-5, atol=1e-6)
    both = extract_embeddings(net, images, flip=True, transform=normalise)
    s = e + ef
    onp.testing.assert_allclose(both, s / onp.linalg.norm(s, axis=1, keepdims=True), rtol=1e-5,
                                atol=1e-6)


def test_extract_embeddings_applies_the_one_l2_normalize(images):
    net = make_net([mx.cpu()])
    for flip in (False, True):
        raw = extract_embeddings(net, images, flip=flip, normalize=False, transform=normalise)
        unit = extract_embeddings(net, images, flip=flip, transform=normalise)
        assert unit.dtype == onp.float32
        onp.testing.assert_array_equal(unit, l2_normalize(raw).astype(onp.float32))
    # one function, published as evaluation.l2_normalize and kept under the old name
    assert evaluation.l2_normalize is l2_normalize
    assert embed_alias.l2_normalize is l2_normalize


@use_np
class Linear(HybridBlock):
    """(B, 3, H, W) -> (B, EMB) without a bias: a zero image embeds to a zero row."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.output = nn.Dense(EMB, use_bias=False)

    def hybrid_forward(self, F, x):
        return self.output(x)


def raw_pixels(image):
    """HWC -> CHW float32 without the (x - 127.5) / 128 shift: a black image stays zeros."""
    return image.astype(onp.float32).transpose(2, 0, 1)


def test_zero_rows_stay_zero(images):
    x = onp.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=onp.float32)
    unit = l2_normalize(x)
    assert unit.dtype == onp.float64
    onp.testing.assert_array_equal(unit, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    net = Linear()
    net.initialize(mx.init.Xavier())
    images = images.copy()
    images[3] = 0
    unit = extract_embeddings(net, images, transform=raw_pixels)
    assert onp.all(onp.isfinite(unit))
    onp.testing.assert_array_equal(unit[3], onp.zeros(EMB, dtype=onp.float32))
    others = onp.delete(unit, 3, axis=0)
    onp.testing.assert_allclose(onp.linalg.norm(others, axis=1), 1.0, rtol=1e-6)


def test_old_module_reexports_the_moved_names():
    from gluon_face import data, devices, embedding
    from gluon_face.evaluation import protocols

    assert embed_alias.embed_images is embedding.embed_images is training.embed_images
    assert embed_alias.extract_embeddings is embedding.extract_embeddings
    assert embed_alias.evaluate_bin is protocols.evaluate_bin is evaluation.evaluate_bin
    assert embed_alias.evaluate_identities is evaluation.evaluate_identities
    assert embed_alias.parse_ctx is devices.parse_ctx is training.parse_ctx
    assert embed_alias.find_images is data.find_images
    assert embed_alias.ImageFiles is data.ImageFiles
    assert embed_alias.IMAGE_EXTENSIONS is data.IMAGE_EXTENSIONS


def test_moved_modules_do_not_import_inference():
    """The old module and the new homes stay clear of gluon_face.inference (and its graphs)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import gluon_face.training.embed, gluon_face.embedding, gluon_face.devices\n"
            "import gluon_face.evaluation.protocols, gluon_face.data.images\n"
            "assert 'gluon_face.inference' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]

"""embed_images / evaluate_bin / extract_embeddings against a direct forward pass.

The network is a tiny Conv-BN-PReLU-Dense HybridBlock defined here, so these tests
do not depend on the model zoo.
"""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import use_np

from gluon_face.data import FaceTransform
from gluon_face.evaluation import combine_flip, verification_accuracy
from gluon_face.training.embed import (
    ImageFiles,
    embed_images,
    evaluate_bin,
    extract_embeddings,
    find_images,
    parse_ctx,
)

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


# ---------------------------------------------------------------- evaluate_bin
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


def test_extract_embeddings(images):
    net = make_net([mx.cpu()])
    e, ef = direct(net, images), direct(net, images[:, :, ::-1])
    raw = extract_embeddings(net, images, normalize=False, transform=normalise)
    onp.testing.assert_allclose(raw, e, rtol=1e-5, atol=1e-6)
    both = extract_embeddings(net, images, flip=True, transform=normalise)
    s = e + ef
    onp.testing.assert_allclose(both, s / onp.linalg.norm(s, axis=1, keepdims=True), rtol=1e-5,
                                atol=1e-6)


# ---------------------------------------------------------------- helpers
def test_parse_ctx():
    assert parse_ctx("cpu") == [mx.cpu(0)]
    assert parse_ctx("cpu:0,1") == [mx.cpu(0), mx.cpu(1)]
    for bad in ("tpu", "cpu:a", "cpu:0,0", "cpu:-1"):
        with pytest.raises(ValueError, match="device"):
            parse_ctx(bad)
    if mx.context.num_gpus() == 0:
        with pytest.raises(ValueError, match="0 GPU"):
            parse_ctx("gpu:0")


def test_find_images_and_image_files(tmp_path):
    from PIL import Image

    rng = onp.random.RandomState(2)
    arrays = {}
    for rel in ("b/2.png", "a/10.png", "a/9.jpg", "c.bmp"):
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        arrays[rel] = rng.randint(0, 256, size=(H, W, 3)).astype(onp.uint8)
        Image.fromarray(arrays[rel]).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(arrays["c.bmp"]).save(tmp_path / ".hidden" / "x.png")
    paths = find_images(tmp_path)
    assert paths == ["a/10.png", "a/9.jpg", "b/2.png", "c.bmp"]
    files = ImageFiles(paths, root=str(tmp_path))
    assert len(files) == 4
    onp.testing.assert_array_equal(files[0], arrays["a/10.png"])
    onp.testing.assert_array_equal(files[3], arrays["c.bmp"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot decode"):
        ImageFiles(["broken.png"], root=str(tmp_path))[0]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_images(tmp_path / "missing")

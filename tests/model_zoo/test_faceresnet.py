"""FaceResNet, BasicBlockV3, the spec table, the book's factory and the model registry."""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, np, npx
from mxnet.gluon import nn

from gluon_face.model_zoo import (
    BasicBlockV3,
    FaceResNet,
    faceresnet_spec,
    get_faceresnet,
    get_model,
    list_models,
    summarize,
)

npx.set_np()

NAMES = ["faceresnet10-demo", "faceresnet100", "faceresnet18", "faceresnet18-demo",
         "faceresnet34", "faceresnet50"]


def _small(name="faceresnet18", **kw):
    kw.setdefault("emb_size", 8)
    kw.setdefault("image_size", 32)
    return get_model(name, **kw)


def _input(ctx, shape=(2, 3, 32, 32)):
    return np.array(onp.random.uniform(-1, 1, size=shape).astype("float32"), ctx=ctx)


# ----------------------------------------------------------------------------- naive reference

def _conv_ref(x, w, stride, pad):
    """Direct NCHW convolution (no groups, no bias) in numpy."""
    b, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = onp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h_out = (h + 2 * pad - kh) // stride + 1
    w_out = (wd + 2 * pad - kw) // stride + 1
    out = onp.zeros((b, o, h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = onp.einsum("bchw,ochw->bo", patch, w)
    return out


def _bn_ref(x, p, eps=2e-5):
    shape = (1, -1, 1, 1)
    g, b, m, v = (p[k].reshape(shape) for k in ("gamma", "beta", "running_mean", "running_var"))
    return (x - m) / onp.sqrt(v + eps) * g + b


def _params_of(block):
    return {k.split("_")[-1] if not k.endswith(("running_mean", "running_var"))
            else "running_" + k.split("_")[-1]: p.data().asnumpy().astype("float64")
            for k, p in block.collect_params().items()}


def _randomise(block, ctx):
    """Random values for every parameter, positive variances, so BN is not the identity."""
    for name, p in block.collect_params().items():
        value = onp.random.uniform(-0.5, 0.5, size=p.shape)
        if name.endswith(("running_var", "gamma")):
            value = onp.random.uniform(0.5, 1.5, size=p.shape)
        p.set_data(np.array(value.astype("float32"), ctx=ctx))


@pytest.mark.parametrize("downsample,stride,c_in", [(True, 2, 3), (True, 1, 3), (False, 1, 4)])
def test_basic_block_matches_naive_numpy(ctx, downsample, stride, c_in):
    blk = BasicBlockV3(4, stride, downsample, in_channels=c_in)
    blk.initialize(ctx=ctx)
    _randomise(blk, ctx)
    x = _input(ctx, (2, c_in, 6, 6))
    got = blk(x).asnumpy()

    body = [_params_of(layer) for layer in blk.body]
    xr = x.asnumpy().astype("float64")
    y = _bn_ref(xr, body[0])
    y = _conv_ref(y, body[1]["weight"], 1, 1)
    y = _bn_ref(y, body[2])
    alpha = body[3]["alpha"].reshape(1, -1, 1, 1)
    y = onp.where(y > 0, y, alpha * y)
    y = _conv_ref(y, body[4]["weight"], stride, 1)
    y = _bn_ref(y, body[5])
    if downsample:
        ds = [_params_of(layer) for layer in blk.downsample]
        shortcut = _bn_ref(_conv_ref(xr, ds[0]["weight"], stride, 0), ds[1])
    else:
        shortcut = xr
    onp.testing.assert_allclose(got, y + shortcut, rtol=1e-4, atol=1e-4)


def test_basic_block_identity_shortcut_needs_matching_shapes():
    with pytest.raises(ValueError, match="stride"):
        BasicBlockV3(8, 2, downsample=False, in_channels=8)
    with pytest.raises(ValueError, match="in_channels"):
        BasicBlockV3(8, 1, downsample=False, in_channels=4)
    with pytest.raises(ValueError, match="act_type"):
        BasicBlockV3(8, 1, act_type="swish")


# ----------------------------------------------------------------------------- registry

def test_registry_lists_every_depth_of_the_spec():
    # the other registered families (MobileFaceNet) have their own test file
    assert [n for n in list_models() if n.startswith("faceresnet")] == NAMES
    assert sorted(faceresnet_spec) == [18, 34, 50, 100]
    for depth, (block, layers, channels) in faceresnet_spec.items():
        assert block is BasicBlockV3
        assert channels == [64, 64, 128, 256, 512]
        # the depth counts the stem, two convolutions per unit and the dense layer
        assert 1 + 2 * sum(layers) + 1 == depth


def test_insightface_unit_counts():
    assert faceresnet_spec[18][1] == [2, 2, 2, 2]
    assert faceresnet_spec[34][1] == [3, 4, 6, 3]
    assert faceresnet_spec[50][1] == [3, 4, 14, 3]
    assert faceresnet_spec[100][1] == [3, 13, 30, 3]


def test_unknown_model_error_lists_valid_names():
    with pytest.raises(ValueError, match="resnet9") as err:
        get_model("resnet9")
    for name in NAMES:
        assert name in str(err.value)


def test_demo_network_is_faceresnet18_at_a_quarter_width(ctx):
    from gluon_face.model_zoo import summarize

    demo, full = _small("faceresnet18-demo"), _small("faceresnet18")
    assert demo.features[0]._channels == 16 and full.features[0]._channels == 64
    assert demo.feature_shape == (128, 2, 2) and full.feature_shape == (512, 2, 2)
    assert len(list(demo.collect_params().keys())) == len(list(full.collect_params().keys()))
    # a quarter of the widths: about 1/16 of the parameters
    ratio = summarize(demo).params / summarize(full).params
    assert 1 / 20 < ratio < 1 / 10


def test_faceresnet10_demo_is_one_unit_per_stage(ctx):
    from gluon_face.model_zoo import summarize

    shallow, demo = _small("faceresnet10-demo"), _small("faceresnet18-demo")
    assert [len(stage) for stage in shallow.features[3:]] == [1, 1, 1, 1]
    assert [len(stage) for stage in demo.features[3:]] == [2, 2, 2, 2]
    assert shallow.feature_shape == demo.feature_shape == (128, 2, 2)
    assert summarize(shallow).params < summarize(demo).params


def test_unknown_keyword_is_an_error():
    with pytest.raises(ValueError, match="'embedding_size'.*emb_size"):
        get_model("faceresnet18", embedding_size=128)


@pytest.mark.parametrize("name", NAMES)
def test_hybridized_equals_imperative(ctx, name):
    net = _small(name)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx)
    imperative = net(x).asnumpy()
    net.hybridize()
    hybrid = net(x).asnumpy()
    assert imperative.shape == (2, 8)
    assert onp.isfinite(imperative).all()
    onp.testing.assert_allclose(hybrid, imperative, rtol=1e-5, atol=1e-5 * abs(imperative).max())


def test_hybridized_equals_imperative_in_training_mode(ctx):
    net = _small(use_dropout=False)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx, (4, 3, 32, 32))
    with autograd.record():
        imperative = net(x)
    net.hybridize()
    with autograd.record():
        hybrid = net(x)
        loss = (hybrid ** 2).sum()
    loss.backward()
    onp.testing.assert_allclose(hybrid.asnumpy(), imperative.asnumpy(), rtol=1e-4, atol=1e-4)
    grad = net.features[0].weight.grad().asnumpy()
    assert onp.isfinite(grad).all() and abs(grad).max() > 0
    # batch statistics in training: the output differs from inference mode
    assert not onp.allclose(net(x).asnumpy(), hybrid.asnumpy(), atol=1e-3)


def test_faceresnet18_at_112(ctx):
    net = get_model("faceresnet18")
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx, (2, 3, 112, 112))
    imperative = net(x).asnumpy()
    net.hybridize()
    onp.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-4,
                                atol=1e-5 * abs(imperative).max())
    assert imperative.shape == (2, 512) and onp.isfinite(imperative).all()


# ----------------------------------------------------------------------------- structure

def test_children_are_named_by_role():
    net = _small()
    keys = set(net._collect_params_with_prefix())
    for key in ["features.0.weight", "features.1.gamma", "features.2.alpha",
                "features.3.0.body.0.gamma", "features.3.0.body.1.weight",
                "features.3.0.body.3.alpha", "features.3.0.body.4.weight",
                "features.3.0.downsample.0.weight", "features.3.0.downsample.1.running_var",
                "features.6.1.body.5.beta", "output.0.gamma", "output.1.weight",
                "output.1.bias", "output.2.running_mean"]:
        assert key in keys, key
    assert not any(k.startswith("features.3.1.downsample") for k in keys)
    assert len(net.features) == 3 + 4
    assert [len(stage) for stage in net.features[3:]] == [2, 2, 2, 2]


def test_all_shapes_declared_before_initialisation():
    net = get_model("faceresnet50")
    for name, p in net.collect_params().items():
        assert all(d > 0 for d in p.shape), (name, p.shape)
    assert net.output[1].weight.shape == (512, 512 * 7 * 7)


def test_insightface_batch_norm_prelu_and_output():
    net = _small(emb_size=16, use_dropout=True)
    bns = [b for b in _leaves(net) if isinstance(b, nn.BatchNorm)]
    assert bns and all(b._kwargs["eps"] == 2e-5 and b._kwargs["momentum"] == 0.9 for b in bns)
    # "E" output: BN -> Dropout(0.4) -> Dense(emb) -> BN with a fixed scale
    kinds = [type(b).__name__ for b in net.output]
    assert kinds == ["BatchNorm", "Dropout", "Dense", "BatchNorm"]
    assert net.output[1]._rate == 0.4
    assert net.output[3]._kwargs["fix_gamma"] and not net.output[0]._kwargs["fix_gamma"]
    prelus = [b for b in _leaves(net) if isinstance(b, nn.PReLU)]
    assert prelus[0].alpha.shape == (64,)  # one slope per channel
    assert net.features[6][0].body[3].alpha.shape == (512,)
    assert "Dropout" not in [type(b).__name__ for b in _small().output]


def _leaves(block):
    children = list(block._children.values())
    if not children:
        return [block]
    return [leaf for child in children for leaf in _leaves(child)]


def test_dropout_active_only_in_training(ctx):
    net = _small(use_dropout=True)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx, (4, 3, 32, 32))
    a = net(x).asnumpy()
    net.hybridize()
    onp.testing.assert_allclose(net(x).asnumpy(), a, rtol=1e-5, atol=1e-5)
    with autograd.record():
        t1 = net(x).asnumpy()
        t2 = net(x).asnumpy()
    assert not onp.allclose(t1, t2)  # two dropout masks


def test_relu_variant(ctx):
    relu = _small(act_type="relu")
    prelu = _small()
    assert not any(isinstance(b, nn.PReLU) for b in _leaves(relu))
    assert sum(isinstance(b, nn.Activation) for b in _leaves(relu)) == 1 + 8
    # one PReLU slope per channel: stem 64 + every unit's channels
    slopes = 64 + 2 * (64 + 128 + 256 + 512)
    assert summarize(prelu).params - summarize(relu).params == slopes
    relu.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx)
    out = relu(x).asnumpy()
    relu.hybridize()
    onp.testing.assert_allclose(relu(x).asnumpy(), out, rtol=1e-5, atol=1e-5 * abs(out).max())
    with pytest.raises(ValueError, match="act_type"):
        _small(act_type="gelu")


@pytest.mark.parametrize("size,side", [(96, (6, 6)), (128, (8, 8)), ((64, 96), (4, 6))])
def test_image_sizes(size, side):
    net = get_model("faceresnet50", image_size=size)
    assert net.output[1].weight.shape == (512, 512 * side[0] * side[1])
    expected = (size, size) if isinstance(size, int) else size
    assert net.image_size == expected and summarize(net).input_shape == (3,) + expected


# ----------------------------------------------------------------------------- the 7x7 stem

def test_default_stem_is_3x3_stride_1():
    net = get_model("faceresnet18")
    assert net.stem == "3x3"
    kw = net.features[0]._kwargs
    assert (kw["kernel"], kw["stride"], kw["pad"]) == ((3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("name", NAMES)
def test_every_faceresnet_takes_the_7x7_stem(name):
    net = _small(name, stem="7x7")
    kw = net.features[0]._kwargs
    assert (kw["kernel"], kw["stride"], kw["pad"]) == ((7, 7), (2, 2), (3, 3))
    # 32 -> 16 -> 8 -> 4 -> 2 -> 1
    assert net.feature_shape[1:] == (1, 1)
    # the same parameter names as the 3x3 stem (insightface's conv0 is features.0 in both)
    assert set(net._collect_params_with_prefix()) == \
        set(_small(name)._collect_params_with_prefix())


def test_7x7_stem_forward_hybridize_and_parameter_count(ctx):
    net = _small("faceresnet10-demo", stem="7x7", image_size=48)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx, (2, 3, 48, 48))
    # MXNet's own arithmetic: 48 -> 24 -> 12 -> 6 -> 3 -> 2 (ceil halves, as 112 -> ... -> 4)
    assert net.features(x).shape == (2, 128) + net.feature_shape[1:] == (2, 128, 2, 2)
    out = net(x).asnumpy()
    net.hybridize()
    onp.testing.assert_allclose(net(x).asnumpy(), out, rtol=1e-5, atol=1e-5 * abs(out).max())
    assert out.shape == (2, 8) and onp.isfinite(out).all()
    # by hand against the 3x3 stem at the same size (48 -> 3x3 last map): the stem's
    # weight grows from 3x3 to 7x7, the Dense input shrinks from 128 * 3 * 3 to 128 * 2 * 2
    small = _small("faceresnet10-demo", image_size=48)
    assert small.feature_shape == (128, 3, 3)
    total = sum(p.data().size for p in net.collect_params().values())
    assert total == summarize(net).params + summarize(net).states
    assert summarize(net).params - summarize(small).params == \
        16 * 3 * (49 - 9) + 8 * 128 * (4 - 9)


@pytest.mark.parametrize("size,side", [(112, (4, 4)), (96, (3, 3)), (128, (4, 4)),
                                       ((64, 96), (2, 3)), (16, (1, 1))])
def test_7x7_stem_image_sizes(size, side):
    net = get_model("faceresnet50", image_size=size, stem="7x7")
    assert net.feature_shape == (512,) + side
    assert net.output[1].weight.shape == (512, 512 * side[0] * side[1])
    assert summarize(net).layers[-2].in_shape == (512,) + side  # the Dense flattens it


def test_faceresnet50_7x7_stem_at_112(ctx):
    net = get_model("faceresnet50", stem="7x7")
    net.initialize(mx.init.Xavier(), ctx=ctx)
    assert net(_input(ctx, (1, 3, 112, 112))).shape == (1, 512)


@pytest.mark.parametrize("stem", ["5x5", "7X7", 7, None, ""])
def test_bad_stem(stem):
    with pytest.raises(ValueError, match="stem must be one of 3x3, 7x7"):
        get_model("faceresnet18", stem=stem)
    with pytest.raises(ValueError, match="image_size"):
        get_model("faceresnet18", stem="7x7", image_size=100)


def test_non_square_forward(ctx):
    net = _small(image_size=(48, 32))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = _input(ctx, (2, 3, 48, 32))
    out = net(x).asnumpy()
    net.hybridize()
    onp.testing.assert_allclose(net(x).asnumpy(), out, rtol=1e-5, atol=1e-5 * abs(out).max())
    assert out.shape == (2, 8)


@pytest.mark.parametrize("size", [100, 0, -16, (112,), (112, 100), True, 112.0])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        get_model("faceresnet18", image_size=size)


@pytest.mark.parametrize("kw,match", [({"emb_size": 0}, "emb_size"),
                                      ({"use_dropout": 1}, "use_dropout"),
                                      ({"output": "F"}, "output"),
                                      ({"in_channels": 0}, "in_channels")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        get_model("faceresnet18", **kw)


def test_spec_validation():
    with pytest.raises(ValueError, match="one entry more"):
        FaceResNet(BasicBlockV3, [2, 2], [64, 64, 128, 256])
    with pytest.raises(ValueError, match="unknown block"):
        FaceResNet("bottleneck", [2, 2], [64, 64, 128])
    net = FaceResNet("basic_block", [1, 1], [8, 8, 16], emb_size=4, image_size=8)
    assert net.output[1].weight.shape == (4, 16 * 2 * 2)


def test_grey_input(ctx):
    net = _small(in_channels=1)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    assert net(_input(ctx, (2, 1, 32, 32))).shape == (2, 8)


def test_save_load_round_trip(ctx, tmp_path):
    net = _small()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    _randomise(net, ctx)
    x = _input(ctx)
    path = str(tmp_path / "backbone.params")
    net.save_parameters(path)
    other = _small()
    other.load_parameters(path, ctx=ctx)
    onp.testing.assert_allclose(other(x).asnumpy(), net(x).asnumpy(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- the book's factory

def test_book_call_get_faceresnet_50_512(ctx):
    net = get_faceresnet(50, 512, use_dropout=False, ctx=ctx)
    assert isinstance(net, FaceResNet) and net.emb_size == 512
    assert net.layers == [3, 4, 14, 3]
    # initialised as the book: Xavier gaussian, fan-out, magnitude 2 (std sqrt(2 / fan_out))
    w = net.output[1].weight.data().asnumpy()
    assert w.shape == (512, 25088)
    assert abs(w.std() - onp.sqrt(2 / 512)) < 0.002
    stem = net.features[0].weight.data().asnumpy()
    assert abs(stem.std() - onp.sqrt(2 / (64 * 9))) < 0.006
    assert (net.features[1].gamma.data().asnumpy() == 1).all()
    assert (net.features[2].alpha.data().asnumpy() == 0.25).all()
    X = np.random.uniform(size=(1, 3, 112, 112), ctx=ctx)
    assert net(X).shape == (1, 512)


def test_get_faceresnet_names_the_embedding_size(ctx):
    assert get_faceresnet(18, emb_size=16, image_size=32, ctx=ctx).emb_size == 16
    assert get_faceresnet(18, num_classes=16, image_size=32, ctx=ctx).emb_size == 16
    assert get_faceresnet(18, 16, 16, image_size=32, ctx=ctx).emb_size == 16
    assert get_faceresnet(18, image_size=32, ctx=ctx).emb_size == 512
    with pytest.raises(ValueError, match="num_classes"):
        get_faceresnet(18, 16, emb_size=32)
    with pytest.raises(ValueError, match="18, 34, 50, 100"):
        get_faceresnet(20, 512)

"""MobileFaceNet: insightface's y1 sizes, hybridization, training with heads, the fast embedders."""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np

from gluon_face.heads import SoftmaxCrossEntropyLoss, get_head
from gluon_face.inference import embed_batches, prepare_embedder
from gluon_face.model_zoo import MobileFaceNet, count_declared, get_model, list_models, summarize

#: insightface's published size of its y1 MobileFaceNet (arg arrays, 112x112, 128-d).
Y1_PARAMS = 1_003_264


def mobilefacenet_y1_symbol(blocks=(1, 4, 6, 2), emb_size=128):
    """insightface's fmobilefacenet layer list (GDC output), written here with mx.sym."""
    def unit(x, filters, name, kernel=(1, 1), stride=(1, 1), pad=(0, 0), group=1, act=True):
        x = mx.sym.Convolution(x, num_filter=filters, kernel=kernel, stride=stride, pad=pad,
                               num_group=group, no_bias=True, name=name + "_conv2d")
        x = mx.sym.BatchNorm(x, fix_gamma=False, momentum=0.9, name=name + "_batchnorm")
        return mx.sym.LeakyReLU(x, act_type="prelu", name=name + "_relu") if act else x

    def dres(x, out, group, stride, name):
        x = unit(x, group, name + "_conv_sep")
        x = unit(x, group, name + "_conv_dw", (3, 3), stride, (1, 1), group)
        return unit(x, out, name + "_conv_proj", act=False)

    def res(x, n, out, group, name):
        for i in range(n):
            x = dres(x, out, group, (1, 1), f"{name}_block{i}") + x
        return x

    x = (mx.sym.Variable("data") - 127.5) * 0.0078125
    x = unit(x, 64, "conv_1", (3, 3), (2, 2), (1, 1))
    x = unit(x, 64, "conv_2_dw", (3, 3), (1, 1), (1, 1), 64) if blocks[0] == 1 else \
        res(x, blocks[0], 64, 64, "res_2")
    x = res(dres(x, 64, 128, (2, 2), "dconv_23"), blocks[1], 64, 128, "res_3")
    x = res(dres(x, 128, 256, (2, 2), "dconv_34"), blocks[2], 128, 256, "res_4")
    x = res(dres(x, 128, 512, (2, 2), "dconv_45"), blocks[3], 128, 256, "res_5")
    x = unit(x, 512, "conv_6sep")
    x = unit(x, 512, "conv_6dw7_7", (7, 7), group=512, act=False)
    x = mx.sym.FullyConnected(x, num_hidden=emb_size, name="pre_fc1")
    return mx.sym.BatchNorm(x, fix_gamma=True, eps=2e-5, momentum=0.9, name="fc1")


def symbol_param_count(sym, size=112):
    with mx.util.np_array(False), mx.util.np_shape(False):
        shapes, _, _ = sym.infer_shape(data=(1, 3, size, size))
    return sum(int(onp.prod(s)) for n, s in zip(sym.list_arguments(), shapes) if n != "data")


def test_registered_and_sized_as_insightface_y1():
    assert "mobilefacenet" in list_models()
    net = get_model("mobilefacenet")
    assert isinstance(net, MobileFaceNet) and net.emb_size == 128
    summary = summarize(net)
    assert summary.params == Y1_PARAMS == count_declared(net) - summary.states
    assert summary.output_shape == (128,)
    assert symbol_param_count(mobilefacenet_y1_symbol()) == Y1_PARAMS
    # y2 (insightface's other MobileFaceNet): [2, 8, 16, 4] units, 256-d
    y2 = get_model("mobilefacenet", layers=[2, 8, 16, 4], emb_size=256)
    assert summarize(y2).params == symbol_param_count(mobilefacenet_y1_symbol((2, 8, 16, 4), 256))


def test_keywords_it_cannot_honour_are_refused():
    for kwargs in ({"use_dropout": True}, {"channels": [8, 8, 8, 8, 8]}, {"output": "E"},
                   {"layers": [1, 1, 1]}, {"image_size": 100}, {"act_type": "tanh"},
                   {"stem": "7x7"}):
        with pytest.raises(ValueError):
            get_model("mobilefacenet", **kwargs)
    net = get_model("mobilefacenet", emb_size=64, act_type="relu", image_size=(64, 48),
                    in_channels=1, use_dropout=False, output="GDC")
    assert summarize(net).output_shape == (64,)


def _images(n, size, seed=0):
    return onp.random.RandomState(seed).uniform(-1, 1, (n, 3, size, size)).astype("float32")


def _randomised(net, ctx, seed=0):
    """Initialised, with BatchNorm statistics and slopes far from their defaults."""
    net.initialize(mx.init.Xavier(magnitude=2.0), ctx=ctx)
    rng = onp.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith(("running_var", "gamma")):
            p.set_data(np.array(rng.uniform(0.5, 1.5, p.shape).astype("float32"), ctx=ctx))
        elif name.endswith(("running_mean", "beta")):
            p.set_data(np.array(rng.normal(0, 0.2, p.shape).astype("float32"), ctx=ctx))
        elif name.endswith("alpha"):
            p.set_data(np.array(rng.uniform(0.1, 0.4, p.shape).astype("float32"), ctx=ctx))
    return net


def test_hybridize_gives_the_same_outputs(ctx):
    net = _randomised(get_model("mobilefacenet", image_size=32, emb_size=16), ctx)
    x = np.array(_images(3, 32), ctx=ctx)
    want = net(x).asnumpy()
    assert want.shape == (3, 16) and onp.isfinite(want).all()
    net.hybridize()
    onp.testing.assert_allclose(net(x).asnumpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss", ["arcface", "softmax"])
def test_trains_with_heads(ctx, loss):
    mx.random.seed(0)
    net = get_model("mobilefacenet", image_size=32, emb_size=16)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    head = get_head(loss, 16, 4)
    head.initialize(ctx=ctx)
    net.hybridize()
    head.hybridize()
    rng = onp.random.RandomState(0)
    patterns = rng.uniform(-1, 1, (4, 3, 32, 32))
    y = onp.arange(8) % 4
    x = np.array((patterns[y] + 0.1 * rng.normal(size=(8, 3, 32, 32))).astype("float32"),
                 ctx=ctx)
    y = np.array(y.astype("float32"), ctx=ctx)
    params = dict(net.collect_params().items())
    params.update(head.collect_params().items())
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.05, "momentum": 0.9})
    loss_fn = SoftmaxCrossEntropyLoss()
    losses = []
    for _ in range(12):
        with autograd.record():
            value = loss_fn(head(net(x), y), y).mean()
        value.backward()
        trainer.step(1)
        losses.append(float(value))
    assert onp.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("mode", ["hybrid", "fused", "bf16", "int8"])
def test_fast_embedders_close_to_the_block(ctx, mode):
    if mode == "int8" and ctx.device_type != "cpu":
        pytest.skip("INT8 runs through the MKLDNN (CPU) backend")
    net = _randomised(get_model("mobilefacenet", image_size=32, emb_size=16), ctx)
    x = _images(8, 32, seed=3)
    net.hybridize(active=False)
    want = net(np.array(x, ctx=ctx)).asnumpy()
    fast = prepare_embedder(net, np.zeros((4, 3, 32, 32), ctx=ctx), mode=mode,
                            calib_data=_images(16, 32, seed=4) if mode == "int8" else None)
    got = embed_batches(fast, x, batch_size=4)
    assert got.shape == want.shape and onp.isfinite(got).all()
    cos = (got * want).sum(1) / onp.linalg.norm(got, axis=1) / onp.linalg.norm(want, axis=1)
    if mode in ("hybrid", "fused"):
        onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * onp.abs(want).max())
    else:  # reduced precision keeps each embedding's direction
        assert cos.min() > (0.999 if mode == "bf16" else 0.99), cos
        assert not onp.array_equal(got, want)

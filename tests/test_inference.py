"""gluon_face.inference: the fused and bfloat16 embedding graphs against the plain network."""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.inference import MODES, extract_embeddings, prepare_embedder, to_bfloat16
from gluon_face.model_zoo import BasicBlockV3, FaceResNet

SIZE, EMB = 32, 16


def tiny_net(ctx, seed=0):
    """A FaceResNet-18 layout with 8-16 channels whose BatchNorms are far from identity."""
    net = FaceResNet(BasicBlockV3, [2, 2, 2, 2], [8, 8, 16, 16, 16], emb_size=EMB,
                     image_size=SIZE)
    net.initialize(mx.init.Xavier(magnitude=2.0), ctx=ctx)
    net(np.zeros((1, 3, SIZE, SIZE), ctx=ctx))
    rng = onp.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith(("running_var", "gamma")):
            p.set_data(np.array(rng.uniform(0.5, 1.5, p.shape).astype("float32"), ctx=ctx))
        elif name.endswith(("running_mean", "beta")):
            p.set_data(np.array(rng.normal(0, 0.2, p.shape).astype("float32"), ctx=ctx))
        elif name.endswith("alpha"):
            p.set_data(np.array(rng.uniform(0.1, 0.4, p.shape).astype("float32"), ctx=ctx))
    return net


def images(n, seed=1):
    return onp.random.RandomState(seed).uniform(-1, 1, (n, 3, SIZE, SIZE)).astype("float32")


def plain(net, x, ctx):
    net.hybridize(active=False)
    return net(np.array(x, ctx=ctx)).asnumpy()


def cosine(a, b):
    return (a * b).sum(1) / onp.linalg.norm(a, axis=1) / onp.linalg.norm(b, axis=1)


def graph_nodes(block):
    # tojson() hides amp_cast nodes unless asked not to.
    return json.loads(block._cached_graph[1].tojson(remove_amp_cast=False))["nodes"]


def graph_ops(block):
    return [n["op"] for n in graph_nodes(block)]


@pytest.mark.parametrize("mode", ["block", "hybrid", "fused"])
def test_fp32_modes_equal_plain(ctx, mode):
    net = tiny_net(ctx)
    x = images(4)
    want = plain(net, x, ctx)
    fast = prepare_embedder(net, np.array(x, ctx=ctx), mode=mode)
    got = fast(np.array(x, ctx=ctx)).asnumpy()
    assert got.dtype == onp.float32
    onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * onp.abs(want).max())


def test_fused_graph_folds_batchnorm_into_convolutions(ctx):
    if ctx.device_type != "cpu":
        pytest.skip("MKLDNN fusion is a CPU backend")
    net = tiny_net(ctx)
    x = np.array(images(2), ctx=ctx)
    before = plain(net, images(2), ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    net(x)
    n_bn = graph_ops(net).count("BatchNorm")
    fused = prepare_embedder(net, x, mode="fused")
    fused(x)
    ops = graph_ops(fused)
    assert "_sg_mkldnn_conv" in ops and "Convolution" not in ops
    # Each BatchNorm right after a convolution is gone (folded); those before one remain.
    assert ops.count("BatchNorm") < n_bn
    onp.testing.assert_allclose(fused(x).asnumpy(), before, rtol=1e-4,
                                atol=1e-4 * onp.abs(before).max())


def test_bf16_close_to_fp32(ctx):
    net = tiny_net(ctx)
    x = images(6)
    want = plain(net, x, ctx)
    bf16 = prepare_embedder(net, np.array(x, ctx=ctx), mode="bf16")
    got = bf16(np.array(x, ctx=ctx)).asnumpy()
    assert got.dtype == onp.float32 and onp.isfinite(got).all()
    assert cosine(got, want).min() > 0.999
    # bfloat16 really is used: the output is not bit-identical to float32, and casts are in.
    assert not onp.array_equal(got, want)
    nodes = graph_nodes(bf16)
    convs = [n for n in nodes if n["op"] == "Convolution"]
    assert convs
    for conv in convs:  # every convolution reads bfloat16 weights (cast in the graph)
        weight = nodes[conv["inputs"][1][0]]
        assert weight["op"] == "amp_cast", conv["name"]
        assert weight["attrs"]["dtype"] == "bfloat16"
    # The source network's parameters stay float32.
    assert all(onp.dtype(p.dtype) == onp.float32 for p in net.collect_params().values())


def test_bf16_conversion_does_not_change_the_source_net(ctx):
    net = tiny_net(ctx)
    x = images(2)
    before = plain(net, x, ctx)
    to_bfloat16(net, np.array(x, ctx=ctx))
    onp.testing.assert_array_equal(plain(net, x, ctx), before)


@pytest.mark.parametrize("mode", ["hybrid", "bf16"])
def test_extract_embeddings_pads_last_batch(ctx, mode):
    net = tiny_net(ctx)
    x = images(7)
    want = plain(net, x, ctx)
    emb = prepare_embedder(net, np.array(x[:3], ctx=ctx), mode=mode)
    got = extract_embeddings(emb, x, batch_size=3)
    assert got.shape == (7, EMB)
    if mode == "hybrid":
        onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * onp.abs(want).max())
    else:
        assert cosine(got, want).min() > 0.999
    unit = extract_embeddings(emb, x, batch_size=3, normalize=True)
    onp.testing.assert_allclose(onp.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_bad_arguments(ctx):
    net = tiny_net(ctx)
    x = np.array(images(1), ctx=ctx)
    with pytest.raises(ValueError, match="valid modes"):
        prepare_embedder(net, x, mode="int4")
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(net, images(1), batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        extract_embeddings(net, images(1)[0], batch_size=1)
    assert set(MODES) == {"block", "hybrid", "fused", "bf16"}


def test_bf16_training_block_shares_float32_parameters(ctx):
    from mxnet import autograd

    net = tiny_net(ctx)
    x = np.array(images(4), ctx=ctx)
    amp_net = to_bfloat16(net, x, share_params=True)
    with autograd.record():
        emb = amp_net(x)
        loss = (emb * emb).mean()
    loss.backward()
    with autograd.record():
        emb32 = net(x)
        loss32 = (emb32 * emb32).mean()
    assert abs(float(loss) - float(loss32)) < 0.02 * abs(float(loss32))
    conv_w = [p for name, p in net.collect_params().items() if name.endswith("conv0_weight")][0]
    assert onp.dtype(conv_w.dtype) == onp.float32
    g = conv_w.grad(ctx).asnumpy()
    assert onp.isfinite(g).all() and onp.abs(g).sum() > 0

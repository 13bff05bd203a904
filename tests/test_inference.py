"""gluon_face.inference: the fused, low-precision and INT8 embedding graphs against the plain net.

The INT8 tests use a tiny FaceResNet trained for a few SGD steps on three
synthetic identities (a fixed pattern per class plus noise), so BatchNorm
statistics and weights are those of a trained network and the pairs of
those identities can be verified.
"""
import json

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.evaluation import verification_accuracy
from gluon_face.inference import (
    MODES,
    _split_prelu,
    embed_batches,
    prepare_embedder,
    to_bfloat16,
    to_int8,
    to_low_precision,
)
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
    n_prelu = graph_ops(net).count("LeakyReLU")
    fused = prepare_embedder(net, x, mode="fused")
    fused(x)
    ops = graph_ops(fused)
    assert "_sg_mkldnn_conv" in ops and "Convolution" not in ops
    # Each BatchNorm right after a convolution is gone (folded); those before one
    # remain, with the two each split PReLU adds.
    assert n_prelu and "LeakyReLU" not in ops
    assert ops.count("BatchNorm") < n_bn + 2 * n_prelu
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
def test_embed_batches_pads_last_batch(ctx, mode):
    net = tiny_net(ctx)
    x = images(7)
    want = plain(net, x, ctx)
    emb = prepare_embedder(net, np.array(x[:3], ctx=ctx), mode=mode)
    got = embed_batches(emb, x, batch_size=3)
    assert got.shape == (7, EMB)
    if mode == "hybrid":
        onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * onp.abs(want).max())
    else:
        assert cosine(got, want).min() > 0.999
    unit = embed_batches(emb, x, batch_size=3, normalize=True)
    onp.testing.assert_allclose(onp.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)



def test_old_extract_embeddings_name_warns_and_matches(ctx):
    from gluon_face import inference

    net = tiny_net(ctx)
    x = images(5)
    emb = prepare_embedder(net, np.array(x[:2], ctx=ctx), mode="hybrid")
    with pytest.warns(DeprecationWarning, match="embed_batches"):
        old = inference.extract_embeddings(emb, x, batch_size=2, normalize=True)
    onp.testing.assert_array_equal(old, embed_batches(emb, x, batch_size=2, normalize=True))
    assert old.dtype == onp.float32

def test_bad_arguments(ctx):
    net = tiny_net(ctx)
    x = np.array(images(1), ctx=ctx)
    with pytest.raises(ValueError, match="valid modes"):
        prepare_embedder(net, x, mode="int4")
    with pytest.raises(ValueError, match="batch_size"):
        embed_batches(net, images(1), batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        embed_batches(net, images(1)[0], batch_size=1)
    assert set(MODES) == {"block", "hybrid", "fused", "bf16", "int8"}
    with pytest.raises(ValueError, match="dtype"):
        to_low_precision(net, x, dtype="int8")
    if ctx.device_type == "cpu":
        with pytest.raises(ValueError, match="calib_data"):
            prepare_embedder(net, x, mode="int8")
        with pytest.raises(ValueError, match="calib_mode"):
            to_int8(net, x, images(1), calib_mode="kl")
        with pytest.raises(ValueError, match=r"calib_data must have shape \(N, 3, 32, 32\)"):
            to_int8(net, x, images(2)[:, :, :16])


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


def test_to_bfloat16_is_to_low_precision_bfloat16(ctx):
    net = tiny_net(ctx)
    x = np.array(images(3), ctx=ctx)
    a = to_bfloat16(net, x)(x).asnumpy()
    b = to_low_precision(net, x, dtype="bfloat16")(x).asnumpy()
    onp.testing.assert_array_equal(a, b)


def test_float16_graph_shares_float32_parameters(ctx):
    """The GPU mixed-precision training graph: float16 compute, float32 master weights.

    MXNet 1.9.1 has no float16 GEMM on the CPU, so there only the graph is checked.
    """
    net = tiny_net(ctx)
    x = np.array(images(4), ctx=ctx)
    want = plain(net, images(4), ctx)
    amp_net = to_low_precision(net, x, dtype="float16", share_params=True)
    # the very same Parameter objects: gradients land in net's float32 parameters
    ours, theirs = amp_net.collect_params(), net.collect_params()
    assert set(theirs.keys()) <= set(ours.keys())
    assert all(ours[k] is theirs[k] for k in theirs)
    # the rest: fixed statistics of the split PReLU, not trained
    extra = [ours[k] for k in set(ours.keys()) - set(theirs.keys())]
    assert extra and all(p.grad_req == "null" for p in extra)
    assert all(onp.dtype(p.dtype) == onp.float32 for p in theirs.values())
    nodes = graph_nodes(amp_net)  # a SymbolBlock holds its graph from the start
    convs = [n for n in nodes if n["op"] == "Convolution"]
    assert convs
    for conv in convs:
        weight = nodes[conv["inputs"][1][0]]
        assert weight["op"] == "amp_cast" and weight["attrs"]["dtype"] == "float16"
    for prelu in (n for n in nodes if n["op"] == "LeakyReLU"):  # kept float32
        assert nodes[prelu["inputs"][0][0]]["attrs"].get("dtype") == "float32"
    if ctx.device_type == "gpu":
        got = to_low_precision(net, x, dtype="float16")(x).asnumpy()
        assert got.dtype == onp.float32 and cosine(got, want).min() > 0.999
    else:
        with pytest.raises(mx.base.MXNetError, match="FP16 gemm on cpu"):
            amp_net(x).asnumpy()


# ---------------------------------------------------------------- INT8
CLASSES = 3


def identity_images(n, seed):
    """``n`` images of CLASSES synthetic identities: a fixed pattern per class plus noise."""
    protos = onp.random.RandomState(100).uniform(-1, 1, (CLASSES, 3, SIZE, SIZE))
    rng = onp.random.RandomState(seed)
    labels = rng.randint(0, CLASSES, n)
    x = 0.6 * protos[labels] + 0.5 * rng.standard_normal((n, 3, SIZE, SIZE))
    return x.astype("float32"), labels


@pytest.fixture(scope="module")
def trained_params():
    """Parameters of a tiny FaceResNet after 30 SGD steps on the synthetic identities."""
    from mxnet import autograd, gluon

    from gluon_face.heads import SoftmaxCrossEntropyLoss, get_head

    mx.random.seed(0)
    ctx = mx.cpu()
    net = tiny_net(ctx)
    head = get_head("softmax", EMB, CLASSES)
    head.initialize(mx.init.Xavier(), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    params = dict(net.collect_params().items())
    params.update(head.collect_params().items())
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.05, "momentum": 0.9})
    loss_fn = SoftmaxCrossEntropyLoss()
    for step in range(30):
        x, y = identity_images(16, seed=step)
        x, y = np.array(x, ctx=ctx), np.array(y.astype("float32"), ctx=ctx)
        with autograd.record():
            loss = loss_fn(head(net(x), y), y).mean()
        loss.backward()
        trainer.step(1)
    return {k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()}


def trained_net(params, ctx):
    net = tiny_net(ctx)
    for key, p in net._collect_params_with_prefix().items():
        p.set_data(np.array(params[key], ctx=ctx))
    return net


def int8_net(params, ctx, calib, batch=4, **kw):
    net = trained_net(params, ctx)
    return to_int8(net, np.zeros((batch, 3, SIZE, SIZE), ctx=ctx), calib, **kw)


def cpu_only(ctx):
    if ctx.device_type != "cpu":
        pytest.skip("INT8 runs through the MKLDNN (CPU) backend")


# entropy calibration searches each layer's KL-optimal threshold in Python: ~1.5 s a layer
@pytest.mark.parametrize("calib_mode", ["naive", pytest.param("entropy", marks=pytest.mark.slow)])
def test_int8_close_to_fp32(ctx, trained_params, calib_mode):
    cpu_only(ctx)
    x, _ = identity_images(8, seed=500)
    want = plain(trained_net(trained_params, ctx), x, ctx)
    calib, _ = identity_images(16, seed=600)  # other images than the ones checked
    q = int8_net(trained_params, ctx, calib, calib_mode=calib_mode)
    got = embed_batches(q, x, batch_size=4)
    assert got.dtype == onp.float32 and onp.isfinite(got).all()
    # INT8 changes the numbers but keeps each embedding's direction: about 1e-3
    # of cosine is lost here; 0.99 leaves room yet fails for a badly calibrated
    # graph (next test).
    assert cosine(got, want).min() > 0.99
    assert not onp.allclose(got, want, rtol=1e-5, atol=1e-5)
    ops = graph_ops(q)
    assert "_contrib_quantize_v2" in ops and "Convolution" not in ops
    assert "_npi_add" not in ops and "elemwise_add" not in ops  # residual sums fused
    convs = [n for n in graph_nodes(q) if n["op"] == "_sg_mkldnn_conv"]
    assert convs and all(n["attrs"].get("quantized") == "true" for n in convs)


def test_int8_threshold_catches_bad_calibration(ctx, trained_params):
    """The cosine check above can fail: ranges calibrated on 1/100-scale images clip."""
    cpu_only(ctx)
    x, _ = identity_images(8, seed=500)
    want = plain(trained_net(trained_params, ctx), x, ctx)
    calib, _ = identity_images(16, seed=600)
    got = embed_batches(int8_net(trained_params, ctx, calib * 0.01), x, batch_size=4)
    assert cosine(got, want).min() < 0.99


def test_int8_verification_accuracy_matches_fp32(ctx, trained_params):
    cpu_only(ctx)
    pairs = 40
    x, labels = identity_images(2 * pairs, seed=700)
    issame = labels[0::2] == labels[1::2]
    want = plain(trained_net(trained_params, ctx), x, ctx)
    calib, _ = identity_images(16, seed=600)
    got = embed_batches(int8_net(trained_params, ctx, calib), x, batch_size=8)
    acc32 = verification_accuracy(want, issame, nfolds=4).accuracy
    acc8 = verification_accuracy(got, issame, nfolds=4).accuracy
    assert acc32 > 0.8  # the briefly trained net does separate the identities
    assert abs(acc8 - acc32) <= 1.0 / pairs + 1e-9  # at most one pair flips


def test_int8_pads_last_batch(ctx, trained_params):
    cpu_only(ctx)
    x, _ = identity_images(7, seed=800)
    calib, _ = identity_images(8, seed=600)
    q = prepare_embedder(trained_net(trained_params, ctx),
                         np.zeros((4, 3, SIZE, SIZE), ctx=ctx), mode="int8", calib_data=calib)
    got = embed_batches(q, x, batch_size=4)  # 4 + 3 real images and one zero image
    assert got.shape == (7, EMB)
    # calibrated (static) ranges: a row does not depend on the rest of its batch
    again = embed_batches(q, onp.concatenate([x[4:], x[:1]]), batch_size=4)
    onp.testing.assert_allclose(got[4:], again[:3], rtol=1e-5, atol=1e-5)
    want = plain(trained_net(trained_params, ctx), x, ctx)
    assert cosine(got, want).min() > 0.99


def test_int8_does_not_change_the_source_net(ctx, trained_params):
    cpu_only(ctx)
    net = trained_net(trained_params, ctx)
    x, _ = identity_images(4, seed=900)
    before = plain(net, x, ctx)
    q = to_int8(net, np.array(x, ctx=ctx), x)
    q(np.array(x, ctx=ctx))
    onp.testing.assert_array_equal(plain(net, x, ctx), before)
    assert all(onp.dtype(p.dtype) == onp.float32 for p in net.collect_params().values())


@pytest.mark.parametrize("mode", ["fused", "bf16"])
def test_fast_modes_close_to_fp32_on_trained_net(ctx, trained_params, mode):
    if mode == "fused" and ctx.device_type != "cpu":
        pytest.skip("MKLDNN fusion is a CPU backend")
    x, _ = identity_images(8, seed=500)
    want = plain(trained_net(trained_params, ctx), x, ctx)
    fast = prepare_embedder(trained_net(trained_params, ctx),
                            np.zeros((4, 3, SIZE, SIZE), ctx=ctx), mode=mode)
    got = embed_batches(fast, x, batch_size=4)
    assert cosine(got, want).min() > (0.99999 if mode == "fused" else 0.999)


def _prelu_reference(x, alpha):
    """PReLU written out element by element (channel axis 1)."""
    out = onp.empty_like(x)
    for idx in onp.ndindex(*x.shape):
        v = x[idx]
        out[idx] = v if v > 0 else alpha[idx[1]] * v
    return out


@pytest.mark.parametrize("shape", [(2, 5, 3, 3), (4, 5)])
def test_split_prelu_equals_prelu(shape):
    rng = onp.random.RandomState(3)
    alpha = onp.array([0.25, -0.5, 0.0, 1.5, 0.01], dtype="float32")  # any slope, not just 0..1
    x = rng.normal(size=shape).astype("float32")
    x.flat[:3] = 0.0
    data, slope = mx.sym.var("data"), mx.sym.var("act_alpha")
    sym = mx.sym.LeakyReLU(data, gamma=slope, act_type="prelu", name="act")
    split, params = _split_prelu(sym, {"act_alpha": mx.nd.array(alpha)})
    ops = [n["op"] for n in json.loads(split.tojson())["nodes"]]
    assert "LeakyReLU" not in ops and ops.count("BatchNorm") == 2
    assert split.list_outputs() == ["act_output"]  # same output name: later nodes still refer to it
    args = {n: params[n] for n in split.list_arguments() if n != "data"}
    auxs = {n: params[n] for n in split.list_auxiliary_states()}
    out = split.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), aux_states=auxs,
                     grad_req="null").forward(is_train=False)[0].asnumpy()
    onp.testing.assert_allclose(out, _prelu_reference(x, alpha), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("train", [True, False])
def test_tied_split_prelu_gradients_equal_prelu(train):
    """Training through the tied split: d/dx and d/dalpha as PReLU's, written out."""
    rng = onp.random.RandomState(4)
    alpha = onp.array([0.25, -0.5, 0.0, 1.5, 0.01], dtype="float32")
    x = rng.normal(size=(3, 5, 4, 4)).astype("float32")
    x.flat[:3] = 0.0
    dy = rng.normal(size=x.shape).astype("float32")
    data, slope = mx.sym.var("data"), mx.sym.var("act_alpha")
    sym = mx.sym.LeakyReLU(data, gamma=slope, act_type="prelu", name="act")
    split, params = _split_prelu(sym, {"act_alpha": mx.nd.array(alpha)}, tied=True)
    assert set(split.list_arguments()) == {"data", "act_alpha"}  # 1 - alpha is computed
    grads = {"data": mx.nd.zeros(x.shape), "act_alpha": mx.nd.zeros(alpha.shape)}
    exe = split.bind(mx.cpu(), {"data": mx.nd.array(x), "act_alpha": mx.nd.array(alpha)},
                     args_grad=grads,
                     aux_states={n: params[n] for n in split.list_auxiliary_states()})
    out = exe.forward(is_train=train)[0].asnumpy()
    exe.backward(mx.nd.array(dy))
    want_dx, want_da = onp.empty_like(x), onp.zeros_like(alpha)
    for idx in onp.ndindex(*x.shape):
        c = idx[1]
        want_dx[idx] = dy[idx] if x[idx] > 0 else alpha[c] * dy[idx]
        want_da[c] += 0.0 if x[idx] > 0 else x[idx] * dy[idx]
    onp.testing.assert_allclose(out, _prelu_reference(x, alpha), rtol=1e-6, atol=1e-7)
    onp.testing.assert_allclose(grads["data"].asnumpy(), want_dx, rtol=1e-6, atol=1e-7)
    onp.testing.assert_allclose(grads["act_alpha"].asnumpy(), want_da, rtol=1e-5, atol=1e-6)


def test_split_prelu_leaves_other_graphs_alone():
    data = mx.sym.var("data")
    relu = mx.sym.LeakyReLU(data, act_type="leaky", slope=0.1)
    assert _split_prelu(relu, {}) == (relu, {})
    # A slope computed in the graph (not a parameter) is not split.
    computed = mx.sym.LeakyReLU(data, gamma=mx.sym.var("a") * 2, act_type="prelu")
    same, _ = _split_prelu(computed, {"a": mx.nd.ones(3)})
    assert same is computed


def test_fast_graphs_keep_prelu_and_sums_in_onednn(ctx, trained_params):
    cpu_only(ctx)
    example = np.zeros((4, 3, SIZE, SIZE), ctx=ctx)
    calib, _ = identity_images(8, seed=600)
    for mode in ("fused", "bf16", "int8"):
        fast = prepare_embedder(trained_net(trained_params, ctx), example, mode=mode,
                                calib_data=calib)
        fast(example)
        ops = graph_ops(fast)
        assert "LeakyReLU" not in ops and "_npi_add" not in ops, mode
    # INT8 from the first quantize to the last dequantize.
    assert ops.count("_contrib_quantize_v2") == 1 and ops.count("_contrib_dequantize") == 1

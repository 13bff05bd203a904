"""ShardedMarginHead against one ArcMarginBlock + SoftmaxCrossEntropyLoss on one device."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import gluon, np

from gluon_face.heads import MARGIN_PRESETS, ArcMarginBlock, Margin
from gluon_face.parallel import PartialFC, ShardedMarginHead

#: Every margin preset: the README says the sharded head equals the single-device one for each.
PRESETS = sorted(MARGIN_PRESETS)
CPUS = [mx.cpu(i) for i in range(4)]


def _close(actual, expected, rtol=2e-5, what=""):
    scale = max(float(onp.abs(expected).max()), 1e-6)
    err = float(onp.abs(actual - expected).max())
    assert err <= rtol * scale + 1e-6, f"{what}: max error {err:g} (scale {scale:g})"


@pytest.mark.parametrize("num_shards", [2, 3, 4])
@pytest.mark.parametrize("preset", PRESETS)
def test_loss_and_gradients_equal_single_device(ref, rng, preset, num_shards):
    emb, classes, batch = 16, 23, 12
    head = ShardedMarginHead.from_preset(preset, emb, classes, CPUS[:num_shards])
    head.initialize()
    weight = head.weight()
    x, y = ref.hard_batch(weight, batch, rng)
    data_ctx = [mx.cpu(0), mx.cpu(1)]
    losses, grads = head.forward_backward(ref.split(x, data_ctx), ref.split(y, data_ctx))
    assert [g.ctx for g in grads] == data_ctx and [l.ctx for l in losses] == data_ctx

    exp_loss, exp_xgrad, exp_wgrad = ref.Reference(weight, ref.presets[preset]) \
        .forward_backward(x, y)
    assert onp.isfinite(exp_xgrad).all()
    _close(ref.cat(losses), exp_loss, what="loss")
    _close(ref.cat(grads), exp_xgrad, what="embedding gradient")
    _close(head.weight_grad(), exp_wgrad, what="centre gradient")


def test_matches_naive_numpy_cosface(ref, rng):
    """Cross-shard log-sum-exp against a per-sample numpy loop (CosFace, s=64, b=0.35)."""
    emb, classes, batch, s, b = 8, 10, 6, 64.0, 0.35
    head = ShardedMarginHead.from_preset("cosface", emb, classes, CPUS[:3])
    head.initialize(init=mx.init.Normal(1.0))
    weight = head.weight()
    x, y = ref.hard_batch(weight, batch, rng)
    losses, _ = head.forward_backward(np.array(x), np.array(y), backward=False)
    expected = []
    for xi, yi in zip(x.astype(onp.float64), y.astype(int)):
        cos = [xi @ w / (onp.linalg.norm(xi) * onp.linalg.norm(w)) for w in weight]
        z = [s * (c - b) if j == yi else s * c for j, c in enumerate(cos)]
        top = max(z)
        expected.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[yi])
    onp.testing.assert_allclose(losses[0].asnumpy(), expected, rtol=1e-4, atol=1e-4)


def test_uneven_shards_other_data_contexts_and_label_smoothing(ref, rng):
    emb, classes, batch = 8, 11, 9
    head = ShardedMarginHead.from_preset("arcface", emb, classes, CPUS[:4], ls_eps=0.1)
    assert [s.size for s in head.shards] == [3, 3, 3, 2]
    head.initialize()
    weight = head.weight()
    x, y = ref.hard_batch(weight, batch, rng)
    data_ctx = [mx.cpu(5), mx.cpu(6), mx.cpu(7)]
    losses, grads = head.forward_backward(ref.split(x, data_ctx, [2, 3, 4]),
                                          ref.split(y, data_ctx, [2, 3, 4]))
    exp_loss, exp_xgrad, exp_wgrad = ref.Reference(weight, ref.presets["arcface"], ls_eps=0.1) \
        .forward_backward(x, y)
    _close(ref.cat(losses), exp_loss, what="loss")
    _close(ref.cat(grads), exp_xgrad, what="embedding gradient")
    _close(head.weight_grad(), exp_wgrad, what="centre gradient")


def test_backward_false_gives_same_losses(ref, rng):
    head = ShardedMarginHead.from_preset("combined", 8, 9, CPUS[:2])
    head.initialize()
    head.init_optimizer("sgd", {"learning_rate": 0.1})
    x, y = ref.hard_batch(head.weight(), 5, rng)
    loss_a, grads = head.forward_backward(np.array(x), np.array(y), backward=False)
    assert grads is None
    loss_b, _ = head.forward_backward(np.array(x), np.array(y))
    onp.testing.assert_array_equal(loss_a[0].asnumpy(), loss_b[0].asnumpy())
    with pytest.raises(RuntimeError, match="forward_backward"):
        head.forward_backward(np.array(x), np.array(y), backward=False)
        head.step(5)


@pytest.mark.parametrize("optimizer, params", [
    ("sgd", {"learning_rate": 0.5, "momentum": 0.9, "wd": 5e-4}),
    ("adam", {"learning_rate": 0.01, "wd": 5e-4}),
])
@pytest.mark.parametrize("cls", [ShardedMarginHead, PartialFC])
def test_steps_equal_gluon_trainer(ref, rng, cls, optimizer, params):
    """Two optimizer steps (with weight decay): same centres as gluon.Trainer on one device."""
    emb, classes, batch = 8, 13, 10
    kwargs = {"sample_rate": 1.0} if cls is PartialFC else {}
    head = cls.from_preset("arcface", emb, classes, CPUS[:3], **kwargs)
    head.initialize()
    head.init_optimizer(optimizer, params)
    start = head.weight()
    reference = ref.Reference(start, ref.presets["arcface"], optimizer_params=params,
                              optimizer=optimizer)
    for _ in range(2):
        x, y = ref.hard_batch(head.weight(), batch, rng)
        losses, _ = head.forward_backward(ref.split(x, CPUS[:2]), ref.split(y, CPUS[:2]))
        exp_loss, _, _ = reference.forward_backward(x, y)
        _close(ref.cat(losses), exp_loss, what="loss")
        head.step(batch)
        reference.step(batch)
        _close(head.weight(), reference.weight(), rtol=1e-5, what="centres after step")
    assert onp.abs(head.weight() - start).max() > 1e-3


def test_parameters_round_trip_with_arcmarginblock(tmp_path, ref):
    head = ShardedMarginHead(8, 10, CPUS[:3])
    head.initialize()
    path = str(tmp_path / "head.params")
    head.save_parameters(path)
    single = ArcMarginBlock(8, 10)
    single.load_parameters(path)
    onp.testing.assert_array_equal(single.fc7_weight.data().asnumpy(), head.weight())
    other = ShardedMarginHead(8, 10, CPUS[:2])
    other.load_parameters(path)
    onp.testing.assert_array_equal(other.weight(), head.weight())
    with pytest.raises(ValueError, match="shape"):
        ShardedMarginHead(8, 11, CPUS[:2]).load_parameters(path)
    bad = tmp_path / "junk.params"
    bad.write_bytes(b"not params")
    with pytest.raises(ValueError, match="junk.params"):
        other.load_parameters(str(bad))


def test_states_round_trip_resumes_exactly(tmp_path, ref, rng):
    params = {"learning_rate": 0.5, "momentum": 0.9, "wd": 5e-4}
    batches = [ref.hard_batch(onp.ones((10, 8), "f4"), 6, rng) for _ in range(3)]

    def run(head, items):
        for x, y in items:
            head.forward_backward(np.array(x), np.array(y))
            head.step(6)

    first = ShardedMarginHead(8, 10, CPUS[:2])
    first.initialize()
    first.init_optimizer("sgd", params)
    run(first, batches[:1])
    first.save_parameters(str(tmp_path / "h.params"))
    first.save_states(str(tmp_path / "h.states"))
    run(first, batches[1:])

    resumed = ShardedMarginHead(8, 10, CPUS[:3])   # another shard count
    resumed.load_parameters(str(tmp_path / "h.params"))
    resumed.init_optimizer("sgd", params)
    resumed.load_states(str(tmp_path / "h.states"))
    assert resumed.optimizer.num_update == 1
    run(resumed, batches[1:])
    _close(resumed.weight(), first.weight(), rtol=1e-6, what="resumed centres")


def test_bad_inputs(rng):
    head = ShardedMarginHead(8, 10, CPUS[:2])
    x = np.array(rng.normal(size=(4, 8)))
    with pytest.raises(RuntimeError, match="not initialized"):
        head.forward_backward(x, np.array([0, 1, 2, 3]))
    head.initialize()
    with pytest.raises(RuntimeError, match="init_optimizer"):
        head.step(4)
    head.init_optimizer("sgd", {"learning_rate": 0.1})
    with pytest.raises(RuntimeError, match="forward_backward"):
        head.step(4)
    with pytest.raises(ValueError, match="outside the class ids"):
        head.forward_backward(x, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="outside the class ids"):
        head.forward_backward(x, np.array([0, 1, 2, -1]))
    with pytest.raises(ValueError, match=r"embeddings\[0\] has shape \(4, 7\)"):
        head.forward_backward(np.array(rng.normal(size=(4, 7))), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="entries"):
        head.forward_backward(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="smaller than the number of contexts"):
        ShardedMarginHead(8, 1, CPUS[:2])
    with pytest.raises(ValueError, match="valid presets: arcface"):
        ShardedMarginHead.from_preset("arc", 8, 10)
    with pytest.raises(ValueError, match="margin_m"):
        ShardedMarginHead(8, 10, margin_m=-0.1)


def test_backbone_gradients_equal_single_device(ref, rng):
    """Data-parallel Dense 'backbone' on 2 contexts + head sharded on 3: same backbone grads."""
    from mxnet import autograd, gluon

    emb, classes, batch = 8, 14, 8
    data = rng.normal(size=(batch, 5)).astype(onp.float32)
    y = rng.randint(0, classes, size=batch).astype(onp.float32)
    net = gluon.nn.Dense(emb, in_units=5)
    net.initialize(ctx=CPUS[:2])
    head = ShardedMarginHead.from_preset("arcface", emb, classes, CPUS[1:4])
    head.initialize()
    xs, ys = ref.split(data, CPUS[:2]), ref.split(y, CPUS[:2])
    with autograd.record():
        embs = [net(x) for x in xs]
        losses, grads = head.forward_backward(embs, ys)   # inside record() on purpose
    autograd.backward(embs, grads)
    net_grad = sum(net.weight.grad(c).asnumpy() for c in CPUS[:2])

    single = gluon.nn.Dense(emb, in_units=5)
    single.initialize(ctx=mx.cpu(0))
    single.weight.set_data(net.weight.data(CPUS[0]))
    single.bias.set_data(net.bias.data(CPUS[0]))
    reference = ref.Reference(head.weight(), ref.presets["arcface"])
    with autograd.record():
        loss = reference.loss_fn(reference.block(single(np.array(data)), np.array(y)),
                                 np.array(y))
    loss.backward()
    _close(ref.cat(losses), loss.asnumpy(), what="loss")
    _close(net_grad, single.weight.grad().asnumpy(), rtol=1e-4, what="backbone gradient")


def test_on_the_suite_contexts(ref, rng, ctx_list):
    """Same check on ``ctx_list`` (two GPUs when GLUON_FACE_TEST_CTX=gpu and they exist)."""
    head = ShardedMarginHead.from_preset("arcface", 16, 21, ctx_list)
    head.initialize()
    weight = head.weight()
    x, y = ref.hard_batch(weight, 8, rng)
    losses, grads = head.forward_backward(ref.split(x, ctx_list), ref.split(y, ctx_list))
    exp_loss, exp_xgrad, exp_wgrad = ref.Reference(weight, ref.presets["arcface"]) \
        .forward_backward(x, y)
    _close(ref.cat(losses), exp_loss, what="loss")
    _close(ref.cat(grads), exp_xgrad, what="embedding gradient")
    _close(head.weight_grad(), exp_wgrad, what="centre gradient")


def test_the_margin_is_a_margin_not_a_block():
    """The head holds its centres in the shards and a Margin: no gluon block or parameter."""
    head = ShardedMarginHead.from_preset("combined", 8, 10, CPUS[:2], margin_s=32.0)
    assert head.margin == Margin.from_preset("combined", margin_s=32.0)
    assert head.margin == ArcMarginBlock.from_preset("combined", 8, 10, margin_s=32.0).margin
    assert head.margin_s == 32.0
    head.initialize()
    gluon_types = (gluon.Block, gluon.Parameter, gluon.ParameterDict)
    for obj in [head, head.margin, *head.shards]:
        for key, value in vars(obj).items():
            assert not isinstance(value, gluon_types), f"{type(obj).__name__}.{key}"
    arrays = [v for v in vars(head).values() if isinstance(v, (mx.nd.NDArray, np.ndarray))]
    assert not arrays, "every array of the head lives in a shard"
    assert sum(s.weight.size for s in head.shards) == 10 * 8


def test_softmax_preset_is_deprecated_cosine():
    """Same logits: tests/parallel/test_partial_fc.py (through get_parallel_head)."""
    with pytest.warns(DeprecationWarning, match="use 'cosine'") as rec:
        old = ShardedMarginHead.from_preset("softmax", 8, 10, CPUS[:2])
    assert rec[0].filename == __file__
    assert old.margin == ShardedMarginHead.from_preset("cosine", 8, 10, CPUS[:2]).margin


@pytest.mark.parametrize("cls", [ShardedMarginHead, PartialFC])
def test_uses_the_head_kernels_and_equals_the_fallback(ref, rng, monkeypatch, cls):
    """The sharded and Partial FC heads normalise and write targets with ArcMarginBlock's
    numba kernels (no L2Normalization of the centres, no one-hot masks), and give the
    numbers of the MXNet-operator fallback."""
    from gluon_face.heads import _kernels

    if not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    emb, classes, batch = 16, 40, 12
    extra = {"sample_rate": 0.5, "seed": 3} if cls is PartialFC else {}
    weight = onp.random.RandomState(5).normal(size=(classes, emb)).astype("float32")
    x, y = ref.hard_batch(weight, batch, onp.random.RandomState(6))
    results, calls = [], []
    for name in ("_normalize_rows", "_normalize_rows_backward", "_set_targets",
                 "_set_targets_backward"):
        real = getattr(_kernels, name)
        monkeypatch.setattr(_kernels, name,
                            lambda *a, _real=real, _name=name: (calls.append(_name),
                                                               _real(*a))[1])
    for kernels in (True, False):
        monkeypatch.setattr(_kernels, "AVAILABLE", kernels)
        head = cls.from_preset("arcface", emb, classes, CPUS[:2], **extra)
        head.initialize()
        head.set_weight(weight)
        losses, grads = head.forward_backward(np.array(x), np.array(y))
        results.append((losses[0].asnumpy(), grads[0].asnumpy(), head.weight_grad()))
        if kernels:
            # forward and backward of both kernels on each of the 2 shards; one more
            # set_targets per shard for the cross-entropy gradient
            assert sorted(set(calls)) == ["_normalize_rows", "_normalize_rows_backward",
                                          "_set_targets", "_set_targets_backward"], calls
            assert calls.count("_normalize_rows") == 2 and calls.count("_set_targets") == 4
        else:
            assert not calls, calls
        calls.clear()
    (l1, g1, w1), (l2, g2, w2) = results
    _close(l1, l2, rtol=1e-5, what="loss")
    _close(g1, g2, rtol=1e-4, what="embedding gradient")
    _close(w1, w2, rtol=1e-4, what="centre gradient")

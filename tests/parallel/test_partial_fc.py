"""Partial FC: sampling invariants, untouched unsampled rows, equality with the full head."""
import warnings

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.parallel import PartialFC, ShardedMarginHead, get_parallel_head

CPUS = [mx.cpu(i) for i in range(3)]
SGD = {"learning_rate": 0.5, "momentum": 0.9, "wd": 5e-4}


def _close(actual, expected, rtol=2e-5, what=""):
    scale = max(float(onp.abs(expected).max()), 1e-6)
    err = float(onp.abs(actual - expected).max())
    assert err <= rtol * scale + 1e-6, f"{what}: max error {err:g} (scale {scale:g})"


def _momentum(head):
    """Full momentum matrix (C, E) gathered from the shards."""
    return onp.concatenate([s.state.asnumpy() for s in head.shards], axis=0)


def test_sample_contains_positives_and_has_the_right_size(rng):
    head = PartialFC(4, 1000, CPUS[:3], sample_rate=0.1, seed=1)
    head.initialize()
    assert [head.num_sampled(s) for s in head.shards] == [33, 33, 33]
    seen = set()
    for labels in ([0, 1, 2, 3, 999], list(range(0, 1000, 7))[:60], [5] * 8):
        y = onp.asarray(labels, dtype=onp.float32)
        x = rng.normal(size=(len(y), 4)).astype(onp.float32)
        head.forward_backward(np.array(x), np.array(y))
        sample = head.sampled_classes()
        assert onp.all(onp.diff(sample) > 0), "sorted, no repeats"
        assert set(labels) <= set(sample.tolist()), "every positive is sampled"
        for shard in head.shards:
            inside = {c for c in labels if shard.offset <= c < shard.offset + shard.size}
            expected = max(head.num_sampled(shard), len(inside))
            assert len(shard.rows) == expected
            assert shard.rows.min() >= 0 and shard.rows.max() < shard.size
        seen.update(sample.tolist())
    assert len(seen) > 200, "negatives are drawn afresh each step"


def test_only_sampled_rows_and_their_momentum_change(ref, rng):
    emb, classes, batch = 8, 60, 6
    head = PartialFC.from_preset("arcface", emb, classes, CPUS[:2], sample_rate=0.2, seed=3)
    head.initialize()
    head.init_optimizer("sgd", SGD)
    for step in range(3):
        before_w, x_y = head.weight(), ref.hard_batch(head.weight(), batch, rng)
        before_m = _momentum(head) if step else onp.zeros_like(before_w)
        x, y = x_y
        losses, grads = head.forward_backward(ref.split(x, CPUS[:2]), ref.split(y, CPUS[:2]))
        sample = head.sampled_classes()
        assert len(sample) == 2 * 6 or len(sample) > 2 * 6 - 1
        # Loss and gradients: the single-device head restricted to the sampled classes.
        sub_y = onp.searchsorted(sample, y.astype(int)).astype(onp.float32)
        exp_loss, exp_xgrad, exp_wgrad = ref.Reference(before_w[sample], ref.presets["arcface"]) \
            .forward_backward(x, sub_y)
        _close(ref.cat(losses), exp_loss, what="loss")
        _close(ref.cat(grads), exp_xgrad, what="embedding gradient")
        wgrad = head.weight_grad()
        _close(wgrad[sample], exp_wgrad, what="centre gradient")
        head.step(batch)
        after_w, after_m = head.weight(), _momentum(head)
        rest = onp.setdiff1d(onp.arange(classes), sample)
        # Unsampled rows: weight and momentum bit-identical, although momentum is non-zero.
        onp.testing.assert_array_equal(after_w[rest], before_w[rest])
        onp.testing.assert_array_equal(after_m[rest], before_m[rest])
        if step:
            assert onp.abs(before_m[rest]).max() > 0, "some skipped rows carry momentum"
        # Sampled rows: one SGD-momentum update (MXNet's rule), weight decay included.
        w = before_w[sample]
        mom = 0.9 * before_m[sample] - 0.5 * (exp_wgrad / batch + 5e-4 * w)
        _close(after_m[sample], mom, rtol=1e-5, what="momentum")
        _close(after_w[sample], w + mom, rtol=1e-5, what="updated rows")


def test_sampling_path_with_every_class_positive_equals_full_head(ref, rng):
    """All classes in the batch: the gather/update/scatter path must equal the full head."""
    emb, classes = 8, 12
    head = PartialFC.from_preset("combined", emb, classes, CPUS[:3], sample_rate=0.25)
    head.initialize()
    head.init_optimizer("sgd", SGD)
    reference = ref.Reference(head.weight(), ref.presets["combined"], optimizer_params=SGD)
    for _ in range(3):
        y = rng.permutation(classes)
        x, y = ref.hard_batch(head.weight(), classes, rng, labels=y)
        losses, _ = head.forward_backward(ref.split(x, CPUS[:2]), ref.split(y, CPUS[:2]))
        assert all(s.rows is not None and len(s.rows) == s.size for s in head.shards)
        exp_loss, _, _ = reference.forward_backward(x, y)
        _close(ref.cat(losses), exp_loss, what="loss")
        head.step(classes)
        reference.step(classes)
        _close(head.weight(), reference.weight(), rtol=1e-5, what="centres")


def test_sample_rate_one_does_not_sample(rng):
    head = PartialFC(8, 50, CPUS[:2], sample_rate=1.0)
    head.initialize()
    head.forward_backward(np.array(rng.normal(size=(3, 8))), np.array([1, 2, 3]))
    assert all(s.rows is None for s in head.shards)
    assert len(head.sampled_classes()) == 50


def test_resume_draws_the_same_samples(tmp_path, ref, rng):
    batches = [ref.hard_batch(onp.ones((40, 8), "f4"), 5, rng) for _ in range(3)]

    def run(head, items):
        drawn = []
        for x, y in items:
            head.forward_backward(np.array(x), np.array(y))
            drawn.append(head.sampled_classes())
            head.step(5)
        return drawn

    first = PartialFC(8, 40, CPUS[:2], sample_rate=0.2, seed=7)
    first.initialize()
    first.init_optimizer("sgd", SGD)
    run(first, batches[:1])
    first.save_parameters(str(tmp_path / "h.params"))
    first.save_states(str(tmp_path / "h.states"))
    drawn_first = run(first, batches[1:])

    resumed = PartialFC(8, 40, CPUS[:2], sample_rate=0.2, seed=99)
    resumed.load_parameters(str(tmp_path / "h.params"))
    resumed.init_optimizer("sgd", SGD)
    resumed.load_states(str(tmp_path / "h.states"))
    drawn_resumed = run(resumed, batches[1:])
    for a, b in zip(drawn_first, drawn_resumed):
        onp.testing.assert_array_equal(a, b)
    _close(resumed.weight(), first.weight(), rtol=1e-6, what="resumed centres")


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC(8, 10, sample_rate=rate)


def test_get_parallel_head():
    exact = get_parallel_head("cosface", 8, 10, CPUS[:2], ls_eps=0.1)
    assert type(exact) is ShardedMarginHead and exact.margin.margin_b == 0.35
    assert exact.ls_eps == 0.1
    sampled = get_parallel_head("arcface", 8, 10, CPUS[:2], sample_rate=0.3, seed=1,
                                margin_s=32.0)
    assert isinstance(sampled, PartialFC) and sampled.sample_rate == 0.3
    assert sampled.margin.margin_s == 32.0 and sampled.margin.margin_m == 0.5
    with pytest.raises(ValueError, match="no model-parallel head; valid: arcface, combined, "
                                         "cosface, cosine, normface, sphereface$"):
        get_parallel_head("adacos", 8, 10)


@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
def test_get_parallel_head_softmax_is_deprecated_cosine(ref, rng, sample_rate):
    """The former name of the cosine head warns and trains the very same head."""
    with pytest.warns(DeprecationWarning, match="use 'cosine'") as rec:
        old = get_parallel_head("softmax", 8, 10, CPUS[:2], sample_rate=sample_rate, seed=4)
    assert len(rec) == 1 and rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = get_parallel_head("cosine", 8, 10, CPUS[:2], sample_rate=sample_rate, seed=4)
    assert type(old) is type(new) and old.margin == new.margin
    assert old.margin.margin_free and old.margin.margin_s == 64.0
    new.initialize()
    old.initialize()
    old.set_weight(new.weight())
    x, y = ref.hard_batch(new.weight(), 6, rng)
    (loss_old,), (grad_old,) = old.forward_backward(np.array(x), np.array(y))
    (loss_new,), (grad_new,) = new.forward_backward(np.array(x), np.array(y))
    onp.testing.assert_array_equal(loss_old.asnumpy(), loss_new.asnumpy())
    onp.testing.assert_array_equal(grad_old.asnumpy(), grad_new.asnumpy())


def test_adam_moments_of_unsampled_rows_untouched(ref, rng):
    head = PartialFC(8, 40, CPUS[:2], sample_rate=0.2, seed=5)
    head.initialize()
    head.init_optimizer("adam", {"learning_rate": 0.01})
    snapshots = []
    for _ in range(3):
        x, y = ref.hard_batch(head.weight(), 4, rng)
        head.forward_backward(np.array(x), np.array(y))
        sample = head.sampled_classes()
        before = [head.weight()] + [onp.concatenate([s.state[j].asnumpy() for s in head.shards])
                                    for j in range(2)] if snapshots else None
        head.step(4)
        after = [head.weight()] + [onp.concatenate([s.state[j].asnumpy() for s in head.shards])
                                   for j in range(2)]
        rest = onp.setdiff1d(onp.arange(40), sample)
        if before is not None:
            for b, a in zip(before, after):
                onp.testing.assert_array_equal(a[rest], b[rest])
                assert not onp.array_equal(a[sample], b[sample])
        snapshots.append(after)

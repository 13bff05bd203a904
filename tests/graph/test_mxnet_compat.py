"""gluon_face.graph.mxnet_compat: each private-API accessor on real Gluon blocks and trainers."""
import ctypes

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np
from mxnet.gluon import nn
from mxnet.util import use_np

from gluon_face.graph import mxnet_compat as compat


def test_checked_version_is_the_installed_one():
    assert compat.CHECKED_MXNET_VERSION == "1.9.1"
    assert compat.check_version() == (mx.__version__ == "1.9.1")
    assert compat.check_version("1.9.1") and not compat.check_version("2.0.0")


def _mlp():
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3), nn.BatchNorm(in_channels=4), nn.Dense(2, in_units=4))
    return net


@use_np
def _trainer(ctx_list, optimizer="sgd", **params):
    net = _mlp()
    net.initialize(mx.init.Xavier(), ctx=ctx_list)
    trainer = gluon.Trainer(net.collect_params(), optimizer,
                            dict({"learning_rate": 0.1}, **params), kvstore="local",
                            update_on_kvstore=False)
    return net, trainer


@use_np
def _step(net, trainer, ctx_list, batch=4):
    rng = onp.random.RandomState(0)
    for ctx in ctx_list:
        x = np.array(rng.normal(size=(batch, 3)).astype("float32"), ctx=ctx)
        with autograd.record():
            loss = (net(x) ** 2).sum()
        loss.backward()
    trainer.step(batch * len(ctx_list))


# ------------------------------------------------------------------------------ blocks
def test_block_children_declared_and_structural_params():
    net = _mlp()
    children = compat.block_children(net)
    assert list(children) == ["0", "1", "2"]
    assert [type(c) for c in children.values()] == [nn.Dense, nn.BatchNorm, nn.Dense]
    children.clear()  # a copy: the block keeps its children
    assert len(compat.block_children(net)) == 3
    assert set(compat.declared_params(net[1])) == {"gamma", "beta", "running_mean",
                                                   "running_var"}
    assert compat.declared_params(net) == {}
    keys = set(compat.structural_params(net))
    assert keys == {"0.weight", "0.bias", "1.gamma", "1.beta", "1.running_mean",
                    "1.running_var", "2.weight", "2.bias"}


@use_np
def test_structural_keys_are_those_save_parameters_writes(tmp_path, ctx):
    net = _mlp()
    net.initialize(ctx=ctx)
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    assert set(mx.npx.load(path)) == set(compat.structural_params(net))


def test_operator_kwargs_and_dense_config():
    conv = nn.Conv2D(8, 3, strides=2, padding=1, groups=2, in_channels=4)
    kw = compat.operator_kwargs(conv)
    assert kw["kernel"] == (3, 3) and kw["stride"] == (2, 2) and kw["num_group"] == 2
    assert compat.dense_config(nn.Dense(5)) == (5, True)
    assert compat.dense_config(nn.Dense(7, flatten=False)) == (7, False)


@use_np
def test_set_operator_kwarg_freezes_batch_norm_statistics(ctx):
    bn = nn.BatchNorm(in_channels=2)
    bn.initialize(ctx=ctx)
    bn.running_mean.set_data(np.array([1.0, -1.0], ctx=ctx))
    x = np.array(onp.random.RandomState(1).normal(size=(6, 2)).astype("float32"), ctx=ctx)
    with autograd.record(train_mode=True):
        batch_stats = bn(x).asnumpy()
    compat.set_operator_kwarg(bn, "use_global_stats", True)
    assert compat.operator_kwargs(bn)["use_global_stats"] is True
    with autograd.record(train_mode=True):
        frozen = bn(x).asnumpy()
    # Running statistics (mean 1 / -1, variance 1) instead of the batch's.
    want = (x.asnumpy() - onp.array([1.0, -1.0])) / onp.sqrt(1.0 + 1e-5)
    onp.testing.assert_allclose(frozen, want, rtol=1e-5, atol=1e-5)
    assert not onp.allclose(batch_stats, frozen)
    with pytest.raises(KeyError, match="use_global_stat"):
        compat.set_operator_kwarg(bn, "use_global_stat", True)


@use_np
def test_cached_graph_before_and_after_tracing(ctx):
    net = _mlp()
    net.initialize(ctx=ctx)
    assert compat.cached_graph(net) is None
    net.hybridize()
    net(np.zeros((2, 3), ctx=ctx))
    inputs, sym = compat.cached_graph(net)
    assert len(inputs) == 1 and "FullyConnected" in sym.tojson()


@use_np
def test_load_parameter_initialises_a_deferred_parameter(ctx):
    dense = nn.Dense(3)  # input size unknown: deferred
    dense.initialize(ctx=ctx)
    weight = np.arange(12, dtype="float32").reshape(3, 4)
    compat.load_parameter(dense.weight, weight.as_in_ctx(ctx), ctx)
    compat.load_parameter(dense.bias, np.zeros(3, ctx=ctx), ctx)
    onp.testing.assert_array_equal(dense.weight.data(ctx).asnumpy(), weight.asnumpy())
    assert dense(np.ones((1, 4), ctx=ctx)).shape == (1, 3)


# ---------------------------------------------------------------------------- trainer
def test_trainer_params_updaters_and_lazy_initialisation(ctx_list):
    net, trainer = _trainer(ctx_list)
    params = compat.trainer_params(trainer)
    by_name = net.collect_params()
    assert params == [by_name[k] for k in sorted(by_name)]  # a dict's index order: sorted keys
    assert trainer.optimizer.param_dict[2] is params[2]
    assert len(compat.trainer_updaters(trainer)) == len(ctx_list)
    assert compat.updates_on_kvstore(trainer) is False
    assert compat.ensure_trainer_initialized(trainer) is True
    assert compat.ensure_trainer_initialized(trainer) is False  # once is enough
    _step(net, trainer, ctx_list)
    assert compat.updates_on_kvstore(trainer) is False


def test_update_counts_round_trip(ctx_list):
    net, trainer = _trainer(ctx_list, momentum=0.9)
    for _ in range(3):
        _step(net, trainer, ctx_list)
    opt = trainer.optimizer
    counts = compat.update_counts(opt)
    n_trained = len([p for p in compat.trainer_params(trainer) if p.grad_req != "null"])
    assert counts and all(len(c) == n_trained for c in counts.values())
    assert {n for c in counts.values() for n in c.values()} == {3}
    counts[min(counts)][0] = 99  # a copy
    assert compat.update_counts(opt)[min(counts)][0] == 3

    _, fresh = _trainer(ctx_list, momentum=0.9)
    compat.set_update_counts(fresh.optimizer, compat.update_counts(opt))
    assert compat.update_counts(fresh.optimizer) == compat.update_counts(opt)
    assert compat.current_update_counts(fresh.optimizer) == \
        compat.update_counts(opt)[min(counts)]

    compat.advance_update_counts(fresh.optimizer)
    assert {n for c in compat.update_counts(fresh.optimizer).values() for n in c.values()} == {4}
    compat.set_update_counts(fresh.optimizer, {})
    assert compat.update_counts(fresh.optimizer) == {0: {}}


def test_begin_update_counts_and_scales():
    opt = mx.optimizer.create("sgd", learning_rate=0.5, wd=0.01, begin_num_update=10)
    opt.set_lr_mult({0: 2.0})
    assert compat.begin_update(opt, 0) == (11, 1.0, 0.01)
    assert compat.begin_update(opt, 0)[0] == 12
    assert compat.begin_update(opt, 1) == (11, 0.5, 0.01)
    assert opt.num_update == 12 and compat.current_update_counts(opt) == {0: 12, 1: 11}


# --------------------------------------------------------------------------- graph, arrays
def test_dtype_from_code():
    assert compat.dtype_from_code(0) == onp.float32
    assert compat.dtype_from_code("2") == onp.float16
    from gluon_face.graph.precision import bfloat16_dtype

    assert compat.dtype_from_code(12) == bfloat16_dtype()


def test_ndarray_address_points_at_the_array_memory():
    arr = mx.nd.array(onp.arange(6, dtype="float32").reshape(2, 3))
    arr.wait_to_read()
    buf = (ctypes.c_float * 6).from_address(compat.ndarray_address(arr))
    view = onp.frombuffer(buf, dtype=onp.float32)
    onp.testing.assert_array_equal(view, onp.arange(6))
    view[0] = 42.0  # the same memory, not a copy
    assert arr.asnumpy()[0, 0] == 42.0

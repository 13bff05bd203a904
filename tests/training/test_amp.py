"""--amp: the backbone trains through a bfloat16 graph (CPU) with float32 master weights,
the dynamic loss scaler of float16 training, and what must be refused."""
import json
import logging
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import gluon, np

from gluon_face.commands import train
from gluon_face.training import ConfigError, FaceTrainer, load_model
from gluon_face.training import amp as amp_mod
from gluon_face.training.amp import (
    DynamicLossScaler,
    amp_dtype,
    check_amp,
    count_skipped_update,
    cpu_flags,
    cpu_has_bf16,
    grads_finite,
)
from gluon_face.training.checkpoint import load_checkpoint_state

from ..conftest import needs

needs_bf16 = needs("bf16", cpu_has_bf16(), "CPU without avx512_bf16")


def _weights(block):
    return {k: v.data(v.list_ctx()[0]).asnumpy().copy()
            for k, v in block._collect_params_with_prefix().items()}


def _graph_casts(block):
    """Target dtypes of the amp_cast nodes in a SymbolBlock's graph."""
    sym = block._cached_graph[1] if block._cached_graph else None
    if sym is None:
        return []
    nodes = json.loads(sym.tojson(remove_amp_cast=False))["nodes"]
    return [n["attrs"].get("dtype") for n in nodes if n["op"] == "amp_cast"]


# ----------------------------------------------------------------------------- processor check
def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert {"avx512_bf16", "amx_bf16", "fpu"} <= cpu_flags(str(info))
    assert cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni\n")
    assert not cpu_has_bf16(str(info))
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_amp_dtype_per_device_kind(monkeypatch):
    assert amp_dtype([mx.cpu(0), mx.cpu(1)]) == "bfloat16"
    assert amp_dtype([mx.gpu(0), mx.gpu(1)]) == "float16"  # a Context object needs no GPU
    with pytest.raises(ConfigError, match="mix"):
        amp_dtype([mx.cpu(), mx.gpu(0)])
    assert check_amp([mx.gpu(0)], "dist_sync") == "float16"
    with pytest.raises(ConfigError, match="dist_async"):
        check_amp([mx.gpu(0)], "dist_async")
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda path=None: True)
    assert check_amp([mx.cpu()]) == "bfloat16"


def test_amp_refused_on_a_cpu_without_avx512_bf16(make_config, monkeypatch, capsys):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda path=None: False)
    with pytest.raises(ConfigError, match="avx512_bf16") as info:
        FaceTrainer(make_config(amp=True))
    assert "\n" not in str(info.value)
    cfg = make_config()
    logger = logging.getLogger("gluon_face")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:  # the tool points a handler at capsys's stderr, closed after this test
        assert train.main(["--data-dir", cfg.data_dir, "--amp", "--output", cfg.output]) == 2
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    err = capsys.readouterr().err
    assert "avx512_bf16" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- loss scaler
def test_loss_scaler_backs_off_on_overflow_and_grows_when_clean():
    scaler = DynamicLossScaler(init_scale=2.0 ** 10, growth_interval=3, max_scale=2.0 ** 11,
                               min_scale=2.0 ** 8)
    assert scaler.update(True) and scaler.update(True)
    assert scaler.scale == 2.0 ** 10 and scaler.clean_steps == 2
    assert not scaler.update(False)  # overflow: skip, halve, restart the count
    assert scaler.scale == 2.0 ** 9 and scaler.clean_steps == 0 and scaler.skipped == 1
    for _ in range(3):
        assert scaler.update(True)
    assert scaler.scale == 2.0 ** 10 and scaler.clean_steps == 0  # grown after 3 clean steps
    for _ in range(6):
        scaler.update(True)
    assert scaler.scale == 2.0 ** 11  # capped at max_scale
    for _ in range(5):
        scaler.update(False)
    assert scaler.scale == 2.0 ** 8  # floored at min_scale
    with pytest.raises(ValueError, match="init_scale"):
        DynamicLossScaler(init_scale=0)
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicLossScaler(backoff_factor=1.5)


def test_loss_scaler_state_round_trips_through_json():
    scaler = DynamicLossScaler(init_scale=2.0 ** 12, growth_interval=7)
    for finite in (True, False, True, True):
        scaler.update(finite)
    state = json.loads(json.dumps(scaler.state_dict()))
    other = DynamicLossScaler()
    other.load_state_dict(state)
    assert other.state_dict() == scaler.state_dict()
    assert [other.update(f) for f in (True,) * 6] == [scaler.update(f) for f in (True,) * 6]
    assert other.scale == scaler.scale == 2.0 ** 12  # both grew at the same step
    with pytest.raises(ValueError, match="scale"):
        other.load_state_dict({"clean_steps": 1})
    with pytest.raises(ValueError, match="positive"):
        other.load_state_dict({"scale": -1.0, "clean_steps": 0})


@pytest.mark.parametrize("bad", [onp.inf, -onp.inf, onp.nan])
def test_grads_finite_sees_one_bad_element_on_any_device(bad):
    ctxs = [mx.cpu(0), mx.cpu(1)]
    params = []
    for i in range(205):  # more than one multi_all_finite chunk of 200
        p = gluon.Parameter(f"w{i}", shape=(3,))
        p.initialize(ctx=ctxs)
        params.append(p)
    for p in params:
        for ctx in ctxs:
            p.grad(ctx)[:] = 1.0
    assert grads_finite(params, ctxs[0]) and grads_finite(params, ctxs[1])
    params[203].grad(ctxs[1])[1] = bad
    assert grads_finite(params, ctxs[0])
    assert not grads_finite(params, ctxs[1])
    params[203].grad_req = "null"  # frozen parameters are not checked
    assert grads_finite(params, ctxs[1])


def test_count_skipped_update_keeps_the_schedule_in_step():
    opt = mx.optimizer.create("sgd", learning_rate=0.1, momentum=0.9)
    updater = mx.optimizer.get_updater(opt)
    w, g = mx.nd.ones((2,)), mx.nd.ones((2,))
    updater(0, g, w)
    updater(1, g, w)
    count_skipped_update(opt)
    assert opt.num_update == 2 and opt._index_update_count == {0: 2, 1: 2}
    updater(0, g, w)
    assert opt.num_update == 3


# ----------------------------------------------------------------------------- training
@needs_bf16
def test_bf16_loss_curve_follows_fp32_on_the_demo_data(demo_losses):
    """24 steps on the digits demo set, softmax head, tiny FaceResNet-18.

    The same seed gives the same initial weights and batches, so the two
    curves differ only by bfloat16 rounding (8-bit mantissa, ~0.4% per
    operation).  Tolerance: each 4-step mean of the bf16 losses within 3% of
    the fp32 one, the README's figure (measured: 1.98% in the last window, the
    same to 5 digits run after run, with 1 or 2 threads and with or without
    AMX: the job is seeded).  A second fp32 run with another seed (another
    initialisation, the same noise level of SGD) must leave twice that band
    (measured: 15.8%), so the tolerance is tight enough to catch a broken
    bf16 path, and the loss must fall by a third.  (The margin heads' scale
    s=64 amplifies rounding into step-to-step chaos on this tiny net; their
    curves are compared by trend only in the README.)
    """
    fp32, _ = demo_losses(amp=False)
    bf16, trainer = demo_losses(amp=True)
    other, _ = demo_losses(amp=False, seed=1)
    casts = _graph_casts(trainer.train_backbone)
    assert trainer.train_backbone is not trainer.backbone and len(casts) > 10
    assert "bfloat16" in casts
    assert not onp.array_equal(fp32, bf16)  # the bf16 graph really ran
    assert bf16[0] == pytest.approx(fp32[0], rel=2e-3)  # same weights: rounding only

    def window(v):
        return v.reshape(-1, 4).mean(axis=1)

    band = 0.03  # README.md: "bfloat16 loss curves stay within 3% of float32"
    rel = onp.abs(window(bf16) - window(fp32)) / window(fp32)
    assert rel.max() < band, rel
    assert (onp.abs(window(other) - window(fp32)) / window(fp32)).max() > 2 * band
    assert window(bf16)[-1] < 0.67 * window(bf16)[0]


@needs_bf16
def test_two_contexts_with_amp_keep_replicas_identical(make_config, run_steps):
    trainer = FaceTrainer(make_config(amp=True, ctx="cpu:0,1", hybridize=True))
    losses = run_steps(trainer, 3)
    assert all(onp.isfinite(losses))
    for name, param in trainer.backbone.collect_params().items():
        if param.grad_req == "null":  # BatchNorm running statistics are per device
            continue
        a, b = (param.data(c).asnumpy() for c in trainer.ctx)
        assert a.dtype == onp.float32
        onp.testing.assert_array_equal(a, b, err_msg=name)


def _with_scaler(monkeypatch, **kw):
    """Make --amp on this CPU use a loss scaler, as float16 on a GPU does."""
    monkeypatch.setattr(amp_mod, "loss_scaler_for", lambda dtype: DynamicLossScaler(**kw))


@needs_bf16
def test_scaled_loss_trains_exactly_as_unscaled(make_config, monkeypatch, tmp_path, run_steps):
    """A power-of-two scale is divided out exactly: same losses and weights."""
    plain = FaceTrainer(make_config(amp=True, output=str(tmp_path / "a")))
    assert plain.loss_scaler is None  # bfloat16 needs no scaling
    base = run_steps(plain, 3)
    _with_scaler(monkeypatch, init_scale=2.0 ** 12)
    scaled = FaceTrainer(make_config(amp=True, output=str(tmp_path / "b")))
    assert run_steps(scaled, 3) == pytest.approx(base, rel=1e-6)
    for key, value in _weights(plain.backbone).items():
        onp.testing.assert_allclose(_weights(scaled.backbone)[key], value, rtol=1e-5,
                                    atol=1e-7, err_msg=key)
    assert scaled.loss_scaler.skipped == 0


@needs_bf16
def test_injected_overflow_skips_the_step_and_halves_the_scale(make_config, monkeypatch, run_steps):
    _with_scaler(monkeypatch, init_scale=2.0 ** 12, growth_interval=2)
    trainer = FaceTrainer(make_config(amp=True, ctx="cpu:0,1"))
    run_steps(trainer, 1)
    before = _weights(trainer.backbone), _weights(trainer.head)
    updates = trainer.trainer.optimizer.num_update
    reduce = trainer.trainer.allreduce_grads

    def reduce_then_poison():
        reduce()
        param = next(iter(trainer.backbone.collect_params().values()))
        param.grad(trainer.ctx[0])[0] = onp.inf

    monkeypatch.setattr(trainer.trainer, "allreduce_grads", reduce_then_poison)
    assert onp.isfinite(run_steps(trainer, 1)[0])  # the loss itself was fine
    assert trainer.loss_scaler.scale == 2.0 ** 11 and trainer.loss_scaler.skipped == 1
    assert trainer.step == 2 and trainer.trainer.optimizer.num_update == updates + 1
    for got, want in zip((_weights(trainer.backbone), _weights(trainer.head)), before):
        for key, value in want.items():
            if "running_" not in key:  # BatchNorm statistics move in every forward pass
                onp.testing.assert_array_equal(got[key], value, err_msg=key)
    monkeypatch.setattr(trainer.trainer, "allreduce_grads", reduce)
    run_steps(trainer, 2)  # two clean steps: applied, and the scale grows back
    assert trainer.loss_scaler.scale == 2.0 ** 12
    changed = _weights(trainer.backbone)
    assert any(not onp.array_equal(changed[k], v) for k, v in before[0].items())


@needs_bf16
def test_resume_with_amp_repeats_the_uninterrupted_losses(make_config, monkeypatch, tmp_path,
                                                          run_steps):
    _with_scaler(monkeypatch, init_scale=2.0 ** 10, growth_interval=2)
    common = dict(amp=True, epochs=2, warmup_epochs=0.5, hybridize=True)
    whole = run_steps(FaceTrainer(make_config(output=str(tmp_path / "full"), **common)), 7)

    part = str(tmp_path / "part")
    first = FaceTrainer(make_config(output=part, max_steps=3, **common))
    first.loss_scaler.update(False)  # a skipped step earlier in the run: scale 2**9
    first.loss_scaler.update(True)
    summary = first.fit()
    assert summary["step"] == 3
    state = load_checkpoint_state(part)
    assert state["amp"]["dtype"] == "bfloat16"
    assert state["amp"]["loss_scaler"] == first.loss_scaler.state_dict()
    resumed = FaceTrainer(make_config(output=part, resume=part, **common))
    assert resumed.loss_scaler.state_dict() == first.loss_scaler.state_dict()
    # the scale differs from the uninterrupted run's, but powers of two are exact
    onp.testing.assert_allclose(run_steps(resumed, 4), whole[3:], rtol=1e-5)


@needs_bf16
def test_amp_checkpoint_is_float32_and_loads_without_amp(make_config, tmp_path, run_steps):
    out = str(tmp_path / "run")
    summary = FaceTrainer(make_config(amp=True, output=out, max_steps=2)).fit()
    folder = summary["checkpoint"]
    for name in ("backbone.params", "head.params"):
        arrays = mx.npx.load(os.path.join(folder, name))
        assert {str(v.dtype) for v in arrays.values()} == {"float32"}, name
    backbone, head, state = load_model(folder, mx.cpu())
    emb = backbone(np.zeros((2, 3, 16, 16)))
    assert emb.dtype == onp.float32 and onp.isfinite(emb.asnumpy()).all()
    # and it resumes without --amp
    resumed = FaceTrainer(make_config(output=str(tmp_path / "again"), resume=folder))
    assert resumed.step == 2 and onp.isfinite(run_steps(resumed, 1)[0])


def test_enable_amx_needs_the_flag(tmp_path, monkeypatch):
    for var in ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "MKLDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx512f avx512_bf16\n")
    assert amp_mod.enable_amx(str(info)) is False
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE_BF16")  # the user's choice wins
    assert amp_mod.enable_amx() is False


@needs("amx", "amx_bf16" in cpu_flags(), "CPU without AMX")
def test_enable_amx_makes_onednn_use_tiles_without_leaking_the_variable(tmp_path):
    """In a fresh process: permission granted, oneDNN's bf16 convolution runs on AMX
    (without the permission it would die with SIGILL), the variable is gone again."""
    import subprocess
    import sys

    script = (
        "import os, mxnet as mx\n"
        "from gluon_face.training.amp import enable_amx\n"
        "assert enable_amx()\n"
        "assert 'DNNL_MAX_CPU_ISA' not in os.environ\n"
        "from mxnet.contrib.amp import amp\n"
        "x = mx.nd.amp_cast(mx.nd.ones((2, 32, 8, 8)), dtype=amp.bfloat16)\n"
        "w = mx.nd.amp_cast(mx.nd.ones((32, 32, 3, 3)), dtype=amp.bfloat16)\n"
        "mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=32, no_bias=True).wait_to_read()\n"
        "print('done')\n")
    env = {k: v for k, v in os.environ.items() if "MAX_CPU_ISA" not in k}
    env.update(DNNL_VERBOSE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
                   os.path.abspath(__file__)))))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert "done" in out.stdout
    assert any("convolution" in line and "amx" in line for line in out.stdout.splitlines())


@needs_bf16
def test_amp_with_the_sharded_head_and_center_loss(make_config, monkeypatch, run_steps):
    """The model-parallel head stays float32; a loss scale reaches the backbone only."""
    _with_scaler(monkeypatch, init_scale=2.0 ** 8)
    cfg = dict(ctx="cpu:0,1", model_parallel=True, center_loss_weight=0.01)
    plain = FaceTrainer(make_config(**cfg))
    scaled = FaceTrainer(make_config(amp=True, **cfg))
    assert scaled.parallel and scaled.loss_scaler is not None
    a, b = run_steps(plain, 3), run_steps(scaled, 3)
    assert all(onp.isfinite(b)) and scaled.loss_scaler.skipped == 0
    # same weights: bfloat16 rounding only, amplified by CosFace's scale s=64
    assert b[0] == pytest.approx(a[0], rel=3e-2)

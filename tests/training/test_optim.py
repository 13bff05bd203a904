"""Learning-rate schedules (gluoncv pieces) against closed forms; AdamW against numpy."""
import math

import mxnet as mx
import numpy as onp
import pytest

from gluon_face.training import AdamW, TrainConfig, build_lr_scheduler


def _lrs(cfg, ipe):
    sched = build_lr_scheduler(cfg, ipe)
    return [sched(t) for t in range(1, cfg.epochs * ipe + 1)]


def test_warmup_then_cosine():
    cfg = TrainConfig(lr=0.4, epochs=5, warmup_epochs=1, warmup_lr=0.0, lr_mode="cosine",
                      target_lr=0.01)
    ipe = 10
    lrs = _lrs(cfg, ipe)
    # linear warm-up 0 -> 0.4 over 10 updates (gluoncv: T / (N - 1) with N = 10)
    assert lrs[0] == pytest.approx(0.4 * 1 / 9)
    assert max(lrs[:10]) == pytest.approx(0.4)
    # cosine over the remaining 40 updates, offset 10
    for t in (10, 25, 49):
        T = min(t - 10, 39)
        expect = 0.01 + (0.4 - 0.01) * (1 + math.cos(math.pi * T / 39)) / 2
        assert lrs[t - 1] == pytest.approx(expect), t
    assert lrs[-1] == pytest.approx(0.01)


def test_step_schedule_uses_absolute_epochs():
    cfg = TrainConfig(lr=0.1, epochs=6, warmup_epochs=1, lr_mode="step", lr_steps=[3, 5],
                      lr_factor=0.1)
    ipe = 4
    lrs = _lrs(cfg, ipe)
    assert lrs[4 * 2 + 2] == pytest.approx(0.1)  # epoch 3 (0-based 2)
    assert lrs[4 * 3 + 1] == pytest.approx(0.01)  # after epoch 3 boundary
    assert lrs[4 * 5 + 1] == pytest.approx(0.001)


def test_poly_without_warmup():
    cfg = TrainConfig(lr=0.2, epochs=2, warmup_epochs=0, lr_mode="poly", lr_power=2)
    lrs = _lrs(cfg, 5)
    N = 9
    for t in range(1, 11):
        T = min(t, N)
        assert lrs[t - 1] == pytest.approx(0.2 * (1 - T / N) ** 2)


def test_adamw_matches_numpy():
    beta1, beta2, eps, wd, lr = 0.9, 0.99, 1e-8, 0.1, 0.01
    rng = onp.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(onp.float32)
    grads = [rng.normal(size=(3, 4)).astype(onp.float32) for _ in range(4)]
    opt = AdamW(learning_rate=lr, beta1=beta1, beta2=beta2, epsilon=eps, wd=wd,
                rescale_grad=0.5)
    weight = mx.nd.array(w0)
    state = opt.create_state(0, weight)
    w, m, v = w0.astype(onp.float64), 0.0, 0.0
    for t, g in enumerate(grads, 1):
        opt.update(0, weight, mx.nd.array(g), state)
        g = 0.5 * g.astype(onp.float64)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        # decoupled: the decay does not pass through the adaptive denominator
        w = w - lr * (m_hat / (onp.sqrt(v_hat) + eps * math.sqrt(1 - beta2 ** t)) + wd * w)
    onp.testing.assert_allclose(weight.asnumpy(), w, rtol=1e-5, atol=1e-6)


def test_adamw_is_registered():
    opt = mx.optimizer.create("adamw", learning_rate=0.1)
    assert isinstance(opt, AdamW)

"""ArcMarginBlock against deliberately naive per-sample numpy code, plus the book's defects."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, np

from gluon_face.heads import MARGIN_PRESETS, ArcMarginBlock, SoftmaxCrossEntropyLoss

E, C = 8, 5


# ---------------------------------------------------------------- naive reference
def naive_target(c, s, m, a, b, easy_margin=False):
    """Target logit from one cosine, written from the docstring's formulas."""
    cc = max(-1.0, min(1.0, c))
    theta = math.acos(cc)
    theta_star = (math.pi - m) / a
    if easy_margin and c <= 0:
        return s * c
    if theta_star < math.pi and theta >= theta_star:
        d = math.pi - theta_star
        return s * (min(cc - d * math.sin(theta_star), -1.0) - b)
    return s * (math.cos(a * theta + m) - b)


def naive_logits(X, W, Y, s, m, a, b, easy_margin=False):
    X = onp.asarray(X, dtype=onp.float64)
    W = onp.asarray(W, dtype=onp.float64)
    out = onp.zeros((X.shape[0], W.shape[0]))
    for i in range(X.shape[0]):
        x = X[i] / math.sqrt(sum(v * v for v in X[i]))
        for j in range(W.shape[0]):
            w = W[j] / math.sqrt(sum(v * v for v in W[j]))
            c = sum(x[k] * w[k] for k in range(len(x)))
            if j == int(Y[i]):
                out[i, j] = naive_target(c, s, m, a, b, easy_margin)
            else:
                out[i, j] = s * c
    return out


def naive_ce(logits, Y, eps=0.0):
    losses = []
    for i, row in enumerate(logits):
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        n = len(row)
        loss = 0.0
        for j, v in enumerate(row):
            q = (1 - eps) * (j == int(Y[i])) + eps / n
            loss -= q * (v - log_z)
        losses.append(loss)
    return onp.array(losses)


def seed_arcmarginproduct(X, W, Y, s, m, easy_margin=False):
    """The ArcMarginProduct seed's formula, re-derived in numpy (ls_eps = 0)."""
    xn = X / onp.linalg.norm(X, axis=1, keepdims=True)
    wn = W / onp.linalg.norm(W, axis=1, keepdims=True)
    cosine = xn @ wn.T
    sine = onp.sqrt(onp.clip(1.0 - cosine ** 2, 0.0, None))
    phi = cosine * math.cos(m) - sine * math.sin(m)
    if easy_margin:
        phi = onp.where(cosine > 0, phi, cosine)
    else:
        phi = onp.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
    one_hot = onp.eye(W.shape[0])[Y.astype(int)]
    return s * (one_hot * phi + (1.0 - one_hot) * cosine)


# ---------------------------------------------------------------- helpers
def make_head(ctx, W, **kw):
    head = ArcMarginBlock(W.shape[1], W.shape[0], **kw)
    head.initialize(ctx=ctx)
    head.fc7_weight.set_data(np.array(W, ctx=ctx))
    return head


def edge_inputs(B=12):
    """theta = 0 / pi exactly, theta ~ 0 / ~ pi, then theta = 0.3, 0.8, 1.6, 2.5, then random."""
    rng = onp.random.RandomState(1)
    W = rng.normal(size=(C, E)).astype(onp.float32)
    Y = rng.randint(0, C, size=B).astype(onp.float32)
    X = rng.normal(size=(B, E)).astype(onp.float32)
    y = Y.astype(int)
    X[0] = 2.5 * W[y[0]]                                         # theta = 0
    X[1] = -0.7 * W[y[1]]                                        # theta = pi
    X[2] = W[y[2]] + 1e-3 * rng.normal(size=E)                   # theta ~ 0
    X[3] = -W[y[3]] + 1e-3 * rng.normal(size=E)                  # theta ~ pi
    for row, theta in zip(range(4, 8), (0.3, 0.8, 1.6, 2.5)):
        u = W[y[row]] / onp.linalg.norm(W[y[row]])
        v = rng.normal(size=E)
        v -= v.dot(u) * u
        X[row] = 1.7 * (math.cos(theta) * u + math.sin(theta) * v / onp.linalg.norm(v))
    return X, W, Y, 4                                            # first 4 rows are edges


def basis_inputs():
    """Embeddings exactly on / opposite to unit class centres: cos is exactly +-1 in float32."""
    W = onp.eye(C, E, dtype=onp.float32)
    X = onp.zeros((4, E), dtype=onp.float32)
    X[0, 0], X[1, 1], X[2, 2], X[3, 3] = 3.0, -2.0, 1.0, -1.0
    Y = onp.array([0, 1, 2, 3], dtype=onp.float32)
    return X, W, Y


def forward_numpy(head, X, Y, ctx):
    return head(np.array(X, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()


ALL_VARIANTS = [(name, dict(p)) for name, p in sorted(MARGIN_PRESETS.items())] + [
    ("arcface-easy", dict(MARGIN_PRESETS["arcface"], easy_margin=True)),
    ("cosface-easy", dict(MARGIN_PRESETS["cosface"], easy_margin=True)),
    ("a2-m0.3-b0.1", dict(margin_s=32.0, margin_a=2.0, margin_m=0.3, margin_b=0.1)),
    ("a0.8-m0.2", dict(margin_s=16.0, margin_a=0.8, margin_m=0.2, margin_b=0.0)),
    ("a0.5 (no fallback)", dict(margin_s=16.0, margin_a=0.5, margin_m=0.1, margin_b=0.0)),
    ("a1-m2.6", dict(margin_s=8.0, margin_a=1.0, margin_m=2.6, margin_b=0.0)),
]
VARIANT_IDS = [v[0] for v in ALL_VARIANTS]


def naive_kw(kw):
    return dict(s=kw["margin_s"], m=kw["margin_m"], a=kw["margin_a"], b=kw["margin_b"],
                easy_margin=kw.get("easy_margin", False))


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("name,kw", ALL_VARIANTS, ids=VARIANT_IDS)
def test_logits_and_loss_match_naive(ctx, name, kw):
    X, W, Y, n_edge = edge_inputs()
    head = make_head(ctx, W, **kw)
    got = forward_numpy(head, X, Y, ctx)
    want = naive_logits(X, W, Y, **naive_kw(kw))
    # Generic rows to float32 precision; at theta ~ 0 / pi arccos is ill-conditioned
    # (float32 cos is 1 +- 6e-8, i.e. theta within ~5e-4 rad).
    onp.testing.assert_allclose(got[n_edge:], want[n_edge:], rtol=1e-4, atol=1e-3)
    onp.testing.assert_allclose(got[:n_edge], want[:n_edge], atol=kw["margin_s"] * 1e-3)
    loss = SoftmaxCrossEntropyLoss()(np.array(got, ctx=ctx), np.array(Y, ctx=ctx)).asnumpy()
    onp.testing.assert_allclose(loss, naive_ce(want, Y), rtol=1e-3, atol=kw["margin_s"] * 1e-3)


@pytest.mark.parametrize("name,kw", ALL_VARIANTS, ids=VARIANT_IDS)
def test_exact_plus_minus_one(ctx, name, kw):
    X, W, Y = basis_inputs()
    head = make_head(ctx, W, **kw)
    got = forward_numpy(head, X, Y, ctx)
    want = naive_logits(X, W, Y, **naive_kw(kw))
    assert onp.isfinite(got).all()
    onp.testing.assert_allclose(got, want, atol=kw["margin_s"] * 1e-3)


@pytest.mark.parametrize("name,kw", ALL_VARIANTS, ids=VARIANT_IDS)
def test_gradients_finite_at_edges(ctx, name, kw):
    """The book's head gives NaN gradients at |cos| = 1; clamping must prevent it."""
    loss_fn = SoftmaxCrossEntropyLoss()
    for X, W, Y in (edge_inputs()[:3], basis_inputs()):
        head = make_head(ctx, W, **kw)
        x = np.array(X, ctx=ctx)
        x.attach_grad()
        with autograd.record():
            loss = loss_fn(head(x, np.array(Y, ctx=ctx)), np.array(Y, ctx=ctx))
        loss.backward()
        assert onp.isfinite(loss.asnumpy()).all()
        assert onp.isfinite(x.grad.asnumpy()).all()
        assert onp.isfinite(head.fc7_weight.grad(ctx).asnumpy()).all()


@pytest.mark.parametrize("name", ["arcface", "sphereface", "combined", "cosface", "cosine"])
def test_gradients_match_finite_differences(ctx, name):
    kw = dict(MARGIN_PRESETS[name], margin_s=16.0)
    rng = onp.random.RandomState(3)
    X = rng.normal(size=(4, E))
    W = rng.normal(size=(C, E))
    Y = onp.array([0, 1, 2, 4], dtype=onp.float32)
    head = make_head(ctx, W.astype(onp.float32), **kw)
    x = np.array(X.astype(onp.float32), ctx=ctx)
    x.attach_grad()
    with autograd.record():
        loss = SoftmaxCrossEntropyLoss()(head(x, np.array(Y, ctx=ctx)), np.array(Y, ctx=ctx))
    loss.backward()

    def total(Xv, Wv):
        return naive_ce(naive_logits(Xv, Wv, Y, **naive_kw(kw)), Y).sum()

    h = 1e-5
    for arr, got in ((X, x.grad.asnumpy()), (W, head.fc7_weight.grad(ctx).asnumpy())):
        num = onp.zeros_like(arr)
        for idx in onp.ndindex(*arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            up = total(X, W)
            arr[idx] = old - h
            down = total(X, W)
            arr[idx] = old
            num[idx] = (up - down) / (2 * h)
        onp.testing.assert_allclose(got, num, rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------- monotonicity
def target_on_grid(ctx, kw, n=3001):
    """Target logit for theta on a fine grid over [0, pi] (cos exactly +-1 at the ends)."""
    theta = onp.linspace(0.0, math.pi, n)
    X = onp.zeros((n, E), dtype=onp.float32)
    X[:, 0], X[:, 1] = onp.cos(theta), onp.sin(theta)
    W = onp.eye(C, E, dtype=onp.float32)
    head = make_head(ctx, W, **kw)
    return theta, forward_numpy(head, X, onp.zeros(n, dtype=onp.float32), ctx)[:, 0]


@pytest.mark.parametrize("name,kw", [v for v in ALL_VARIANTS if "easy" not in v[0]],
                         ids=[i for i in VARIANT_IDS if "easy" not in i])
def test_target_logit_never_increases(ctx, name, kw):
    theta, z = target_on_grid(ctx, kw)
    assert onp.isfinite(z).all()
    assert onp.diff(z).max() <= kw["margin_s"] * 1e-5, theta[onp.argmax(onp.diff(z))]
    assert z[-1] < z[0]


def test_book_formula_turns_back_up(ctx):
    """Without the fallback cos(theta + m) rises past pi - m: the defect the fallback fixes."""
    theta = onp.linspace(0.0, math.pi, 3001)
    raw = onp.cos(theta + 0.5)
    assert onp.diff(raw).max() > 1e-4
    _, z = target_on_grid(ctx, MARGIN_PRESETS["arcface"])
    assert onp.diff(z).max() <= 64 * 1e-5


def test_fallback_constants_match_insightface():
    m = 0.5
    margin = ArcMarginBlock(8, 5, margin_m=m).margin
    assert margin._th == math.cos(math.pi - m)
    assert margin._mm == math.sin(math.pi - m) * m
    # and the generalisation reduces to them at a = 1
    theta_star = (math.pi - m) / 1.0
    assert math.isclose(math.sin(theta_star) * (math.pi - theta_star), margin._mm, rel_tol=1e-12)


def test_easy_margin(ctx):
    kw = dict(MARGIN_PRESETS["arcface"], easy_margin=True)
    theta, z = target_on_grid(ctx, kw)
    s, m = kw["margin_s"], kw["margin_m"]
    pos = onp.cos(theta) > 1e-6
    neg = onp.cos(theta) < -1e-6
    onp.testing.assert_allclose(z[pos], s * onp.cos(theta[pos] + m), atol=2e-3)
    onp.testing.assert_allclose(z[neg], s * onp.cos(theta[neg]), atol=2e-3)
    # deliberately not monotone: the logit jumps up where cos theta crosses 0
    assert onp.diff(z).max() > 0.5 * s * math.sin(m)
    away = onp.abs(theta - math.pi / 2) > 1e-3
    assert onp.diff(z)[away[1:] & away[:-1]].max() <= s * 1e-5


@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_matches_seed_arcmarginproduct(ctx, easy_margin):
    X, W, Y, _ = edge_inputs(16)
    s, m = 30.0, 0.5
    head = make_head(ctx, W, margin_s=s, margin_m=m, easy_margin=easy_margin)
    got = forward_numpy(head, X, Y, ctx)
    want = seed_arcmarginproduct(X.astype(onp.float64), W.astype(onp.float64), Y, s, m,
                                 easy_margin)
    onp.testing.assert_allclose(got[4:], want[4:], rtol=1e-4, atol=1e-3)
    onp.testing.assert_allclose(got[:4], want[:4], atol=s * 1e-3)


def test_cosface_is_scaled_cosine_minus_b(ctx):
    X, W, Y, _ = edge_inputs()
    cos = forward_numpy(make_head(ctx, W, **dict(MARGIN_PRESETS["cosine"], margin_s=1.0)),
                        X, Y, ctx)
    got = forward_numpy(make_head(ctx, W, **MARGIN_PRESETS["cosface"]), X, Y, ctx)
    one_hot = onp.eye(C)[Y.astype(int)]
    onp.testing.assert_allclose(got, 64.0 * (cos - 0.35 * one_hot), rtol=1e-6, atol=1e-5)


def test_cosine_and_normface_presets_are_scaled_cosine(ctx):
    X, W, Y, _ = edge_inputs()
    xn = X / onp.linalg.norm(X, axis=1, keepdims=True)
    wn = W / onp.linalg.norm(W, axis=1, keepdims=True)
    for name in ("cosine", "normface"):
        got = forward_numpy(make_head(ctx, W, **MARGIN_PRESETS[name]), X, Y, ctx)
        onp.testing.assert_allclose(got, 64.0 * xn @ wn.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name,kw", ALL_VARIANTS, ids=VARIANT_IDS)
def test_hybridized_equals_imperative(ctx, name, kw):
    X, W, Y, _ = edge_inputs()
    head = make_head(ctx, W, **kw)
    a = forward_numpy(head, X, Y, ctx)
    head.hybridize()
    b = forward_numpy(head, X, Y, ctx)
    onp.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- API, presets, defects
def test_presets():
    assert set(MARGIN_PRESETS) == {"cosine", "normface", "sphereface", "cosface", "arcface",
                                   "combined"}
    assert all(p["margin_s"] == 64.0 for p in MARGIN_PRESETS.values())
    head = ArcMarginBlock.from_preset("sphereface", 8, 5)
    assert (head.margin_a, head.margin_m, head.margin_b) == (1.35, 0.0, 0.0)
    head = ArcMarginBlock.from_preset("combined", 8, 5, margin_s=30.0)
    assert (head.margin_s, head.margin_a, head.margin_m, head.margin_b) == (30.0, 1.0, 0.3, 0.2)
    assert ArcMarginBlock.from_preset("cosface", 8, 5).margin_b == 0.35
    assert ArcMarginBlock.from_preset("arcface", 8, 5).margin_m == 0.5
    with pytest.raises(ValueError, match="valid presets: arcface"):
        ArcMarginBlock.from_preset("arcfce", 8, 5)


@pytest.mark.parametrize("kw,word", [
    (dict(margin_a=0.0), "margin_a"), (dict(margin_a=-1.0), "margin_a"),
    (dict(margin_m=-0.1), "margin_m"), (dict(margin_m=math.pi), "margin_m"),
    (dict(margin_s=0.0), "margin_s"), (dict(num_classes=0), "num_classes"),
    (dict(emb_size=0), "emb_size"), (dict(margin_b=float("nan")), "margin_b"),
    (dict(easy_margin=1), "easy_margin"), (dict(num_classes=2.5), "num_classes"),
])
def test_bad_arguments(kw, word):
    args = dict(emb_size=8, num_classes=5)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        ArcMarginBlock(**args)


def test_book_call_no_print_no_self_init(capsys):
    head = ArcMarginBlock(emb_size=512, num_classes=100)
    assert capsys.readouterr().out == ""
    with pytest.raises(RuntimeError):
        head.fc7_weight.data()
    head.initialize()
    out = head(np.random.uniform(size=(1, 512)), np.ones((1,)))
    assert out.shape == (1, 100)
    assert onp.isfinite(out.asnumpy()).all()
    assert capsys.readouterr().out == ""
    w = head.fc7_weight.data().asnumpy()
    assert abs(w.std() - 0.01) < 0.001  # the book's Normal(0.01), from a bare initialize()


def test_no_nan_where_book_head_fails(ctx):
    """Norms ~30 and parallel vectors: the inputs that gave NaN logits in the book's head."""
    W = onp.random.normal(size=(C, E)).astype(onp.float32)
    W *= 30.0 / onp.linalg.norm(W, axis=1, keepdims=True)
    X = W[[0, 1, 2]] * 1.0
    Y = onp.array([0, 1, 2], dtype=onp.float32)
    head = make_head(ctx, W)
    x = np.array(X, ctx=ctx)
    x.attach_grad()
    with autograd.record():
        loss = SoftmaxCrossEntropyLoss()(head(x, np.array(Y, ctx=ctx)), np.array(Y, ctx=ctx))
    loss.backward()
    assert onp.isfinite(loss.asnumpy()).all() and onp.isfinite(x.grad.asnumpy()).all()


def test_checkpoint_key_is_fc7_weight(ctx, tmp_path):
    W = onp.random.normal(size=(C, E)).astype(onp.float32)
    head = make_head(ctx, W)
    path = str(tmp_path / "head.params")
    head.save_parameters(path)
    assert list(mx.nd.load(path)) == ["fc7_weight"]
    other = ArcMarginBlock.from_preset("cosface", E, C)
    other.load_parameters(path, ctx=ctx)
    onp.testing.assert_array_equal(other.fc7_weight.data(ctx).asnumpy(), W)

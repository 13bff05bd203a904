"""Parameter and MAC counts, checked against closed-form arithmetic and a real forward pass."""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import np, npx
from mxnet.gluon import nn

from gluon_face.model_zoo import count_declared, get_model, summarize
from gluon_face.model_zoo.summary import ModelSummary

npx.set_np()

# The insightface IR-ResNet units per stage, written out here rather than read from the
# package, so that the formula below is independent of the model code.
UNITS = {"faceresnet18": [2, 2, 2, 2], "faceresnet34": [3, 4, 6, 3],
         "faceresnet50": [3, 4, 14, 3], "faceresnet100": [3, 13, 30, 3]}
STAGE_CHANNELS = [64, 128, 256, 512]


def _half(side):
    # a stride-2 convolution with "same" padding (3x3 pad 1, 7x7 pad 3, 1x1 pad 0)
    return -(-side // 2)


def closed_form(units, emb=512, height=112, width=112, prelu=True, stem=3):
    """(params, BN running statistics, MACs) of an IR-ResNet with the "E" output.

    Stem: conv3x3 stride 1 (``stem=3``) or conv7x7 stride 2 (``stem=7``), BN, PReLU.
    Unit: BN(c_in) conv3x3(c_in->c) BN(c) PReLU(c) conv3x3(c->c, stride) BN(c);
    the first unit of each stage strides by 2 and has a conv1x1 + BN shortcut.
    """
    a = 1 if prelu else 0
    h, w = (height, width) if stem == 3 else (_half(height), _half(width))
    params = 3 * stem * stem * 64 + 2 * 64 + a * 64
    states = 2 * 64
    macs = h * w * 64 * 3 * stem * stem
    c_in = 64
    for n, c in zip(units, STAGE_CHANNELS):
        h2, w2 = _half(h), _half(w)
        # first unit, then n - 1 identity units of 18 c^2 + 7 c (or 6 c) parameters
        params += 2 * c_in + 9 * c_in * c + 2 * c + a * c + 9 * c * c + 2 * c + c_in * c + 2 * c
        params += (n - 1) * (18 * c * c + (6 + a) * c)
        states += 2 * c_in + 6 * c + (n - 1) * 6 * c
        macs += h * w * 9 * c_in * c + h2 * w2 * (9 * c * c + c_in * c)
        macs += (n - 1) * 2 * h2 * w2 * 9 * c * c
        c_in, h, w = c, h2, w2
    flat = 512 * h * w
    params += 2 * 512 + flat * emb + emb + 2 * emb
    states += 2 * 512 + 2 * emb
    macs += flat * emb
    return params, states, macs


@pytest.mark.parametrize("name", sorted(UNITS))
def test_counts_match_closed_form(name):
    s = summarize(get_model(name))
    assert (s.params, s.states, s.macs) == closed_form(UNITS[name])
    assert s.output_shape == (512,)


@pytest.mark.parametrize("kw,size", [({"image_size": 96, "emb_size": 128}, (96, 96)),
                                     ({"image_size": (128, 96), "act_type": "relu"}, (128, 96))])
def test_counts_match_closed_form_other_settings(kw, size):
    s = summarize(get_model("faceresnet34", **kw))
    expected = closed_form(UNITS["faceresnet34"], emb=kw.get("emb_size", 512),
                           height=size[0], width=size[1], prelu=kw.get("act_type") != "relu")
    assert (s.params, s.states, s.macs) == expected


@pytest.mark.parametrize("name", sorted(UNITS))
@pytest.mark.parametrize("size", [(112, 112), (128, 96)])
def test_counts_match_closed_form_with_the_7x7_stem(name, size):
    s = summarize(get_model(name, stem="7x7", image_size=size))
    assert (s.params, s.states, s.macs) == closed_form(UNITS[name], height=size[0],
                                                       width=size[1], stem=7)


def test_groups_of_faceresnet_with_the_7x7_stem():
    groups = summarize(get_model("faceresnet50", stem="7x7")).groups()
    assert [g.out_shape for g in groups] == [(64, 56, 56), (64, 28, 28), (128, 14, 14),
                                             (256, 7, 7), (512, 4, 4), (512,)]
    assert groups[0].params == 3 * 49 * 64 + 3 * 64
    assert groups[0].macs == 56 * 56 * 64 * 3 * 49
    assert groups[-1].params == 512 * 16 * 512 + 512 + 2 * 512 + 2 * 512


def test_insightface_published_figures():
    r50 = summarize(get_model("faceresnet50"))
    assert round(r50.params / 1e6, 2) == 43.59  # insightface r50: 43.59 M
    assert round(r50.macs / 1e9, 2) == 6.31  # 6.3 G(MAC)
    r100 = summarize(get_model("faceresnet100"))
    assert round(r100.params / 1e6, 1) == 65.2  # insightface r100: 65.2 M
    assert round(r100.macs / 1e9, 1) == 12.1  # 12.1 G(MAC)


def test_groups_of_faceresnet():
    s = summarize(get_model("faceresnet50"))
    groups = s.groups()
    assert [g.name for g in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "output"]
    assert [g.out_shape for g in groups] == [(64, 112, 112), (64, 56, 56), (128, 28, 28),
                                             (256, 14, 14), (512, 7, 7), (512,)]
    assert sum(g.params for g in groups) == s.params
    assert sum(g.macs for g in groups) == s.macs
    assert groups[0].params == 27 * 64 + 3 * 64
    assert groups[-1].params == 512 * 49 * 512 + 512 + 2 * 512 + 2 * 512


def _paths(block, prefix=""):
    out = {}
    for name, child in block._children.items():
        path = f"{prefix}.{name}" if prefix else name
        out[id(child)] = path
        out.update(_paths(child, path))
    return out


@pytest.mark.parametrize("stem", ["3x3", "7x7"])
def test_walk_agrees_with_a_real_forward_pass(ctx, stem):
    """Every layer's output shape and parameter count, compared with MXNet's own."""
    net = get_model("faceresnet18", emb_size=8, image_size=(48, 32), use_dropout=True,
                    stem=stem)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    paths = _paths(net)
    seen = {}

    def hook(block, inputs, output):
        seen[paths[id(block)]] = output.shape[1:]

    summary = summarize(net)
    rows = {r.path: r for r in summary.layers}
    blocks = {p: b for b in _all_blocks(net) for p in [paths.get(id(b))] if p in rows}
    assert set(blocks) == set(rows)
    for block in blocks.values():
        block.register_forward_hook(hook)
    out = net(np.zeros((1, 3, 48, 32), ctx=ctx))
    assert out.shape[1:] == summary.output_shape == (8,)
    assert set(seen) == set(rows)
    for path, row in rows.items():
        assert seen[path] == row.out_shape, path
        sizes = {k: p.data().size for k, p in blocks[path]._reg_params.items()}
        states = sum(v for k, v in sizes.items() if k.startswith("running_"))
        assert (row.params, row.states) == (sum(sizes.values()) - states, states), path
    total = sum(p.data().size for p in net.collect_params().values())
    assert summary.params + summary.states == total


def _all_blocks(block):
    yield block
    for child in block._children.values():
        yield from _all_blocks(child)


def test_conv_and_dense_macs_by_hand():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, kernel_size=3, strides=2, padding=1, in_channels=4, groups=2),
            nn.Activation("relu"), nn.Flatten(), nn.Dense(7, in_units=6 * 5 * 3))
    s = summarize(net, input_shape=(4, 9, 6))
    conv, act, flat, dense = s.layers
    # out (9 + 2 - 3) // 2 + 1 = 5 by (6 + 2 - 3) // 2 + 1 = 3; each output sums
    # 4 / 2 input channels x 3 x 3
    assert conv.out_shape == (6, 5, 3) and conv.macs == 5 * 3 * 6 * 2 * 9
    assert conv.params == 6 * 2 * 9 + 6
    assert act.macs == act.params == 0 and flat.out_shape == (90,)
    assert dense.params == 7 * 90 + 7 and dense.macs == 7 * 90
    assert [r.path for r in s.layers] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="too small"):
        summarize(net, input_shape=(4, 0, 6))


def test_conv_dilation_and_dense_without_flatten():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(5, kernel_size=(1, 3), dilation=(1, 2), in_channels=3, use_bias=False),
            nn.Dense(4, flatten=False, in_units=6, use_bias=False))
    s = summarize(net, input_shape=(3, 2, 10))
    conv, dense = s.layers
    assert conv.out_shape == (5, 2, 6)  # 10 - 2 * (3 - 1)
    assert conv.macs == 2 * 6 * 5 * 3 * 3 and conv.params == 5 * 3 * 3
    assert dense.out_shape == (5, 2, 4) and dense.macs == 5 * 2 * 6 * 4
    assert s.params == 45 + 24


def test_bn_macs_option():
    net = get_model("faceresnet18", emb_size=8, image_size=32)
    plain, with_bn = summarize(net), summarize(net, bn_macs=True)
    bn_elements = sum(onp.prod(r.in_shape) for r in plain.layers if r.kind == "BatchNorm")
    assert with_bn.macs - plain.macs == bn_elements > 0
    assert with_bn.params == plain.params


def test_wrong_input_size_is_reported():
    net = get_model("faceresnet18", image_size=112)
    with pytest.raises(ValueError, match="output.1: weight .*input size"):
        summarize(net, input_shape=(3, 96, 96))
    with pytest.raises(ValueError, match="features.0: weight"):
        summarize(net, input_shape=(1, 112, 112))


def test_unknown_block_type_is_reported():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, in_channels=3), nn.MaxPool2D())
    with pytest.raises(TypeError, match="MaxPool2D at '1'"):
        summarize(net, input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        summarize(net)


def test_count_declared_does_not_allocate():
    from gluon_face.heads import get_head

    head = get_head("arcface", 512, 85742)
    assert count_declared(head) == 512 * 85742
    with pytest.raises(RuntimeError):
        next(iter(head.collect_params().values())).data()  # never initialised
    with pytest.raises(ValueError, match="no complete shape"):
        count_declared(nn.Dense(4))


def test_summary_of_generic_block_groups_by_child():
    net = nn.HybridSequential()
    net.add(nn.Dense(3, in_units=4), nn.Dense(2, in_units=3))
    s = summarize(net, input_shape=(4,))
    assert isinstance(s, ModelSummary)
    assert [(g.name, g.params, g.macs) for g in s.groups()] == [("0", 15, 12), ("1", 8, 6)]


def test_register_walker_for_a_new_block():
    from gluon_face.model_zoo import register_walker

    class Twice(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.inner = nn.Dense(3, in_units=4)

        def hybrid_forward(self, F, x):
            return self.inner(self.inner(x)[:, :1].repeat(4, axis=1))

    with pytest.raises(TypeError, match="Twice"):
        summarize(Twice(), input_shape=(4,))

    @register_walker(Twice)
    def walk(block, shape, path, ctx):
        ctx.walk(block.inner, shape, path + ".inner")
        return ctx.walk(block.inner, shape, path + ".inner")

    s = summarize(Twice(), input_shape=(4,))
    assert s.macs == 2 * 12 and s.output_shape == (3,)
